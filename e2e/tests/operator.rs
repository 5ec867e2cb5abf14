//! The operator against a real kube-apiserver (`dev/k8s up`): CRDs applied, a ChatCluster and
//! two ChatShards reconciled into every object with owner references, Ready status, scaling,
//! a bad spec reported as Degraded, disjoint worker IDs, and garbage collection.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
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

async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in operator::crds::all() {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("parley-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    for (_, crd) in operator::crds::all() {
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

/// The operator process; killed when dropped.
struct Operator(#[allow(dead_code)] tokio::process::Child);

async fn start_operator(ns: &str) -> Operator {
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
    let child = tokio::process::Command::new(bin)
        .env("KUBECONFIG", kubeconfig())
        .env("POD_NAMESPACE", ns)
        .env("POD_NAME", "operator-under-test")
        .env("PARLEY_OPERATOR_METRICS", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info,kube=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Operator(child)
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
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for s in [
        secret("directory", &[("url", "postgres://dir")]),
        secret("s3", &[("accessKeyId", "k"), ("secretAccessKey", "s")]),
        secret("alpha-a-db", &[("url", "postgres://a")]),
        secret("alpha-b-db", &[("url", "postgres://b")]),
    ] {
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
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

    // A second cluster gets a disjoint worker-ID range.
    clusters
        .create(&PostParams::default(), &cluster("beta", 2))
        .await
        .unwrap();
    let beta = eventually(60, "beta's worker IDs", || {
        let clusters = clusters.clone();
        async move { clusters.get("beta").await.ok()?.status?.worker_id_range }
    })
    .await;
    assert!(
        beta.base >= range.base + range.size || beta.base + beta.size <= range.base,
        "{range:?} vs {beta:?}"
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
    dry_run!(ConfigMap, r::config(&c, &decided));
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
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}
