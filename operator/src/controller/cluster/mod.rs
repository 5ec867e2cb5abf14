//! Reconciles a `ChatCluster` into the objects `resources` renders, and its status, in six
//! phases. Each phase is a function of the [`Target`] (and what earlier phases decided)
//! returning a typed result; the problems they find become the `Degraded` condition.
//!
//! ```text
//!  1 shard_map    ChatShards ───────────► Shards { in_force, problem }   (invalid: Degraded,
//!                                                                  the last good map stays)
//!  2 workers      all ChatClusters ─────► WorkerIds { range, problem }   (none free: Degraded)
//!  3 secrets      referenced Secrets ───► ReferencedSecrets { urls, missing }
//!                 generated Secrets ────► GeneratedSecrets { jwt_secret }
//!  4 publication  <name>-shards Secret ─► Publication { migration_hash, migrated }
//!                       │ no worker-ID range: straight to the status
//!                       ▼
//!  5 workloads    config, Services, RBAC, migration Job, StatefulSet + persisters (once
//!                 migrated), PDB, edge ──► Workloads { statefulset, persister, shrinking }
//!  6 ring         chat-node pods ───────► Ring { ring (epoch), selector }
//!                       ▼
//!    finish       status: conditions, summaries; an Event when Degraded changes ──► Action
//! ```
//!
//! Every phase reads fresh from the API server (no cache), so a reconcile is a fixed
//! sequence of requests; `tests` replays that sequence against a scripted API server.

pub mod finish;
pub mod publication;
pub mod ring;
pub mod secrets;
pub mod shard_map;
pub mod workers;
pub mod workloads;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use kube::runtime::controller::Action;
use parley_crd::resources::ChatCluster;

use super::Context;
use super::target::Target;
use crate::error::{Error, Result};
use crate::resources::Decided;
use finish::Outcome;

const KIND: &str = "ChatCluster";

/// Reconciles one ChatCluster (kube-runtime's Controller calls it); a success resets its
/// back-off.
pub async fn reconcile(cluster: Arc<ChatCluster>, ctx: Arc<Context>) -> Result<Action> {
    let key = super::key(&*cluster);
    let action = Box::pin(reconcile_cluster(&cluster, &ctx)).await?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

async fn reconcile_cluster(cluster: &ChatCluster, ctx: &Context) -> Result<Action> {
    ctx.metrics.reconciled(KIND);
    let t = Target::new(&ctx.client, cluster)?;
    let previous = cluster.status.clone().unwrap_or_default();

    let shards = shard_map::read(&t, &previous.shards).await?;
    let workers = workers::allocate_range(&t, &ctx.worker_ids, previous.worker_id_range).await?;
    let found = secrets::read_referenced(&t, &shards.shards).await?;
    let generated = secrets::ensure_generated(&t).await?;
    let publication = publication::publish(&t, &shards.in_force, &found).await?;
    let mut problems: Vec<_> = [shards.problem, workers.problem, found.problem()]
        .into_iter()
        .flatten()
        .collect();

    let Some(range) = workers.range else {
        let outcome = Outcome {
            problems,
            status: previous,
            requeue: None,
            shards: shards.in_force,
            rollout: Default::default(),
        };
        return finish::finish(&t, ctx, outcome).await;
    };
    let decided = Decided {
        workers: range,
        shards: shards.in_force.clone(),
        jwt_secret: generated.jwt_secret,
    };
    let inputs = workloads::Inputs {
        decided: &decided,
        publication: &publication,
        previous_ring: previous.ring.as_ref(),
    };
    let workloads = Box::pin(workloads::apply(&t, inputs)).await?;
    problems.extend(workloads.problem.clone());
    let ring = ring::observe(&t, range, previous.ring.as_ref()).await?;

    let rollout = workloads.rollout(&t, publication.migrated, &shards.in_force);
    let mut status = previous;
    status.worker_id_range = Some(range);
    status.ring = Some(ring.ring);
    status.replicas = workloads.replicas();
    status.selector = Some(ring.selector);
    let outcome = Outcome {
        problems,
        status,
        requeue: Some(workloads.requeue()),
        shards: shards.in_force,
        rollout,
    };
    finish::finish(&t, ctx, outcome).await
}

/// On failure: count it and try again with back-off.
// The signature kube-runtime's Controller calls.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(cluster: Arc<ChatCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!("reconciling a ChatCluster failed: {error}");
    ctx.metrics.failed(KIND, error.metric_label());
    let key = super::key(&*cluster);
    Action::requeue(ctx.backoff.failed(&key))
}
