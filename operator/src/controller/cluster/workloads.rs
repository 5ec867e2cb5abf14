//! Phase 5, workloads: the shared settings, Services and RBAC; the migration Job; then the
//! chat-node StatefulSet and the persisters (only once the migration succeeded); the
//! disruption budget and the edge.
//!
//! Scaling down, the StatefulSet keeps its pods until the ring in the status no longer lists
//! those that will go; the reconcile then comes back quickly.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use parley_crd::resources::{RingStatus, ShardStatus};

use super::publication::{Publication, hash};
use crate::controller::target::Target;
use crate::error::Result;
use crate::resources::{self as r, Decided, Edge, MANAGER};
use crate::status::{Problem, Reason, Rollout, job_failure, statefulset_replicas};

/// What phase 5 needs besides the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The worker IDs, the shard map in force and the JWT Secret.
    pub decided: &'a Decided,
    /// Which migration Job, and whether it succeeded.
    pub publication: &'a Publication,
    /// The ring in the status, which a scale-down waits on.
    pub previous_ring: Option<&'a RingStatus>,
}

/// What phase 5 left running.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workloads {
    /// The chat-node StatefulSet as applied, or as found while the databases are migrated.
    pub statefulset: StatefulSet,
    /// The persisters' Deployment, likewise.
    pub persister: Deployment,
    /// Whether the StatefulSet waits to shrink until members leave the ring.
    pub shrinking: bool,
    /// [`Reason::MigrationFailed`] when the migration Job failed for good.
    pub problem: Option<Problem>,
}

impl Workloads {
    /// When to look again: soon while shrinking, else in a minute.
    pub fn requeue(&self) -> Duration {
        if self.shrinking {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(60)
        }
    }

    /// What the conditions are made from.
    pub fn rollout(&self, t: &Target<'_>, migrated: bool, shards: &[ShardStatus]) -> Rollout {
        let desired = t.cluster.spec.replicas;
        let sts = self.statefulset.status.clone().unwrap_or_default();
        let persisters = self.persister.status.clone().unwrap_or_default();
        Rollout {
            desired,
            ready: sts.ready_replicas.unwrap_or(0).min(desired),
            updated: sts.updated_replicas.unwrap_or(0).min(desired),
            persisters_desired: t.cluster.spec.persister.replicas,
            persisters_ready: persisters.ready_replicas.unwrap_or(0),
            migrated,
            shards: shards.len() as i32,
            shards_ready: shards.iter().filter(|s| s.ready).count() as i32,
        }
    }

    /// The StatefulSet's `status.replicas` (0 before it has a status), for the scale
    /// subresource.
    pub fn replicas(&self) -> i32 {
        self.statefulset.status.as_ref().map_or(0, |s| s.replicas)
    }
}

/// Phase 5: applies everything, in order.
pub async fn apply(t: &Target<'_>, inputs: Inputs<'_>) -> Result<Workloads> {
    let config_hash = apply_shared(t).await?;
    let problem = apply_migration(t, inputs).await?;
    let mut workloads = apply_nodes(t, inputs, &config_hash).await?;
    workloads.problem = problem;
    apply_edge(t).await?;
    Ok(workloads)
}

/// The ConfigMap (its hash, which the pods carry, is returned), the Services and the RBAC.
async fn apply_shared(t: &Target<'_>) -> Result<String> {
    let config = r::config(t.cluster);
    let config_hash = hash(&[&serde_json::to_string(&config.data)?]);
    t.apply(&config).await?;
    for svc in r::services(t.cluster) {
        t.apply(&svc).await?;
    }
    let (sa, role, binding) = r::rbac(t.cluster);
    t.apply(&sa).await?;
    t.apply(&role).await?;
    t.apply(&binding).await?;
    Ok(config_hash)
}

/// The migration Job of the newest map; a problem when it failed for good.
async fn apply_migration(t: &Target<'_>, inputs: Inputs<'_>) -> Result<Option<Problem>> {
    let hash = &inputs.publication.migration_hash;
    let job: Job = t
        .apply(&r::migration(t.cluster, inputs.decided, hash))
        .await?;
    let name = t.names.migration(hash);
    Ok(job_failure(&job).map(|failure| Problem {
        reason: Reason::MigrationFailed,
        message: format!(
            "the migration Job {name} failed ({failure}); see kubectl logs job/{name}"
        ),
    }))
}

/// The StatefulSet and the persisters: applied once the migration succeeded, else read
/// (left as they are, or not yet created). `migrated` stays what it was when the map was
/// published: the map in force and the workloads move together.
async fn apply_nodes(t: &Target<'_>, inputs: Inputs<'_>, config_hash: &str) -> Result<Workloads> {
    let current = t.get::<StatefulSet>(&t.names.node()).await?;
    let current_replicas = current
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.replicas)
        .unwrap_or(0);
    let desired = t.cluster.spec.replicas;
    let ring_limit = inputs.decided.workers.base + desired;
    let (replicas, shrinking) =
        statefulset_replicas(current_replicas, desired, ring_limit, inputs.previous_ring);
    let (statefulset, persister) = if inputs.publication.migrated {
        let mut sts = r::statefulset(t.cluster, inputs.decided, config_hash);
        if let Some(spec) = sts.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        let persister = r::persister(t.cluster, inputs.decided, config_hash);
        (t.apply(&sts).await?, t.apply(&persister).await?)
    } else {
        let persister = t.get::<Deployment>(&t.names.persister()).await?;
        (current.unwrap_or_default(), persister.unwrap_or_default())
    };
    Ok(Workloads {
        statefulset,
        persister,
        shrinking,
        problem: None,
    })
}

/// The disruption budget, and the Ingress or HTTPRoute the spec asks for.
async fn apply_edge(t: &Target<'_>) -> Result<()> {
    t.apply(&r::pdb(t.cluster)).await?;
    match r::edge(t.cluster) {
        Some(Edge::Ingress(ingress)) => {
            t.apply(&ingress).await?;
        }
        Some(Edge::HttpRoute(route)) => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(t.client.clone(), &t.namespace, &r::http_route_resource());
            api.patch(
                &t.names.edge(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&route),
            )
            .await?;
        }
        None => {}
    }
    Ok(())
}
