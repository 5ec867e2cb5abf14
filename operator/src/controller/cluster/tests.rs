//! `reconcile` against a scripted API server: each test lays out the world the reconcile
//! finds (which objects exist, what their status says), the requests it must make in order
//! with the answers, and then checks what it wrote.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::Action;
use parley_crd::resources::{
    ChatCluster, ChatClusterStatus, ChatShard, RingMember, RingStatus, ShardStatus, WorkerIdRange,
};
use serde_json::{Value, json};

use super::{error_policy, reconcile};
use crate::controller::Context;
use crate::controller::fixtures::{self, Exchange, Reply, Seen, cluster, path, secret, shard};
use crate::metrics::Metrics;

const RANGE: WorkerIdRange = WorkerIdRange { base: 0, size: 8 };

fn at<K: kube::Resource<DynamicType = ()>>(name: &str) -> String {
    path::<K>(Some("chat"), Some(name))
}

fn collection<K: kube::Resource<DynamicType = ()>>() -> String {
    path::<K>(Some("chat"), None)
}

fn cluster_status_path() -> String {
    format!("{}/status", at::<ChatCluster>("alpha"))
}

/// What a reconcile finds: the cluster, its shards, the Secrets that exist, and how far
/// earlier reconciles got.
#[derive(Clone)]
struct World {
    cluster: ChatCluster,
    shards: Vec<ChatShard>,
    secrets: Vec<Secret>,
    /// The generated Secrets exist.
    generated: bool,
    /// The migration Job of the current map, if it exists.
    job: Option<Job>,
    /// What the migration Job's apply answers (`None`: echo).
    job_applied: Option<Job>,
    /// The StatefulSet, if it exists, and what applying it answers.
    statefulset: Option<StatefulSet>,
    statefulset_applied: StatefulSet,
    persister_applied: Deployment,
    pods: Vec<Pod>,
}

fn ready_shard(name: &str, slots: &[&str]) -> ChatShard {
    let mut s = shard(name, slots);
    s.status = serde_json::from_value(json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "Migrated",
                        "message": "", "lastTransitionTime": "t0"}]
    }))
    .unwrap();
    s
}

fn referenced_secrets() -> Vec<Secret> {
    vec![
        secret("alpha-directory", &[("url", "postgres://dir")]),
        secret(
            "alpha-s3",
            &[("accessKeyId", "k"), ("secretAccessKey", "s")],
        ),
        secret("alpha-a-db", &[("url", "postgres://a")]),
        secret("alpha-b-db", &[("url", "postgres://b")]),
    ]
}

/// A ChatCluster seen for the first time: no status, nothing created yet.
fn fresh() -> World {
    World {
        cluster: cluster(),
        shards: vec![
            shard("alpha-a", &["0-2047"]),
            shard("alpha-b", &["2048-4095"]),
        ],
        secrets: referenced_secrets(),
        generated: false,
        job: None,
        job_applied: None,
        statefulset: None,
        statefulset_applied: StatefulSet::default(),
        persister_applied: Deployment::default(),
        pods: vec![],
    }
}

fn pod(ordinal: i32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("alpha-node-{ordinal}"),
            "labels": {"apps.kubernetes.io/pod-index": ordinal.to_string()},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

fn member(ordinal: i32) -> RingMember {
    RingMember {
        name: format!("alpha-node-{ordinal}"),
        ordinal,
        worker_id: ordinal,
        endpoint: format!("http://alpha-node-{ordinal}.alpha-nodes.chat.svc:9180"),
    }
}

/// A ChatCluster whose every object exists, migrated and ready, as the last reconcile left
/// it.
fn settled() -> World {
    let shards = vec![
        ready_shard("alpha-a", &["0-2047"]),
        ready_shard("alpha-b", &["2048-4095"]),
    ];
    let mut c = cluster();
    c.status = Some(ChatClusterStatus {
        worker_id_range: Some(RANGE),
        ring: Some(RingStatus {
            epoch: 4,
            members: (0..3).map(member).collect(),
        }),
        shards: crate::status::shard_map(&shards).unwrap(),
        ..Default::default()
    });
    let job = serde_json::from_value(json!({
        "metadata": {"name": "alpha-migrate-0"}, "status": {"succeeded": 1}
    }))
    .unwrap();
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "alpha-node"},
        "spec": {"replicas": 3, "serviceName": "alpha-nodes", "selector": {}, "template": {}},
        "status": {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3}
    }))
    .unwrap();
    let persister = serde_json::from_value(json!({
        "metadata": {"name": "alpha-persister"},
        "status": {"readyReplicas": 2}
    }))
    .unwrap();
    World {
        cluster: c,
        shards,
        generated: true,
        job: Some(job),
        statefulset: Some(sts.clone()),
        statefulset_applied: sts,
        persister_applied: persister,
        pods: (0..3).map(pod).collect(),
        ..fresh()
    }
}

