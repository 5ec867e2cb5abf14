//! Running the operator: metrics, leader election, both controllers.
//!
//! ```text
//!   run ──► serve_metrics (/healthz, /metrics) ──► lead (Lease) ──► cluster_controller
//!                                                                 └► shard_controller
//!        ends on a signal (the Lease released) or when the Lease is lost (an error)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Config;
use kube::{Api, Client, ResourceExt};
use parley_crd::resources::{ChatCluster, ChatShard};

use crate::controller::{Context, cluster, shard};
use crate::leader::Elector;
use crate::metrics::Metrics;
use crate::resources::MANAGER;
use crate::resources::names::{COMPONENT_LABEL, Component, INSTANCE_LABEL, MANAGED_BY_LABEL};

/// Operator settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "parley-operator", version, about = "Parley operator")]
pub struct Args {
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "PARLEY_OPERATOR_METRICS", default_value = "0.0.0.0:8080")]
    pub metrics: SocketAddr,
    /// Namespace of the leader Lease (the operator's own). Default: the namespace of the
    /// kubeconfig's current context (`default` when it names none), or in a pod its service
    /// account's. It must exist: the operator exits when it does not.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "PARLEY_OPERATOR_LEASE", default_value = "parley-operator")]
    pub lease_name: String,
    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "parley-operator")]
    pub identity: String,
    /// Reconcile only the ChatClusters and ChatShards of this namespace (all namespaces when
    /// unset). Worker-ID ranges stay disjoint across every namespace either way.
    #[arg(long, env = "PARLEY_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
}

/// `K` in the watched namespace, or in all of them.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Serves metrics, waits to lead, then reconciles until the lease is lost or a signal comes.
/// Fails at once when the Lease's namespace does not exist ([`crate::leader::ElectionError`]).
pub async fn run(args: Args) -> anyhow::Result<()> {
    // Built together with chat-node, rustls gets both aws-lc-rs and ring: name the provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    serve_metrics(args.metrics, metrics.clone()).await?;
    let elector = lead(&client, &args).await?;
    metrics.leader.set(1);
    tracing::info!("leading: reconciling ChatClusters and ChatShards");

    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        &args.identity,
    ));
    let watch = args.watch_namespace.as_deref();
    let clusters = cluster_controller(&client, watch, ctx.clone());
    let shards = shard_controller(&client, watch, ctx);
    tokio::select! {
        _ = futures_util::future::join(clusters, shards) => {
            // A signal stopped both controllers: hand the lease over now.
            metrics.leader.set(0);
            if let Err(e) = elector.release().await {
                tracing::warn!("releasing the leader lease: {e}");
            }
            tracing::info!("stopped; the leader lease is released");
            Ok(())
        }
        () = elector.hold() => {
            metrics.leader.set(0);
            anyhow::bail!("lost the leader lease; exiting so another replica leads")
        }
    }
}

/// Binds `addr` and serves `/healthz` and `/metrics` on a task.
async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move { m.render() }
                }),
            );
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

/// Waits until this replica holds the leader Lease; its elector, to hold and release it.
async fn lead(client: &Client, args: &Args) -> Result<Elector, crate::leader::ElectionError> {
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let elector = Elector::new(
        Api::<Lease>::namespaced(client.clone(), &lease_namespace),
        &args.lease_name,
        &args.identity,
        Duration::from_secs(15),
    );
    tracing::info!(
        identity = %args.identity,
        lease = %format!("{lease_namespace}/{}", args.lease_name),
        "waiting for the leader lease"
    );
    elector.acquire().await?;
    Ok(elector)
}

/// The ChatCluster controller: it owns the StatefulSets, Deployments and Jobs it applies,
/// and a ChatShard or chat-node Pod that changes brings its cluster back.
fn cluster_controller(
    client: &Client,
    watch: Option<&str>,
    ctx: Arc<Context>,
) -> impl Future<Output = ()> + use<> {
    let node_pods = format!(
        "{MANAGED_BY_LABEL}={MANAGER},{COMPONENT_LABEL}={}",
        Component::Node
    );
    Controller::new(scoped::<ChatCluster>(client, watch), Config::default())
        .owns(scoped::<StatefulSet>(client, watch), Config::default())
        .owns(scoped::<Deployment>(client, watch), Config::default())
        .owns(scoped::<Job>(client, watch), Config::default())
        .watches(
            scoped::<ChatShard>(client, watch),
            Config::default(),
            |s: ChatShard| Some(ObjectRef::new(&s.spec.cluster_ref.name).within(&s.namespace()?)),
        )
        .watches(
            scoped::<Pod>(client, watch),
            Config::default().labels(&node_pods),
            |p: Pod| {
                let cluster = p.labels().get(INSTANCE_LABEL)?.clone();
                Some(ObjectRef::new(&cluster).within(&p.namespace()?))
            },
        )
        .shutdown_on_signal()
        .run(cluster::reconcile, cluster::error_policy, ctx)
        .for_each(|_| async {})
}

/// The ChatShard controller: a migration Job's progress decides its shards' Ready.
fn shard_controller(
    client: &Client,
    watch: Option<&str>,
    ctx: Arc<Context>,
) -> impl Future<Output = ()> + use<> {
    let migrations = format!("{COMPONENT_LABEL}={}", Component::Migrate);
    Controller::new(scoped::<ChatShard>(client, watch), Config::default())
        .watches(
            scoped::<Job>(client, watch),
            Config::default().labels(&migrations),
            |j: Job| {
                let ns = j.namespace().unwrap_or_default();
                crate::status::migrated_shards(&j)
                    .map(|s| ObjectRef::<ChatShard>::new(s).within(&ns))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(shard::reconcile, shard::error_policy, ctx)
        .for_each(|_| async {})
}
