//! The operator against a real kube-apiserver (`dev/k8s up`): CRDs applied, a ChatCluster and
//! two ChatShards reconciled into every object with owner references, Ready status, scaling,
//! a bad spec reported as Degraded, disjoint worker IDs, and garbage collection.
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom; the 80-line bar is for non-test code"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use parley_crd::resources::{ChatCluster, ChatShard};

fn kubeconfig() -> PathBuf {
    std::env::var_os("PARLEY_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.state/k8s/kubeconfig")
        })
}

async fn client() -> Client {
    // This test binary links two TLS providers (aws-lc-rs through the S3 SDK, ring through
    // kube): name the one to use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = kubeconfig();
    let kc = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run dev/k8s up", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Polls `check` until it returns `Some`, for up to `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The Gateway API's HTTPRoute CRD, which `dev/k8s` fetches from its Go module.
fn http_route_crd() -> CustomResourceDefinition {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.state/k8s/bin/gateway-api-httproutes.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run dev/k8s up", path.display()));
    serde_yaml_ng::from_str(&text).unwrap()
}

async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crds: Vec<CustomResourceDefinition> =
        operator::crds::all().into_iter().map(|(_, c)| c).collect();
    crds.push(http_route_crd());
    for crd in &crds {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("parley-tests").force(),
            &Patch::Apply(crd),
        )
        .await
        .unwrap();
    }
    for crd in &crds {
        let name = crd.name_any();
        eventually(30, "the CRDs to be established", || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let c = api.get(&name).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The Secrets a test cluster references: the directory's, S3's, and `<shard>-db` with the
/// given URL for each shard.
async fn cluster_secrets(client: &Client, ns: &str, shard_urls: &[(&str, &str)]) -> Api<Secret> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut all = vec![
        secret("directory", &[("url", "postgres://dir")]),
        secret("s3", &[("accessKeyId", "k"), ("secretAccessKey", "s")]),
    ];
    for (shard, url) in shard_urls {
        all.push(secret(&format!("{shard}-db"), &[("url", url)]));
    }
    for s in all {
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    secrets
}

fn cluster(name: &str, replicas: i32) -> ChatCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "parley.dev/v1alpha1", "kind": "ChatCluster",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "image": "parley/chat-node:test",
            "redis": {"url": "redis://redis:6379"},
            "kafka": {"bootstrapServers": "kafka:9092"},
            "directory": {"secretRef": {"name": "directory"}},
            "media": {"bucket": "media", "endpoint": "http://minio:9000", "credentialsSecretRef": {"name": "s3"}},
            "exposure": {"ingress": {"host": "chat.example.com", "className": "nginx"}}
        }
    }))
    .unwrap()
}

fn shard(name: &str, cluster: &str, slots: &str) -> ChatShard {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "parley.dev/v1alpha1", "kind": "ChatShard",
        "metadata": {"name": name},
        "spec": {"clusterRef": {"name": cluster}, "slots": [slots], "postgres": {"secretRef": {"name": format!("{name}-db")}}}
    }))
    .unwrap()
}

/// An operator process; killed when dropped.
struct Operator {
    child: tokio::process::Child,
    /// Base URL of its `/metrics`.
    metrics: String,
}