fn found(object: Option<&impl serde::Serialize>) -> Reply {
    object.map_or(Reply::Status(404), Reply::object)
}

impl World {
    fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }

    fn records_range(&self) -> bool {
        self.cluster
            .status
            .as_ref()
            .and_then(|s| s.worker_id_range)
            .is_none()
            && self.cluster.spec.replicas <= 1024
    }

    /// Phases 1 to 4: the shards, every cluster (and the new range), the referenced and
    /// generated Secrets, the migration Job and the `<name>-shards` Secret.
    fn reading(&self) -> Vec<Exchange> {
        let mut s = vec![
            Exchange::get(collection::<ChatShard>(), Reply::list(&self.shards)),
            Exchange::get(
                path::<ChatCluster>(None, None),
                Reply::list(std::slice::from_ref(&self.cluster)),
            ),
        ];
        if self.records_range() {
            s.push(Exchange::patch(
                cluster_status_path(),
                Reply::object(&self.cluster),
            ));
        }
        for name in ["alpha-directory", "alpha-s3", "alpha-a-db", "alpha-b-db"] {
            s.push(Exchange::get(at::<Secret>(name), found(self.secret(name))));
        }
        for name in ["alpha-internal", "alpha-jwt"] {
            if self.generated {
                let existing = secret(name, &[("secret", "x")]);
                s.push(Exchange::get(at::<Secret>(name), Reply::object(&existing)));
            } else {
                s.push(Exchange::get(at::<Secret>(name), Reply::Status(404)));
                s.push(Exchange::post(collection::<Secret>(), Reply::Echo));
            }
        }
        s.push(Exchange::get(
            at::<Job>("alpha-migrate-*"),
            found(self.job.as_ref()),
        ));
        if self.job.is_none() {
            s.push(Exchange::get(
                at::<Secret>("alpha-shards"),
                Reply::Status(404),
            ));
        }
        s.push(Exchange::patch(at::<Secret>("alpha-shards"), Reply::Echo));
        s
    }

    /// Phases 5 and 6: every workload applied (the StatefulSet and persisters only once
    /// migrated, else read), the pods listed.
    fn workloads(&self) -> Vec<Exchange> {
        let migrated = self.job.is_some();
        let job = self.job_applied.as_ref().map_or(Reply::Echo, Reply::object);
        let mut s = vec![
            Exchange::patch(at::<ConfigMap>("alpha-config"), Reply::Echo),
            Exchange::patch(at::<Service>("alpha-nodes"), Reply::Echo),
            Exchange::patch(at::<Service>("alpha"), Reply::Echo),
            Exchange::patch(at::<ServiceAccount>("alpha-node"), Reply::Echo),
            Exchange::patch(at::<Role>("alpha-node"), Reply::Echo),
            Exchange::patch(at::<RoleBinding>("alpha-node"), Reply::Echo),
            Exchange::patch(at::<Job>("alpha-migrate-*"), job),
            Exchange::get(
                at::<StatefulSet>("alpha-node"),
                found(self.statefulset.as_ref()),
            ),
        ];
        if migrated {
            s.push(Exchange::patch(
                at::<StatefulSet>("alpha-node"),
                Reply::object(&self.statefulset_applied),
            ));
            s.push(Exchange::patch(
                at::<Deployment>("alpha-persister"),
                Reply::object(&self.persister_applied),
            ));
        } else {
            s.push(Exchange::get(
                at::<Deployment>("alpha-persister"),
                Reply::Status(404),
            ));
        }
        s.extend([
            Exchange::patch(at::<PodDisruptionBudget>("alpha-node"), Reply::Echo),
            Exchange::patch(at::<Ingress>("alpha"), Reply::Echo),
            Exchange::get(collection::<Pod>(), Reply::list(&self.pods)),
        ]);
        s
    }

    /// The whole script: phases 1 to 6, the status, and an Event when `event`.
    fn script(&self, event: bool) -> Vec<Exchange> {
        let mut s = self.reading();
        s.extend(self.workloads());
        s.extend(self.finishing(event));
        s
    }

    /// The status patch, and the Event when `event`.
    fn finishing(&self, event: bool) -> Vec<Exchange> {
        let mut s = vec![Exchange::patch(
            cluster_status_path(),
            Reply::object(&self.cluster),
        )];
        if event {
            let events = path::<Event>(Some("chat"), None);
            s.push(Exchange::post(events, Reply::Echo));
        }
        s
    }

    /// Reconciles the world's cluster against `script`.
    async fn reconcile(
        &self,
        script: Vec<Exchange>,
    ) -> (crate::error::Result<Action>, Vec<Seen>, Arc<Context>) {
        let (client, server) = fixtures::client();
        let ctx = Arc::new(Context::new(client, Arc::new(Metrics::default()), "test"));
        let work = reconcile(Arc::new(self.cluster.clone()), ctx.clone());
        let (result, seen) = server.replay(script, work).await;
        (result, seen, ctx)
    }
}

