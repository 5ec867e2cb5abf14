//! Reconciles a `ChatCluster` into the objects `resources` builds, and its status.
//!
//! ```text
//!  ChatShards ─► shard map ─┐ (invalid: Degraded, the last good map stays in force)
//!  all ChatClusters ─► worker-ID range ─┤ (over 1024: Degraded)
//!  Secrets referenced ─► present? ──────┤ (missing: Degraded, naming them)
//!                                       ▼
//!   apply: config, Services, RBAC, generated Secrets, StatefulSet, persisters, PDB,
//!          migration Job, edge  ──►  observe pods ──► ring, conditions, status
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use parley_crd::resources::{ChatCluster, ChatClusterStatus, ChatShard, ShardStatus};
use parley_crd::workers::allocate;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, now, publish_event};
use crate::error::{Error, Result};
use crate::resources::{self as r, Decided, Edge, MANAGER};
use crate::status::{
    Problem, Reason, RingScope, Rollout, Stamp, cluster_conditions, degraded_event, job_failure,
    job_succeeded, next_ring, ring_members, shard_map, statefulset_replicas,
};

const KIND: &str = "ChatCluster";

async fn apply<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().ok_or(Error::Missing("name"))?;
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // 32 bytes from the OS, hex-encoded.
    getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read as _;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(buf);
    }
}