impl Operator {
    /// Its `parley_operator_leader` gauge, once it answers.
    async fn leader(&self) -> Option<bool> {
        let text = reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("parley_operator_leader "))?;
        Some(line.ends_with(" 1"))
    }

    /// Its reconciles of ChatClusters so far.
    async fn cluster_reconciles(&self) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("parley_operator_reconciles_total{kind=\"ChatCluster\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, and the exit.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

async fn start_operator(ns: &str) -> Operator {
    start_replica(ns, "operator-under-test").await
}

/// An operator replica named `identity`, leading from a Lease in `ns` and reconciling `ns`.
async fn start_replica(ns: &str, identity: &str) -> Operator {
    start_operator_as(ns, identity, &kubeconfig(), "parley-operator").await
}

/// The same, with its own kubeconfig and Lease name.
async fn start_operator_as(
    ns: &str,
    identity: &str,
    kubeconfig: &std::path::Path,
    lease: &str,
) -> Operator {
    let (mut cmd, metrics) = operator_command(ns, identity, kubeconfig, lease);
    let child = cmd
        .env("POD_NAMESPACE", ns)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Operator { child, metrics }
}

/// The operator's command (without `POD_NAMESPACE`, which the caller sets or not), reconciling
/// `ns`, and the base URL of its metrics.
fn operator_command(
    ns: &str,
    identity: &str,
    kubeconfig: &std::path::Path,
    lease: &str,
) -> (tokio::process::Command, String) {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/parley-operator");
    assert!(
        bin.exists(),
        "build the operator first: cargo build -p operator"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env("KUBECONFIG", kubeconfig)
        .env_remove("POD_NAMESPACE")
        .env("POD_NAME", identity)
        .env("PARLEY_OPERATOR_LEASE", lease)
        // Tests run side by side: each operator keeps to its own namespace.
        .env("PARLEY_OPERATOR_WATCH_NAMESPACE", ns)
        .env("PARLEY_OPERATOR_METRICS", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info,kube=warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    (cmd, format!("http://127.0.0.1:{port}"))
}

/// A copy of the test kubeconfig whose current context's namespace is `ns`.
fn kubeconfig_in(ns: &str, file: &str) -> PathBuf {
    let mut kc = Kubeconfig::read_from(kubeconfig()).unwrap();
    let current = kc.current_context.clone().unwrap();
    let ctx = kc
        .contexts
        .iter_mut()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_mut())
        .unwrap();
    ctx.namespace = Some(ns.to_owned());
    let path = std::env::temp_dir().join(file);
    std::fs::write(&path, serde_yaml_ng::to_string(&kc).unwrap()).unwrap();
    path
}

fn condition(c: &ChatCluster, type_: &str) -> Option<(String, String, String)> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
        .map(|x| (x.status.clone(), x.reason.clone(), x.message.clone()))
}

#[tokio::test]
async fn a_cluster_and_two_shards_are_reconciled() {
    let client = client().await;
    apply_crds(&client).await;
    let ns = format!("op-{}", std::process::id());
    create_namespace(&client, &ns).await;
    let secrets = cluster_secrets(
        &client,
        &ns,
        &[("alpha-a", "postgres://a"), ("alpha-b", "postgres://b")],
    )
    .await;
    let _operator = start_operator(&ns).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    let shards: Api<ChatShard> = Api::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("alpha", 2))
        .await
        .unwrap();
    shards
        .create(&PostParams::default(), &shard("alpha-a", "alpha", "0-2047"))
        .await
        .unwrap();
    shards
        .create(
            &PostParams::default(),
            &shard("alpha-b", "alpha", "2048-4095"),
        )
        .await
        .unwrap();

    // Every object exists, owned by the cluster.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let set = eventually(60, "the StatefulSet", || {
        let sts = sts.clone();
        async move { sts.get("alpha-node").await.ok() }
    })
    .await;
    assert_eq!(set.owner_references()[0].kind, "ChatCluster");
    assert_eq!(set.spec.as_ref().unwrap().replicas, Some(2));
    macro_rules! owned {
        ($t:ty, $name:expr) => {{
            let api: Api<$t> = Api::namespaced(client.clone(), &ns);
            let o = api
                .get($name)
                .await
                .unwrap_or_else(|e| panic!("{} {}: {e}", stringify!($t), $name));
            assert_eq!(
                o.owner_references()[0].name,
                "alpha",
                "{} {} is owned by the cluster",
                stringify!($t),
                $name
            );
        }};
    }
    owned!(Service, "alpha");
    owned!(Service, "alpha-nodes");
    owned!(ConfigMap, "alpha-config");
    owned!(Deployment, "alpha-persister");
    owned!(PodDisruptionBudget, "alpha-node");
    owned!(ServiceAccount, "alpha-node");
    owned!(Role, "alpha-node");
    owned!(RoleBinding, "alpha-node");
    owned!(Ingress, "alpha");
    owned!(Secret, "alpha-internal");
    owned!(Secret, "alpha-jwt");
    owned!(Secret, "alpha-shards");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|j| j.name_any().starts_with("alpha-migrate-"))
    );

    // Status reaches Ready (kwok runs the pods; the migration Job's pod completes).
    let ready = eventually(120, "the cluster to be Ready", || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get("alpha").await.ok()?;
            (condition(&c, "Ready")?.0 == "True").then_some(c)
        }
    })
    .await;
    let status = ready.status.unwrap();
    assert_eq!(status.ready_replicas, 2);
    assert_eq!(status.shards.len(), 2);
    assert_eq!(status.ring.as_ref().unwrap().members.len(), 2);
    let range = status.worker_id_range.unwrap();
    // What `kubectl get` and `kubectl describe` show.
    let table = run_tool("kubectl", &["get", "chatclusters", "-n", &ns], None);
    let mut rows = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        rows.next().unwrap(),
        ["NAME", "READY", "REPLICAS", "SHARDS", "AGE"]
    );
    assert_eq!(
        rows.next().unwrap()[..4],
        ["alpha", "True", "2/2", "2/2"],
        "{table}"
    );
    let described = run_tool("kubectl", &["describe", "chatc", "alpha", "-n", &ns], None);
    assert!(described.contains("AllReady"), "{described}");

    // Scaling follows.
    clusters
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually(60, "the StatefulSet to scale to 3", || {
        let sts = sts.clone();
        async move { (sts.get("alpha-node").await.ok()?.spec?.replicas == Some(3)).then_some(()) }
    })
    .await;
    let ring_len = |c: &ChatCluster| {
        c.status
            .as_ref()
            .and_then(|s| s.ring.as_ref())
            .map_or(0, |r| r.members.len())
    };
    eventually(60, "three members in the ring", || {
        let clusters = clusters.clone();
        async move { (ring_len(&clusters.get("alpha").await.ok()?) == 3).then_some(()) }
    })
    .await;
    // Scaling down: the leaving member is out of the ring before the StatefulSet shrinks.
    // Both objects are watched from now on; etcd's revisions (the resourceVersions of one
    // API server over one etcd) order the two writes.
    let leaving = range.base + 2;
    let from = |list: kube::api::ObjectList<kube::api::PartialObjectMeta<ChatCluster>>| {
        list.metadata.resource_version.unwrap()
    };
    let rv = from(clusters.list_metadata(&Default::default()).await.unwrap());
    let mut cluster_events = clusters
        .watch(&WatchParams::default().fields("metadata.name=alpha"), &rv)
        .await
        .unwrap()
        .boxed();
    let mut sts_events = sts
        .watch(
            &WatchParams::default().fields("metadata.name=alpha-node"),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    clusters
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let ring_left = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = cluster_events.try_next().await.unwrap() {
            if let WatchEvent::Modified(c) = e {
                let out = c
                    .status
                    .as_ref()
                    .and_then(|s| s.ring.as_ref())
                    .is_some_and(|r| r.members.iter().all(|m| m.ordinal != leaving));
                if out {
                    return c.resource_version().unwrap();
                }
            }
        }
        panic!("the watch of alpha ended");
    })
    .await
    .expect("the leaving member never left the ring");
    let shrank = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = sts_events.try_next().await.unwrap() {
            if let WatchEvent::Modified(s) = e
                && s.spec.as_ref().and_then(|s| s.replicas) == Some(2)
            {
                return s.resource_version().unwrap();
            }
        }
        panic!("the watch of alpha-node ended");
    })
    .await
    .expect("the StatefulSet never shrank");
    let order = |rv: &str| rv.parse::<u64>().unwrap();
    assert!(
        order(&ring_left) < order(&shrank),
        "the StatefulSet shrank (rv {shrank}) before ordinal {leaving} left the ring (rv {ring_left})"
    );

    // A bad spec: a gap in the shard map is Degraded, the last good map stays in force.
    shards
        .patch(
            "alpha-b",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"slots": ["2100-4095"]}})),
        )
        .await
        .unwrap();
    let degraded = eventually(60, "Degraded", || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get("alpha").await.ok()?;
            let d = condition(&c, "Degraded")?;
            (d.0 == "True").then_some((d, c))
        }
    })
    .await;
    assert_eq!(degraded.0.1, "InvalidShardMap");
    assert!(degraded.0.2.contains("2048-2099"), "{}", degraded.0.2);
    assert_eq!(
        degraded.1.status.unwrap().shards[1].slots,
        ["2048-4095"],
        "the last good map stays"
    );
    assert!(
        sts.get("alpha-node").await.is_ok(),
        "nothing else disturbed"
    );
    // ... with a Warning Event on the cluster naming the gap, as `kubectl describe` shows it
    // (alpha may have had an earlier one, from before alpha-b existed: each problem has its
    // own Event, not a count on the first).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let warning = eventually(30, "a Warning Event", || {
        let events = events.clone();
        async move {
            events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("InvalidShardMap")
                        && e.note.as_deref().is_some_and(|n| n.contains("2048-2099"))
                        && e.type_.as_deref() == Some("Warning")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("alpha")
                })
        }
    })
    .await;
    assert!(
        warning
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("2048-2099"),
        "{warning:?}"
    );

    // Mended by a third shard: the map of three is in force, and the new shard is Ready
    // only through a migration that covered it.
    secrets
        .create(
            &PostParams::default(),
            &secret("alpha-c-db", &[("url", "postgres://c")]),
        )
        .await
        .unwrap();
    shards
        .create(
            &PostParams::default(),
            &shard("alpha-c", "alpha", "2048-2099"),
        )
        .await
        .unwrap();
    let mended = eventually(60, "the map of three in force", || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get("alpha").await.ok()?;
            let d = condition(&c, "Degraded")?;
            (d.0 == "False" && c.status.as_ref()?.shards.len() == 3).then_some(c)
        }
    })
    .await;
    assert_eq!(
        mended.status.unwrap().shards[2].slots,
        ["2048-2099"],
        "sorted by name: alpha-a, alpha-b, alpha-c"
    );
    eventually(60, "alpha-c Ready", || {
        let shards = shards.clone();
        async move {
            let s = shards.get("alpha-c").await.ok()?;
            s.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    let covering = jobs.list(&Default::default()).await.unwrap().items;
    assert!(
        covering.iter().any(|j| {
            j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0
                && j.annotations()
                    .get("parley.dev/shards")
                    .is_some_and(|l| l.split(',').any(|s| s == "alpha-c"))
        }),
        "a succeeded migration names alpha-c"
    );
    let map = eventually(30, "the map of three in force", || {
        let secrets = secrets.clone();
        async move {
            let (in_force, pending) = shard_maps(&secrets, "alpha").await;
            (in_force == pending).then_some(in_force)
        }
    })
    .await;
    assert_eq!(map.split(';').count(), 3, "{map}");
    assert!(map.contains("alpha-c:2048-2099:postgres://c"), "{map}");

    // Two more clusters, created together, get worker-ID ranges disjoint from alpha's and
    // from each other's (allocation is serialized, not first come first served twice).
    let pp = PostParams::default();
    let (mut beta, delta) = (cluster("beta", 2), cluster("delta", 9));
    // beta is reached through the Gateway API rather than an Ingress.
    beta.spec.exposure = serde_json::from_value(serde_json::json!({"gateway": {
        "parentRef": {"name": "public"}, "hostnames": ["beta.example.com"]
    }}))
    .unwrap();
    let (b, d) = tokio::join!(clusters.create(&pp, &beta), clusters.create(&pp, &delta));
    b.unwrap();
    d.unwrap();
    let mut ranges = vec![range];
    for name in ["beta", "delta"] {
        ranges.push(
            eventually(60, "worker IDs", || {
                let clusters = clusters.clone();
                async move { clusters.get(name).await.ok()?.status?.worker_id_range }
            })
            .await,
        );
    }
    for (i, x) in ranges.iter().enumerate() {
        for y in &ranges[i + 1..] {
            assert!(
                x.base >= y.base + y.size || x.base + x.size <= y.base,
                "overlapping worker IDs: {ranges:?}"
            );
        }
    }
    assert_eq!(ranges[2].size, 16, "9 replicas get a range of 16");
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &operator::resources::http_route_resource(),
    );
    let route = eventually(60, "beta's HTTPRoute", || {
        let routes = routes.clone();
        async move { routes.get("beta").await.ok() }
    })
    .await;
    assert_eq!(route.owner_references()[0].name, "beta");
    assert_eq!(
        route.data["spec"]["rules"][0]["backendRefs"][0]["name"],
        "beta"
    );

    // A cluster that needs all 1024 worker IDs while others hold some is refused.
    clusters
        .create(&pp, &cluster("epsilon", 1024))
        .await
        .unwrap();
    let refused = eventually(60, "epsilon Degraded", || {
        let clusters = clusters.clone();
        async move {
            let d = condition(&clusters.get("epsilon").await.ok()?, "Degraded")?;
            (d.0 == "True").then_some(d)
        }
    })
    .await;
    // (epsilon has no shard either; the message names every problem, the reason the first)
    assert!(
        refused.2.contains("no free range of 1024 worker IDs"),
        "{refused:?}"
    );
    let epsilon = clusters.get("epsilon").await.unwrap();
    assert!(epsilon.status.unwrap().worker_id_range.is_none());
    assert!(
        sts.get_opt("epsilon-node").await.unwrap().is_none(),
        "nothing runs without IDs"
    );

    // Deleting the cluster takes its children away.
    clusters
        .delete("alpha", &DeleteParams::default())
        .await
        .unwrap();
    eventually(90, "the children to be collected", || {
        let sts = sts.clone();
        async move {
            sts.get_opt("alpha-node")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// The `shards` and `pending` keys of a cluster's `<name>-shards` Secret.
async fn shard_maps(secrets: &Api<Secret>, cluster: &str) -> (String, String) {
    let data = secrets
        .get(&format!("{cluster}-shards"))
        .await
        .unwrap()
        .data
        .unwrap();
    let key = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    (key("shards"), key("pending"))
}

/// No chat-node or persister starts, and no node sees the shard map, before the migration
/// Job has succeeded: a ResourceQuota of zero pods holds the Job's pod back.
#[tokio::test]
async fn nodes_wait_for_the_migration() {
    let client = client().await;
    apply_crds(&client).await;
    let ns = format!("op-migrate-{}", std::process::id());
    create_namespace(&client, &ns).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let secrets = cluster_secrets(&client, &ns, &[("gamma-a", "postgres://a")]).await;
    let _operator = start_operator(&ns).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    let shards: Api<ChatShard> = Api::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("gamma", 2))
        .await
        .unwrap();
    shards
        .create(&PostParams::default(), &shard("gamma-a", "gamma", "0-4095"))
        .await
        .unwrap();

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    eventually(60, "the migration Job", || {
        let jobs = jobs.clone();
        async move {
            let list = jobs.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|j| j.name_any().starts_with("gamma-migrate-"))
                .then_some(())
        }
    })
    .await;
    // Several reconciles later (the shard, the Job and the Secret all trigger one)...
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = clusters.get("gamma").await.unwrap();
    let progressing = condition(&c, "Progressing").unwrap();
    assert_eq!(progressing.1, "Migrating", "{progressing:?}");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(
        sts.get_opt("gamma-node").await.unwrap().is_none(),
        "no chat-node yet"
    );
    assert!(
        deployments
            .get_opt("gamma-persister")
            .await
            .unwrap()
            .is_none(),
        "no persister yet"
    );
    let (in_force, pending) = shard_maps(&secrets, "gamma").await;
    assert_eq!(in_force, "", "no map in force before the migration");
    assert_eq!(pending, "gamma-a:0-4095:postgres://a");

    // The quota goes, the Job's pod runs, and everything follows.
    quotas
        .delete("no-pods", &DeleteParams::default())
        .await
        .unwrap();
    eventually(150, "the cluster to be Ready", || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get("gamma").await.ok()?;
            (condition(&c, "Ready")?.0 == "True").then_some(())
        }
    })
    .await;
    assert!(sts.get_opt("gamma-node").await.unwrap().is_some());
    let (in_force, pending) = shard_maps(&secrets, "gamma").await;
    assert_eq!(in_force, pending, "the migrated map is in force");
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// Everything the builders render is accepted by the API server (a server-side dry run, as
/// `kubectl apply --dry-run=server` does).
#[tokio::test]
async fn everything_the_operator_renders_passes_a_server_side_dry_run() {
    use operator::resources as r;
    let client = client().await;
    apply_crds(&client).await;
    let ns = format!("dry-{}", std::process::id());
    create_namespace(&client, &ns).await;
    // A cluster as the API server holds it (it needs a uid for owner references).
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    let mut c = cluster("gamma", 3);
    c.spec.exposure.gateway = None;
    // Every optional part that changes the pods: the Redis URL from a Secret, a word list,
    // the user's JWT Secret, scheduling.
    c.spec.redis =
        serde_json::from_value(serde_json::json!({"secretRef": {"name": "redis"}})).unwrap();
    c.spec.moderation = serde_json::from_value(
        serde_json::json!({"wordListConfigMapRef": {"name": "words", "key": "words.txt"}}),
    )
    .unwrap();
    c.spec.scheduling = serde_json::from_value(serde_json::json!({
        "nodeSelector": {"parley.dev/real-node": "true"},
        "tolerations": [{"key": "parley.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}]
    }))
    .unwrap();
    let c = clusters.create(&PostParams::default(), &c).await.unwrap();
    let decided = r::Decided {
        workers: parley_crd::resources::WorkerIdRange { base: 16, size: 8 },
        shards: vec![],
        jwt_secret: ("gamma-jwt".into(), "secret".into()),
    };
    let dry = PatchParams::apply("parley-tests").dry_run().force();
    macro_rules! dry_run {
        ($t:ty, $obj:expr) => {{
            let obj: $t = $obj;
            let api: Api<$t> = Api::namespaced(client.clone(), &ns);
            api.patch(&obj.name_any(), &dry, &Patch::Apply(&obj))
                .await
                .unwrap_or_else(|e| panic!("{} {} refused: {e}", stringify!($t), obj.name_any()));
        }};
    }
    dry_run!(ConfigMap, r::config(&c));
    for svc in r::services(&c) {
        dry_run!(Service, svc);
    }
    dry_run!(StatefulSet, r::statefulset(&c, &decided, "hash"));
    dry_run!(Deployment, r::persister(&c, &decided, "hash"));
    dry_run!(Job, r::migration(&c, &decided, "hash"));
    dry_run!(PodDisruptionBudget, r::pdb(&c));
    let (sa, role, binding) = r::rbac(&c);
    dry_run!(ServiceAccount, sa);
    dry_run!(Role, role);
    dry_run!(RoleBinding, binding);
    match r::edge(&c) {
        Some(r::Edge::Ingress(ing)) => dry_run!(Ingress, ing),
        other => panic!("expected an Ingress, got {other:?}"),
    }
    // The Gateway API instead of an Ingress: an HTTPRoute the real CRD's schema accepts.
    let mut g = c.clone();
    g.spec.exposure = serde_json::from_value(serde_json::json!({"gateway": {
        "parentRef": {"name": "public", "namespace": "gateways", "sectionName": "https"},
        "hostnames": ["chat.example.com"]
    }}))
    .unwrap();
    match r::edge(&g) {
        Some(r::Edge::HttpRoute(route)) => {
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &r::http_route_resource());
            api.patch(&route.name_any(), &dry, &Patch::Apply(&route))
                .await
                .unwrap_or_else(|e| panic!("HTTPRoute refused: {e}"));
        }
        other => panic!("expected an HTTPRoute, got {other:?}"),
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// Writes a ChatCluster's ring into its status, as the operator does.
async fn set_ring(api: &Api<ChatCluster>, name: &str, epoch: i64, members: &[(String, String)]) {
    let members: Vec<serde_json::Value> = members
        .iter()
        .enumerate()
        .map(|(i, (name, endpoint))| {
            serde_json::json!({"name": name, "ordinal": i, "workerId": i + 1, "endpoint": endpoint})
        })
        .collect();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"status": {"ring": {"epoch": epoch, "members": members}}}),
        ),
    )
    .await
    .unwrap();
}

/// The member names node `i` reports in `/readyz`.
async fn ring_of(nodes: &parley_e2e::cluster::Cluster, i: usize) -> Vec<String> {
    let (_, body) = nodes.readyz(i).await.expect("readyz answers");
    body["ring"]["members"]
        .as_array()
        .map(|m| m.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn chat_nodes_follow_their_chat_cluster_ring_live() {
    use parley_e2e::client::Api as Chat;
    use parley_e2e::cluster::{Cluster, KubeRing, Options};

    let services = parley_e2e::services();
    let client = client().await;
    apply_crds(&client).await;
    let ns = format!("ring-{}", std::process::id());
    create_namespace(&client, &ns).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("live", 2))
        .await
        .unwrap();
    // No operator runs here: the test writes the status the way it would. Two chat-node
    // processes (real services behind them) start with an empty ring.
    set_ring(&clusters, "live", 1, &[]).await;
    let nodes = Cluster::start(
        &services,
        Options {
            nodes: 2,
            kube: Some(KubeRing {
                kubeconfig: kubeconfig(),
                namespace: ns.clone(),
                cluster_name: "live".into(),
                expect_members: 0,
            }),
            ..Options::default()
        },
    )
    .await;
    let alice = Chat::register(nodes.url(0), &nodes.name("alice")).await;
    let bob = Chat::register(nodes.url(1), &nodes.name("bob")).await;
    let group = alice.create_group(&nodes.name("g")).await;
    bob.join(group).await;
    // Nobody owns a channel yet: a send is refused as unavailable, not acknowledged.
    let r = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &serde_json::json!({"text": "too early"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );

    // Scale up in two steps: both processes follow each status change, without a restart.
    let (n1, n2) = (nodes.member(0), nodes.member(1));
    set_ring(&clusters, "live", 2, std::slice::from_ref(&n1)).await;
    nodes.wait_ring(1).await;
    assert_eq!(ring_of(&nodes, 1).await, vec![n1.0.as_str()]);
    alice.send(group, "one").await;
    set_ring(&clusters, "live", 3, &[n1.clone(), n2.clone()]).await;
    nodes.wait_ring(2).await;
    alice.send(group, "two").await;
    bob.send(group, "three").await;

    // Scale down: n1 leaves the ring while its process still runs; it forwards to n2, which
    // now owns every channel and continues the seq.
    set_ring(&clusters, "live", 4, std::slice::from_ref(&n2)).await;
    nodes.wait_ring(1).await;
    assert_eq!(ring_of(&nodes, 0).await, vec![n2.0.as_str()]);
    alice.send(group, "four").await;
    bob.send(group, "five").await;

    let h = alice
        .get(&format!("/v1/channels/{group}/messages?limit=10"))
        .await;
    assert_eq!(h.status, 200, "{:?}", h.body);
    let mut got: Vec<(i64, String)> = h.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["one", "two", "three", "four", "five"]
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64 + 1, (*t).to_owned()))
            .collect::<Vec<_>>(),
        "{}",
        nodes.logs()
    );
    clusters
        .delete("live", &DeleteParams::default())
        .await
        .unwrap();
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn two_operator_replicas_take_turns_through_the_lease() {
    use k8s_openapi::api::coordination::v1::Lease;
    let client = client().await;
    apply_crds(&client).await;
    let ns = format!("le-{}", std::process::id());
    create_namespace(&client, &ns).await;
    cluster_secrets(&client, &ns, &[]).await;
    let first = start_replica(&ns, "replica-a").await;
    eventually(30, "replica-a to lead", || async {
        (first.leader().await == Some(true)).then_some(())
    })
    .await;
    let second = start_replica(&ns, "replica-b").await;
    eventually(30, "replica-b to serve metrics", || async {
        second.leader().await.map(|_| ())
    })
    .await;

    // Only the leader reconciles.
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("gamma", 1))
        .await
        .unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    eventually(60, "the StatefulSet", || async {
        sts.get_opt("gamma-node").await.ok()?.map(|_| ())
    })
    .await;
    assert_eq!(second.leader().await, Some(false), "two leaders");
    assert_eq!(
        second.cluster_reconciles().await,
        0,
        "the follower reconciled"
    );
    assert!(first.cluster_reconciles().await > 0);

    // The leader stops cleanly and hands the lease over; the other replica goes on at once
    // (well within the 15 s lease).
    first.stop().await;
    let handed = std::time::Instant::now();
    eventually(10, "replica-b to lead", || async {
        (second.leader().await == Some(true)).then_some(())
    })
    .await;
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("parley-operator")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert!(spec.lease_transitions.unwrap_or(0) >= 1);
    clusters
        .patch(
            "gamma",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    eventually(60, "the new leader to scale the StatefulSet", || async {
        (sts.get("gamma-node").await.ok()?.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    eprintln!("lease handed over and reconciled in {:?}", handed.elapsed());
    drop(second);
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// Run outside a cluster without `POD_NAMESPACE`, the operator takes its Lease in the
/// namespace of its kubeconfig's context (not a `parley-system` that may not exist).
#[tokio::test]
async fn without_pod_namespace_the_lease_is_in_the_kubeconfigs_namespace() {
    use k8s_openapi::api::coordination::v1::Lease;
    let client = client().await;
    apply_crds(&client).await;
    let ns = format!("kcns-{}", std::process::id());
    create_namespace(&client, &ns).await;
    let path = kubeconfig_in(&ns, &format!("parley-{ns}.kubeconfig"));
    let (mut cmd, metrics) = operator_command(&ns, "kubeconfig-ns", &path, "parley-operator");
    let child = cmd.stderr(Stdio::inherit()).spawn().unwrap();
    let op = Operator { child, metrics };
    eventually(30, "the operator to lead", || async {
        (op.leader().await == Some(true)).then_some(())
    })
    .await;
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("parley-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("kubeconfig-ns")
    );
    op.stop().await;
    let _ = std::fs::remove_file(&path);
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// A Lease namespace that does not exist stops the operator with a message that names it and
/// says how to fix it, rather than a wait that never ends.
#[tokio::test]
async fn a_lease_namespace_that_does_not_exist_stops_the_operator_saying_why() {
    let client = client().await;
    apply_crds(&client).await;
    let missing = format!("does-not-exist-{}", std::process::id());
    let (mut cmd, _) = operator_command(&missing, "nowhere", &kubeconfig(), "parley-operator");
    let child = cmd
        .env("POD_NAMESPACE", &missing)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the operator exits, not waits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exits non-zero: {stderr}");
    assert!(
        stderr.contains(&format!("namespace \"{missing}\" does not exist"))
            && stderr.contains("set POD_NAMESPACE")
            && stderr.contains(&format!("kubectl create namespace {missing}")),
        "names the namespace and the fix: {stderr}"
    );
}

/// `kubectl` or `helm` as `dev/k8s up` built them.
fn k8s_tool(name: &str) -> std::process::Command {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.state/k8s/bin")
        .join(name);
    assert!(bin.exists(), "no {}: run dev/k8s up", bin.display());
    let mut cmd = std::process::Command::new(bin);
    cmd.env("KUBECONFIG", kubeconfig())
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("parley-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("parley-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("parley-helm/data"),
        );
    cmd
}

/// Runs a tool to success and returns its standard output.
fn run_tool(name: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    use std::io::Write as _;
    let mut child = k8s_tool(name)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `examples/chatcluster.yaml` (Secrets, a ConfigMap, a ChatCluster, two ChatShards) is
/// accepted by the API server with the CRDs applied: a server-side dry run with strict field
/// validation, so a field the CRD does not know fails too.
#[tokio::test]
async fn the_sample_passes_a_strict_server_side_dry_run() {
    let client = client().await;
    apply_crds(&client).await;
    let ns = format!("sample-{}", std::process::id());
    create_namespace(&client, &ns).await;
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/chatcluster.yaml");
    let dry = run_tool(
        "kubectl",
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            &ns,
            "-f",
            sample.to_str().unwrap(),
        ],
        None,
    );
    let accepted: Vec<&str> = dry
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .collect();
    assert_eq!(accepted.len(), 10, "{dry}");
    for want in [
        "chatcluster.parley.dev/chat created",
        "chatshard.parley.dev/chat-a created",
        "chatshard.parley.dev/chat-b created",
        "secret/chat-jwt created",
        "configmap/chat-words created",
    ] {
        assert!(dry.contains(want), "{want} in {dry}");
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// The API server refuses a ChatCluster whose URLs carry credentials (user-info or a
/// password parameter), naming the field and where credentials go; the same spec without
/// them is accepted (server-side dry runs).
#[tokio::test]
async fn a_chat_cluster_with_credentials_in_a_url_is_refused() {
    let client = client().await;
    apply_crds(&client).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), "default");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let with = |pointer: &str, value: &str| {
        let mut c = serde_json::to_value(cluster("creds", 1)).unwrap();
        *c.pointer_mut(pointer).unwrap() = value.into();
        serde_json::from_value::<ChatCluster>(c).unwrap()
    };
    let plain = clusters.create(&dry, &cluster("creds", 1)).await;
    assert!(plain.is_ok(), "{plain:?}");
    for (pointer, value, field) in [
        (
            "/spec/redis/url",
            "redis://:pw@redis:6379",
            "spec.redis.url",
        ),
        (
            "/spec/redis/url",
            "redis://user:pw@redis:6379",
            "spec.redis.url",
        ),
        (
            "/spec/redis/url",
            "redis://redis:6379/0?password=pw",
            "spec.redis.url",
        ),
        (
            "/spec/media/endpoint",
            "http://key:secret@minio:9000",
            "spec.media.endpoint",
        ),
        (
            "/spec/kafka/bootstrapServers",
            "user:pw@kafka:9092",
            "spec.kafka.bootstrapServers",
        ),
    ] {
        match clusters.create(&dry, &with(pointer, value)).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{value}: {e:?}");
                assert!(
                    e.message.contains(field) && e.message.contains("Secret"),
                    "{value}: {}",
                    e.message
                );
            }
            other => panic!("{field} = {value} was not refused: {other:?}"),
        }
    }
}

/// The chart's values are checked by its schema, and `serviceMonitor.enabled` renders a
/// ServiceMonitor (template only: the Prometheus Operator's CRD is not installed here).
#[test]
fn the_chart_checks_its_values_and_renders_a_service_monitor_on_request() {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/parley-operator");
    let chart = chart.to_str().unwrap();
    let on = "serviceMonitor.enabled=true";
    let lint = run_tool("helm", &["lint", "--strict", chart, "--set", on], None);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let kinds = |rendered: &str| -> Vec<String> {
        rendered
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .map(str::to_owned)
            .collect()
    };
    let plain = run_tool("helm", &["template", "po", chart, "-n", "ops"], None);
    assert!(
        !kinds(&plain).contains(&"ServiceMonitor".to_owned()),
        "off by default"
    );
    assert!(
        kinds(&plain).contains(&"Service".to_owned()),
        "a metrics Service"
    );
    // `--set` makes `true` a boolean; label and toleration values come out as strings.
    let scheduling = [
        "--set",
        "nodeSelector.parley\\.dev/real-node=true",
        "--set",
        "tolerations[0].key=parley.dev/real-node,tolerations[0].operator=Equal,\
         tolerations[0].value=true,tolerations[0].effect=NoSchedule",
    ];
    // A numeric tag or annotation value (`--set` makes them numbers) renders as a string.
    let numeric = run_tool(
        "helm",
        &[
            "template",
            "po",
            chart,
            "-n",
            "ops",
            "--set",
            "image.tag=20240101",
            "--set",
            "podAnnotations.prometheus\\.io/port=8080",
        ],
        None,
    );
    for want in ["parley/operator:20240101\"", "prometheus.io/port: \"8080\""] {
        assert!(numeric.contains(want), "{want} in:\n{numeric}");
    }
    let mut args = vec!["template", "po", chart, "-n", "ops"];
    args.extend(scheduling);
    let scheduled = run_tool("helm", &args, None);
    args.extend([
        "--set",
        on,
        "--set",
        "serviceMonitor.labels.release=prometheus",
    ]);
    let with = run_tool("helm", &args, None);
    assert!(
        kinds(&with).contains(&"ServiceMonitor".to_owned()),
        "{with}"
    );
    for want in [
        "apiVersion: monitoring.coreos.com/v1",
        "release: \"prometheus\"",
        "- port: metrics",
        "\"parley.dev/real-node\": \"true\"",
        "- {key: \"parley.dev/real-node\", operator: \"Equal\", value: \"true\", effect: \"NoSchedule\"}",
    ] {
        assert!(with.contains(want), "{want} in:\n{with}");
    }
    // The API server accepts the scheduled Deployment (strict: no field it does not know).
    let dry = run_tool(
        "kubectl",
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            "default",
            "-f",
            "-",
        ],
        Some(scheduled.as_bytes()),
    );
    assert!(
        dry.contains("deployment.apps/po created (server dry run)"),
        "{dry}"
    );
    // A value of the wrong type, or one the chart does not know, fails citing the schema.
    for bad in [
        "replicas=notanumber",
        "replica=3",
        "image.pullPolicy=Sometimes",
    ] {
        let out = k8s_tool("helm")
            .args(["template", "po", chart, "--set", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{bad}: {stderr}"
        );
    }
    let out = k8s_tool("helm")
        .args(["template", "po", chart, "--set", "replicas=notanumber"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at '/replicas': got string, want integer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The chart's RBAC objects, rendered with `helm template` in namespace `ops` and `sets`.
fn rendered_rbac(sets: &[&str]) -> Vec<serde_json::Value> {
    use serde::Deserialize as _;
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/parley-operator");
    let mut args = vec!["template", "po", chart.to_str().unwrap(), "-n", "ops"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let text = run_tool("helm", &args, None);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|o| {
            ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
                .contains(&o["kind"].as_str().unwrap_or_default())
        })
        .collect()
}

/// `(kind, namespace, api group, resource, verb)` for every rule of every (Cluster)Role.
fn grants(objects: &[serde_json::Value]) -> Vec<(String, String, String, String, String)> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap();
        if !kind.ends_with("Role") {
            continue;
        }
        let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
        for rule in o["rules"].as_array().unwrap() {
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        out.push((kind.into(), ns.into(), g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

/// The chart never grants list or watch on Secrets (the operator reads the ones a
/// ChatCluster names, by name), and with `watchNamespace` its permissions on namespaced
/// objects are a Role in that namespace; cluster-wide it keeps only reading ChatClusters
/// (worker-ID ranges are disjoint across namespaces). The leader Lease is the release
/// namespace's alone.
#[test]
fn the_chart_grants_namespaced_rbac_with_watch_namespace_and_never_lists_secrets() {
    for sets in [&[][..], &["watchNamespace=team-a"][..]] {
        let g = grants(&rendered_rbac(sets));
        assert!(!g.is_empty(), "{sets:?}: no RBAC rendered");
        for (kind, ns, group, resource, verb) in &g {
            assert!(
                !(group.is_empty()
                    && ["secrets", "*"].contains(&resource.as_str())
                    && ["list", "watch", "deletecollection", "*"].contains(&verb.as_str())),
                "{sets:?}: {kind} {ns} grants {verb} on {resource}"
            );
            if resource == "leases" {
                // A Role without a namespace of its own: the release's.
                assert_eq!((kind.as_str(), ns.as_str()), ("Role", ""), "{sets:?}");
            }
        }
        let secrets: std::collections::BTreeSet<&str> = g
            .iter()
            .filter(|(_, _, group, r, _)| group.is_empty() && r == "secrets")
            .map(|(.., v)| v.as_str())
            .collect();
        assert_eq!(
            secrets,
            ["create", "get", "patch"].into(),
            "{sets:?}: what the operator does with Secrets"
        );
    }

    let objects = rendered_rbac(&["watchNamespace=team-a"]);
    let g = grants(&objects);
    let cluster_wide: Vec<_> = g.iter().filter(|(k, ..)| k == "ClusterRole").collect();
    for (_, _, group, resource, verb) in &cluster_wide {
        assert!(
            group == "parley.dev"
                && resource == "chatclusters"
                && ["get", "list"].contains(&verb.as_str()),
            "with watchNamespace the ClusterRole grants {verb} on {group}/{resource}"
        );
    }
    for want in ["secrets", "statefulsets", "pods", "roles", "chatshards"] {
        assert!(
            g.iter()
                .any(|(k, ns, _, r, _)| k == "Role" && ns == "team-a" && r == want),
            "a Role in team-a grants {want}: {g:?}"
        );
    }
    // Each Role is bound to the operator's ServiceAccount in its own namespace.
    for role in objects.iter().filter(|o| o["kind"] == "Role") {
        let ns = &role["metadata"]["namespace"];
        assert!(
            objects.iter().any(|b| b["kind"] == "RoleBinding"
                && &b["metadata"]["namespace"] == ns
                && b["roleRef"]["name"] == role["metadata"]["name"]
                && b["subjects"][0]["name"] == "po"
                && b["subjects"][0]["namespace"] == "ops"),
            "no RoleBinding for {role}"
        );
    }
}

/// The Helm chart lints, renders objects the API server accepts, installs, and its RBAC is
/// all an operator needs: an operator acting as the chart's ServiceAccount brings a
/// ChatCluster to Ready. Uninstalling removes the operator and keeps the CRDs.
#[tokio::test]
async fn the_helm_chart_installs_an_operator_whose_rbac_suffices() {
    let client = client().await;
    apply_crds(&client).await;
    let ns = format!("chart-{}", std::process::id());
    let release = format!("po-{}", std::process::id());
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/parley-operator");
    let chart = chart.to_str().unwrap();
    create_namespace(&client, &ns).await;

    let lint = run_tool("helm", &["lint", "--strict", chart], None);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let set_watch = format!("watchNamespace={ns}");
    let rendered = run_tool(
        "helm",
        &["template", &release, chart, "-n", &ns, "--set", &set_watch],
        None,
    );
    let dry = run_tool(
        "kubectl",
        &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
        Some(rendered.as_bytes()),
    );
    assert_eq!(
        dry.lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count(),
        // ServiceAccount, ClusterRole and binding (ChatClusters, for worker IDs), the watched
        // namespace's Role and binding, the Lease's Role and binding, Deployment, Service.
        9,
        "{dry}"
    );
    run_tool(
        "helm",
        &[
            "install",
            &release,
            chart,
            "-n",
            &ns,
            "--set",
            &set_watch,
            "--wait",
            "--timeout",
            "90s",
        ],
        None,
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments.get(&release).await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    assert_eq!(
        d.status.unwrap().ready_replicas,
        Some(2),
        "kwok runs both pods"
    );

    // An operator with exactly the chart's permissions (impersonating its ServiceAccount).
    let admin = std::fs::read_to_string(kubeconfig()).unwrap();
    let as_sa = admin.replacen(
        "  user:\n",
        &format!("  user:\n    as: system:serviceaccount:{ns}:{release}\n"),
        1,
    );
    assert_ne!(
        admin, as_sa,
        "the admin kubeconfig has a user to impersonate with"
    );
    let path = std::env::temp_dir().join(format!("parley-{release}.kubeconfig"));
    std::fs::write(&path, as_sa).unwrap();
    cluster_secrets(&client, &ns, &[("omega-a", "postgres://a")]).await;
    let _operator = start_operator_as(&ns, "chart-operator", &path, &release).await;
    let clusters: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("omega", 1))
        .await
        .unwrap();
    Api::<ChatShard>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &shard("omega-a", "omega", "0-4095"))
        .await
        .unwrap();
    eventually(120, "omega to be Ready under the chart's RBAC", || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get("omega").await.ok()?;
            (condition(&c, "Ready")?.0 == "True").then_some(())
        }
    })
    .await;

    // The operator's identity reads Secrets only by name and only in the watched namespace.
    let kc = Kubeconfig::read_from(&path).unwrap();
    let as_operator = Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let forbidden =
        |r: Result<(), kube::Error>| matches!(&r, Err(kube::Error::Api(e)) if e.code == 403);
    let here: Api<Secret> = Api::namespaced(as_operator.clone(), &ns);
    assert!(
        here.get("omega-a-db").await.is_ok(),
        "the operator reads a named Secret"
    );
    let listed = here.list(&Default::default()).await.map(|_| ());
    assert!(
        forbidden(listed),
        "the operator may list the Secrets of {ns}"
    );
    let everywhere: Api<Secret> = Api::all(as_operator.clone());
    let listed = everywhere.list(&Default::default()).await.map(|_| ());
    assert!(
        forbidden(listed),
        "the operator may list every Secret of the cluster"
    );
    let elsewhere: Api<Secret> = Api::namespaced(as_operator.clone(), "default");
    let read = elsewhere.get_opt("anything").await.map(|_| ());
    assert!(
        forbidden(read),
        "the operator may read Secrets outside {ns}"
    );

    // The chat-nodes' own identity may watch their ChatCluster the way they do (a field
    // selector on the name), and nothing else.
    let node_config = admin.replacen(
        "  user:\n",
        &format!("  user:\n    as: system:serviceaccount:{ns}:omega-node\n"),
        1,
    );
    let node_path = std::env::temp_dir().join(format!("parley-{release}-node.kubeconfig"));
    std::fs::write(&node_path, node_config).unwrap();
    let kc = Kubeconfig::read_from(&node_path).unwrap();
    let node_client = Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let _ = std::fs::remove_file(&node_path);
    let as_node: Api<ChatCluster> = Api::namespaced(node_client, &ns);
    let own = as_node
        .list(&kube::api::ListParams::default().fields("metadata.name=omega"))
        .await
        .unwrap();
    assert_eq!(own.items.len(), 1);
    assert!(own.items[0].status.as_ref().unwrap().ring.is_some());
    let all = as_node.list(&kube::api::ListParams::default()).await;
    assert!(
        matches!(&all, Err(kube::Error::Api(e)) if e.code == 403),
        "a chat-node may list every ChatCluster: {all:?}"
    );

    run_tool("helm", &["uninstall", &release, "-n", &ns, "--wait"], None);
    assert!(deployments.get_opt(&release).await.unwrap().is_none());
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(
        crds.get_opt("chatclusters.parley.dev")
            .await
            .unwrap()
            .is_some(),
        "the CRDs stay"
    );
    let _ = std::fs::remove_file(&path);
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}