/// The last status patch's `status`.
fn written_status(seen: &[Seen]) -> ChatClusterStatus {
    let last = seen
        .iter()
        .rev()
        .find(|r| r.path == cluster_status_path())
        .expect("a status patch");
    serde_json::from_value(last.body["status"].clone()).unwrap()
}

fn condition(status: &ChatClusterStatus, type_: &str) -> (String, String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn body_of<'a>(seen: &'a [Seen], method: &Method, path: &str) -> &'a Value {
    &seen
        .iter()
        .find(|r| r.method == *method && r.path == path)
        .unwrap_or_else(|| panic!("no {method} {path}"))
        .body
}

#[tokio::test]
async fn a_fresh_cluster_creates_its_objects_in_order_and_waits_for_its_migration() {
    let world = fresh();
    let (result, seen, _) = world.reconcile(world.script(false)).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(60)));

    // The worker-ID range is recorded before anything uses it.
    let range = body_of(&seen, &Method::PATCH, &cluster_status_path());
    assert_eq!(
        range["status"]["workerIdRange"],
        json!({"base": 0, "size": 8})
    );
    // Generated Secrets: 32 random bytes, hex, owned by the cluster.
    let created: Vec<&Seen> = seen.iter().filter(|r| r.method == Method::POST).collect();
    assert_eq!(created.len(), 2);
    for (r, name) in created.iter().zip(["alpha-internal", "alpha-jwt"]) {
        assert_eq!(r.body["metadata"]["name"], name);
        assert_eq!(
            r.body["metadata"]["ownerReferences"][0]["kind"],
            "ChatCluster"
        );
        let value = r.body["stringData"]["secret"].as_str().unwrap();
        assert!(value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    // The newest map is pending; none is in force before its migration ran.
    let shards = body_of(&seen, &Method::PATCH, &at::<Secret>("alpha-shards"));
    assert_eq!(shards["stringData"]["shards"], "");
    assert_eq!(
        shards["stringData"]["pending"],
        "alpha-a:0-2047:postgres://a;alpha-b:2048-4095:postgres://b"
    );
    // The Job read and the Job applied are the same migration.
    let jobs: Vec<&str> = seen
        .iter()
        .filter(|r| r.path.contains("/jobs/"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0], jobs[1]);
    // Every write but the status is a forced server-side apply of the operator's.
    for r in seen
        .iter()
        .filter(|r| r.method == Method::PATCH && !r.path.ends_with("/status"))
    {
        assert!(
            r.query.contains("fieldManager=parley-operator") && r.query.contains("force=true"),
            "{}: {}",
            r.line(),
            r.query
        );
    }
    // No chat-node or persister before the migration.
    assert!(!seen.iter().any(|r| r.method == Method::PATCH
        && (r.path.contains("/statefulsets/") || r.path.contains("/deployments/"))));

    let status = written_status(&seen);
    assert_eq!(status.worker_id_range, Some(RANGE));
    assert_eq!(condition(&status, "Degraded").1, "SpecValid");
    let progressing = condition(&status, "Progressing");
    assert_eq!(
        (progressing.0.as_str(), progressing.1.as_str()),
        ("True", "Migrating")
    );
    assert_eq!(condition(&status, "Ready").0, "False");
    assert_eq!(status.ring.as_ref().unwrap().epoch, 1);
    assert_eq!(status.replicas_summary.as_deref(), Some("0/3"));
    assert_eq!(status.shards_summary.as_deref(), Some("0/2"));
    assert_eq!(status.observed_generation, Some(1));
}

#[tokio::test]
async fn a_settled_cluster_is_reapplied_and_changes_nothing_else() {
    let world = settled();
    let (result, seen, ctx) = world.reconcile(world.script(false)).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(60)));

    assert!(
        !seen.iter().any(|r| r.method == Method::POST),
        "nothing created"
    );
    let status_patches = seen
        .iter()
        .filter(|r| r.path == cluster_status_path())
        .count();
    assert_eq!(status_patches, 1, "the range is recorded already");
    let shards = body_of(&seen, &Method::PATCH, &at::<Secret>("alpha-shards"));
    assert_eq!(
        shards["stringData"]["shards"], shards["stringData"]["pending"],
        "the migrated map is in force"
    );
    let sts = body_of(&seen, &Method::PATCH, &at::<StatefulSet>("alpha-node"));
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["ordinals"]["start"], 0);

    let status = written_status(&seen);
    let ready = condition(&status, "Ready");
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("True", "AllReady"));
    assert_eq!(condition(&status, "Progressing").1, "Settled");
    let ring = status.ring.unwrap();
    assert_eq!(ring.epoch, 4, "the same members: the same epoch");
    assert_eq!(ring.members, (0..3).map(member).collect::<Vec<_>>());
    assert_eq!(status.replicas, 3);
    assert_eq!(status.ready_replicas, 3);
    assert_eq!(status.shards_summary.as_deref(), Some("2/2"));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/component=chat-node,app.kubernetes.io/instance=alpha")
    );
    assert!(!ctx.metrics.render().contains("reconcile_errors_total{"));
}