/// Creates `name` with one random `key` if it does not exist (never overwritten).
async fn ensure_generated_secret(
    cluster: &ChatCluster,
    client: &kube::Client,
    name: &str,
    key: &str,
) -> Result<()> {
    let ns = r::namespace(cluster);
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let secret = Secret {
        metadata: r::meta(cluster, name.into(), r::Component::Secret),
        string_data: Some(BTreeMap::from([(key.into(), random_secret())])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A Secret's key, if both exist.
async fn secret_value(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Option<ByteString>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(key)))
}

fn hash(parts: &[&str]) -> String {
    let joined = parts.join("\n");
    format!("{:08x}", parley_crd::hash_bytes(joined.as_bytes()) as u32)
}

pub async fn reconcile(cluster: Arc<ChatCluster>, ctx: Arc<Context>) -> Result<Action> {
    let key = super::key(&*cluster);
    let action = Box::pin(reconcile_cluster(cluster, &ctx)).await?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

async fn reconcile_cluster(cluster: Arc<ChatCluster>, ctx: &Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled(KIND);
    let client = &ctx.client;
    let ns = cluster.namespace().ok_or(Error::Missing("namespace"))?;
    let name = cluster.name_any();
    let previous = cluster.status.clone().unwrap_or_default();
    let mut problems = Vec::new();

    // The shard map: the ChatShards naming this cluster, or the last good one.
    let shards: Vec<ChatShard> = Api::<ChatShard>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.spec.cluster_ref.name == name)
        .collect();
    let shard_statuses: Vec<ShardStatus> = match shard_map(&shards) {
        Ok(map) => map,
        Err(e) => {
            problems.push(Problem {
                reason: Reason::InvalidShardMap,
                message: e,
            });
            previous.shards.clone()
        }
    };

    // Worker IDs: disjoint from every other ChatCluster's. Read fresh (not from the cache)
    // and recorded at once, under the lock.
    let allocation = ctx.worker_ids.lock().await;
    let all = Api::<ChatCluster>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let own = all
        .iter()
        .find(|c| c.uid() == cluster.uid())
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.worker_id_range)
        .or(previous.worker_id_range);
    let others: Vec<_> = all
        .into_iter()
        .filter(|c| c.uid() != cluster.uid())
        .filter_map(|c| c.status.and_then(|s| s.worker_id_range))
        .collect();
    let workers = match allocate(cluster.spec.replicas, own, &others) {
        Ok(w) => {
            if own != Some(w) {
                Api::<ChatCluster>::namespaced(client.clone(), &ns)
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"status": {"workerIdRange": w}})),
                    )
                    .await?;
            }
            Some(w)
        }
        Err(e) => {
            problems.push(Problem {
                reason: Reason::WorkerIdsExhausted,
                message: e.to_string(),
            });
            own
        }
    };
    drop(allocation);

    // Referenced Secrets.
    let mut missing = Vec::new();
    let directory = &cluster.spec.directory.secret_ref;
    let directory_url = secret_value(client, &ns, &directory.name, &directory.key).await?;
    if directory_url.is_none() {
        missing.push(format!("{}/{}", directory.name, directory.key));
    }
    let s3 = &cluster.spec.media.credentials_secret_ref.name;
    for key in ["accessKeyId", "secretAccessKey"] {
        if secret_value(client, &ns, s3, key).await?.is_none() {
            missing.push(format!("{s3}/{key}"));
        }
    }
    let mut shard_urls = BTreeMap::new();
    for s in &shards {
        let p = &s.spec.postgres.secret_ref;
        match secret_value(client, &ns, &p.name, &p.key).await? {
            Some(v) => {
                shard_urls.insert(s.name_any(), v);
            }
            None => missing.push(format!("{}/{} (ChatShard {})", p.name, p.key, s.name_any())),
        }
    }
    if !missing.is_empty() {
        problems.push(Problem {
            reason: Reason::MissingSecret,
            message: format!("Secrets not found: {}", missing.join(", ")),
        });
    }

    // Generated Secrets: the node-to-node secret, the JWT secret unless given, the shard URLs.
    ensure_generated_secret(&cluster, client, &format!("{name}-internal"), "secret").await?;
    let jwt_secret = match &cluster.spec.jwt_secret_ref {
        Some(s) => (s.name.clone(), s.key.clone()),
        None => {
            ensure_generated_secret(&cluster, client, &format!("{name}-jwt"), "secret").await?;
            (format!("{name}-jwt"), "secret".into())
        }
    };
    // `name:slots:url;...` of the newest valid map. The migration Job reads it as `pending`;
    // nodes and persisters read `shards`, which takes it only once that migration succeeded,
    // so no node reaches a database before its schema exists.
    let mut map_value = Vec::new();
    for s in &shard_statuses {
        if let Some(url) = shard_urls.get(&s.name) {
            map_value.push(format!(
                "{}:{}:{}",
                s.name,
                s.slots.join("+"),
                String::from_utf8_lossy(&url.0)
            ));
        }
    }
    let map_value = map_value.join(";");
    let shard_list: Vec<String> = shard_statuses
        .iter()
        .map(|s| format!("{}={}", s.name, s.slots.join("+")))
        .collect();
    // The URLs count too: a shard or directory moved to a new database is migrated again.
    let directory_url = directory_url.map(|u| String::from_utf8_lossy(&u.0).into_owned());
    let migration_hash = hash(&[
        &cluster.spec.image,
        &shard_list.join(","),
        &r::topic_prefix(&cluster),
        &map_value,
        directory_url.as_deref().unwrap_or_default(),
    ]);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let migration_name = format!("{name}-migrate-{migration_hash}");
    let migrated = jobs
        .get_opt(&migration_name)
        .await?
        .is_some_and(|j| job_succeeded(&j));
    let shards_name = format!("{name}-shards");
    let in_force = if migrated {
        map_value.clone()
    } else {
        Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&shards_name)
            .await?
            .and_then(|s| s.data?.remove("shards"))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default()
    };
    let shards_secret = Secret {
        metadata: r::meta(&cluster, shards_name, r::Component::Secret),
        string_data: Some(BTreeMap::from([
            ("shards".to_owned(), in_force),
            (r::PENDING_SHARDS_KEY.to_owned(), map_value),
        ])),
        ..Default::default()
    };
    apply(client, &ns, &shards_secret).await?;

    let Some(workers) = workers else {
        return finish(
            &cluster,
            ctx,
            problems,
            previous,
            None,
            shard_statuses,
            Rollout::default(),
        )
        .await;
    };
    let decided = Decided {
        workers,
        shards: shard_statuses.clone(),
        jwt_secret,
    };
    let config = r::config(&cluster);
    let config_hash = hash(&[&serde_json::to_string(&config.data)?]);
    apply(client, &ns, &config).await?;
    for svc in r::services(&cluster) {
        apply::<Service>(client, &ns, &svc).await?;
    }
    let (sa, role, binding) = r::rbac(&cluster);
    apply::<ServiceAccount>(client, &ns, &sa).await?;
    apply::<Role>(client, &ns, &role).await?;
    apply::<RoleBinding>(client, &ns, &binding).await?;

    // The migration Job first: nodes and persisters start, or change, only once it succeeded.
    let job = apply::<Job>(
        client,
        &ns,
        &r::migration(&cluster, &decided, &migration_hash),
    )
    .await?;
    // `migrated` stays what it was when the Secret was written: the map in force and the
    // workloads move together.
    if let Some(failure) = job_failure(&job) {
        problems.push(Problem {
            reason: Reason::MigrationFailed,
            message: format!(
                "the migration Job {migration_name} failed ({failure}); see kubectl logs job/{migration_name}"
            ),
        });
    }

    // Scaling down: members leave the ring first; the StatefulSet shrinks after a grace.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let current_replicas = sts_api
        .get_opt(&format!("{name}-node"))
        .await?
        .and_then(|s| s.spec.and_then(|s| s.replicas))
        .unwrap_or(0);
    let mut sts = r::statefulset(&cluster, &decided, &config_hash);
    let desired = cluster.spec.replicas;
    let ring_limit = workers.base + desired;
    let (replicas, shrinking) = statefulset_replicas(
        current_replicas,
        desired,
        ring_limit,
        previous.ring.as_ref(),
    );
    if let Some(spec) = sts.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    let requeue = if shrinking {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    };
    let persister_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let (sts, persister) = if migrated {
        let persister = r::persister(&cluster, &decided, &config_hash);
        (
            apply(client, &ns, &sts).await?,
            apply(client, &ns, &persister).await?,
        )
    } else {
        // Left as they are (or not yet created) while the databases are migrated.
        (
            sts_api
                .get_opt(&format!("{name}-node"))
                .await?
                .unwrap_or_default(),
            persister_api
                .get_opt(&format!("{name}-persister"))
                .await?
                .unwrap_or_default(),
        )
    };
    apply::<PodDisruptionBudget>(client, &ns, &r::pdb(&cluster)).await?;
    match r::edge(&cluster) {
        Some(Edge::Ingress(ing)) => {
            apply::<Ingress>(client, &ns, &ing).await?;
        }
        Some(Edge::HttpRoute(route)) => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &r::http_route_resource());
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&route),
            )
            .await?;
        }
        None => {}
    }

    // The ring: ready chat-node pods within the desired ordinals.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = r::selector(&cluster, r::Component::Node)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let names = r::Names::new(name.clone());
    let scope = RingScope {
        names: &names,
        namespace: &ns,
        workers,
        desired,
    };
    let members = ring_members(&pods, &scope);
    let ring = next_ring(previous.ring.as_ref(), members);

    let sts_status = sts.status.unwrap_or_default();
    let persister_status = persister.status.unwrap_or_default();
    let rollout = Rollout {
        desired,
        ready: sts_status.ready_replicas.unwrap_or(0).min(desired),
        updated: sts_status.updated_replicas.unwrap_or(0).min(desired),
        persisters_desired: cluster.spec.persister.replicas,
        persisters_ready: persister_status.ready_replicas.unwrap_or(0),
        migrated,
        shards: shard_statuses.len() as i32,
        shards_ready: shard_statuses.iter().filter(|s| s.ready).count() as i32,
    };
    let mut status = previous;
    status.worker_id_range = Some(workers);
    status.ring = Some(ring);
    status.replicas = sts_status.replicas;
    status.selector = Some(selector);
    finish(
        &cluster,
        ctx,
        problems,
        status,
        Some(requeue),
        shard_statuses,
        rollout,
    )
    .await
}