#[tokio::test]
async fn scaling_down_waits_until_the_leaving_pods_are_out_of_the_ring() {
    let mut world = settled();
    // 5 chat-nodes run and all are in the ring; the spec now asks for 3.
    let mut sts = world.statefulset.clone().unwrap();
    sts.spec.as_mut().unwrap().replicas = Some(5);
    world.statefulset = Some(sts);
    world.cluster.status.as_mut().unwrap().ring = Some(RingStatus {
        epoch: 7,
        members: (0..5).map(member).collect(),
    });
    world.pods = (0..5).map(pod).collect();
    let (result, seen, _) = world.reconcile(world.script(false)).await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(Duration::from_secs(5)),
        "back soon to shrink"
    );
    let sts = body_of(&seen, &Method::PATCH, &at::<StatefulSet>("alpha-node"));
    assert_eq!(
        sts["spec"]["replicas"], 5,
        "not yet: 3 and 4 are in the ring"
    );
    let ring = written_status(&seen).ring.unwrap();
    assert_eq!(ring.epoch, 8, "the ring moved on without them");
    assert_eq!(ring.members, (0..3).map(member).collect::<Vec<_>>());

    // The next reconcile finds them out of the ring: the StatefulSet shrinks.
    let mut next = world.clone();
    next.cluster.status.as_mut().unwrap().ring = Some(ring);
    let (result, seen, _) = next.reconcile(next.script(false)).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(60)));
    let sts = body_of(&seen, &Method::PATCH, &at::<StatefulSet>("alpha-node"));
    assert_eq!(sts["spec"]["replicas"], 3);
}

#[tokio::test]
async fn a_missing_secret_degrades_the_cluster_with_a_warning_event() {
    let mut world = settled();
    world.secrets.retain(|s| {
        !matches!(
            s.metadata.name.as_deref(),
            Some("alpha-directory" | "alpha-b-db")
        )
    });
    let (result, seen, _) = world.reconcile(world.script(true)).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));

    let status = written_status(&seen);
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        degraded,
        (
            "True".into(),
            "MissingSecret".into(),
            "Secrets not found: alpha-directory/url, alpha-b-db/url (ChatShard alpha-b)".into()
        )
    );
    assert_eq!(condition(&status, "Ready").1, "MissingSecret");
    let event = &seen.last().unwrap().body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "MissingSecret");
    assert_eq!(event["regarding"]["name"], "alpha");
    // Only the shard with a URL is in the newest map.
    let shards = body_of(&seen, &Method::PATCH, &at::<Secret>("alpha-shards"));
    assert_eq!(
        shards["stringData"]["pending"],
        "alpha-a:0-2047:postgres://a"
    );
}

#[tokio::test]
async fn a_failed_migration_degrades_the_cluster() {
    let mut world = fresh();
    world.job_applied = Some(
        serde_json::from_value(
            json!({"metadata": {}, "status": {"failed": 11, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}
            ]}}),
        )
        .unwrap(),
    );
    let (result, seen, _) = world.reconcile(world.script(true)).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
    let (status, reason, message) = condition(&written_status(&seen), "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "MigrationFailed")
    );
    assert!(
        message.starts_with("the migration Job alpha-migrate-"),
        "{message}"
    );
    assert!(message.contains("(Job has reached the specified backoff limit)"));
}

#[tokio::test]
async fn an_invalid_shard_map_keeps_the_last_good_one_in_force() {
    let mut world = settled();
    world.shards[1] = ready_shard("alpha-b", &["3000-4095"]);
    let (result, seen, _) = world.reconcile(world.script(true)).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
    let status = written_status(&seen);
    let (_, reason, message) = condition(&status, "Degraded");
    assert_eq!(reason, "InvalidShardMap");
    assert_eq!(message, "slots 2048-2999 belong to no shard");
    let slots: Vec<&str> = status.shards.iter().map(|s| s.slots[0].as_str()).collect();
    assert_eq!(slots, ["0-2047", "2048-4095"], "the last good map");
}

#[tokio::test]
async fn without_worker_ids_nothing_is_rendered() {
    let mut world = fresh();
    world.cluster.spec.replicas = 2000;
    world.generated = true;
    let mut script = world.reading();
    script.extend(world.finishing(true));
    let (result, seen, _) = world.reconcile(script).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
    let status = written_status(&seen);
    assert_eq!(condition(&status, "Degraded").1, "WorkerIdsExhausted");
    assert_eq!(status.worker_id_range, None);
    assert!(!seen.iter().any(|r| r.path.contains("/statefulsets/")));
}

#[tokio::test]
async fn an_api_failure_stops_the_reconcile_and_backs_off() {
    let world = fresh();
    let script = vec![Exchange::get(collection::<ChatShard>(), Reply::Status(500))];
    let (result, seen, ctx) = world.reconcile(script).await;
    assert_eq!(seen.len(), 1, "nothing after the failure");
    let error = result.unwrap_err();
    assert_eq!(error.metric_label(), "kube");
    let action = error_policy(Arc::new(world.cluster.clone()), &error, ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert!(
        ctx.metrics.render().contains(
            r#"parley_operator_reconcile_errors_total{kind="ChatCluster",error="kube"} 1"#
        )
    );
}

#[test]
fn the_settled_world_is_consistent() {
    // The ring in the settled status is what its pods make: a test of the fixture itself.
    let world = settled();
    let status = world.cluster.status.unwrap();
    let shards: Vec<ShardStatus> = status.shards;
    assert!(shards.iter().all(|s| s.ready));
    assert_eq!(status.ring.unwrap().members.len(), world.pods.len());
}