/// Writes the status (and an Event when the cluster becomes or stops being Degraded).
async fn finish(
    cluster: &ChatCluster,
    ctx: &Context,
    problems: Vec<Problem>,
    mut status: ChatClusterStatus,
    requeue: Option<Duration>,
    shards: Vec<ShardStatus>,
    rollout: Rollout,
) -> Result<Action> {
    let previous = status.conditions.clone();
    let generation = cluster.metadata.generation;
    status.conditions = cluster_conditions(
        &status.conditions,
        &problems,
        rollout,
        &Stamp::at(now(), generation),
    );
    status.observed_generation = generation;
    status.ready_replicas = rollout.ready;
    status.replicas_summary = Some(format!("{}/{}", rollout.ready, rollout.desired));
    status.shards_summary = Some(format!(
        "{}/{}",
        shards.iter().filter(|s| s.ready).count(),
        shards.len()
    ));
    status.shards = shards;
    let api: Api<ChatCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    if let Some(e) = degraded_event(&previous, &status.conditions) {
        let mut reference = cluster.object_ref(&());
        reference.resource_version = None;
        if let Err(err) = publish_event(ctx, reference, e.warning, &e.reason, &e.note).await {
            tracing::warn!("publishing an event: {err}");
        }
    }
    Ok(match (problems.is_empty(), requeue) {
        (false, _) => Action::requeue(Duration::from_secs(30)),
        (true, Some(d)) => Action::requeue(d),
        (true, None) => Action::requeue(Duration::from_secs(60)),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_tell_inputs_apart() {
        assert_eq!(hash(&["a", "b"]), hash(&["a", "b"]));
        assert_ne!(hash(&["a", "b"]), hash(&["a", "c"]));
        assert_ne!(hash(&["ab", ""]), hash(&["a", "b"]), "parts are separated");
        assert_eq!(hash(&["x"]).len(), 8);
    }
}
