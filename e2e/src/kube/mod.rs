//! The end-to-end scenario on a real Kubernetes cluster, shared by the real-node test
//! (`e2e/tests/real_node.rs`, against `dev/k8s up --real-node`, `dev/images`, `dev/edge`)
//! and the `parley-e2e-kube` binary (`e2e/kind/run`, against a kind cluster).
//!
//! ```text
//!   1 install   namespace, the chart's CRDs (server-side apply), `helm install` of the
//!               operator chart (its image, a pod with leader election): Deployment
//!               available, Lease held
//!   2 apply     examples/chatcluster.yaml, patched (backends, images, scheduling, ingress,
//!               the trusted proxies on the real node, a unique topic prefix)
//!   3 ready     the ChatCluster Ready; the migration Job's pod exited 0; chat-node and
//!               persister pods Running with every container started and ready
//!   4 chat      through the edge only: two users on different chat-node pods chat, page
//!               history, resume after a reconnect
//!   5 churn     with traffic flowing (senders every ~100 ms, listeners): delete a chat-node
//!               pod, scale 2→3→2, add a ChatShard taking half a shard's slots, restart the
//!               StatefulSet (peak reconnects per second measured)
//!   6 verify    every acknowledged message in history exactly once, seqs gapless,
//!               received by the other clients; one summary line
//!   cleanup     ChatCluster, helm uninstall, namespace (also on failure; `--keep` skips it)
//! ```
//! Every wait is bounded and says what it saw when it gives up.

pub mod backends;
pub mod edge;
pub mod k8s;
pub mod sample;
pub mod traffic;

mod options;

pub use self::options::{
    Options, REAL_NODE_PROXIES, Until, parse_toleration, split_image, unique_suffix,
};

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::watch;

use self::edge::{Edge, Frame, Socket, User};
use self::traffic::{Acked, Ledger, Phase, SharedLedger};

/// Field manager of the scenario's server-side applies.
const MANAGER: &str = "parley-e2e";
/// The ChatCluster CRD's name.
const CLUSTER_CRD: &str = "chatclusters.parley.dev";
/// How long one WebSocket step may wait for a frame.
const FRAME_WAIT: Duration = Duration::from_secs(15);

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The run's namespace.
    pub namespace: String,
    /// Seconds each step took, in order.
    pub steps: Vec<(String, f64)>,
    /// Messages acknowledged (chat step and traffic).
    pub acked: usize,
    /// Acknowledged messages missing from history (the run fails unless 0).
    pub lost: usize,
    /// Connections the traffic clients saw end.
    pub disconnects: usize,
    /// Of those, the ones announced with a `reconnect` event (drain).
    pub drained: usize,
    /// Most disconnects within one second during the StatefulSet's rollout.
    pub peak_reconnects_per_s_rollout: usize,
    /// The same during the other steps (pod deletion, scaling, the new shard).
    pub peak_reconnects_per_s_other: usize,
    /// `error` replies to sends, by code (each was retried).
    pub send_errors: BTreeMap<String, u64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "parley-e2e-kube: namespace={} acked={} lost={} disconnects={} (announced with reconnect: {}) peak_reconnects_per_s: rollout={} other_steps={} send_errors={:?} steps:",
            self.namespace,
            self.acked,
            self.lost,
            self.disconnects,
            self.drained,
            self.peak_reconnects_per_s_rollout,
            self.peak_reconnects_per_s_other,
            self.send_errors
        )?;
        for (name, secs) in &self.steps {
            write!(f, " {name}={secs:.1}s")?;
        }
        Ok(())
    }
}

fn log(msg: impl std::fmt::Display) {
    println!("[parley-e2e-kube] {msg}");
}

/// Aborts its tasks when dropped (a failed run leaves no client behind).
#[derive(Debug, Default)]
struct Tasks(Vec<tokio::task::JoinHandle<Result<()>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// One run against one cluster.
struct Run<'a> {
    o: &'a Options,
    client: Client,
    ns: String,
    release: String,
    unique: String,
    /// The Ingress host of this run.
    host: String,
    summary: Summary,
    /// Whether this run created the CRDs (and so removes them when nothing else uses them).
    created_crds: bool,
    installed: bool,
    cluster_name: String,
}

/// Runs the scenario and cleans up after it (unless `--keep`), whatever happened.
pub async fn run(o: &Options) -> Result<Summary> {
    let client = k8s::client(&o.kubeconfig).await?;
    let unique = unique_suffix();
    let mut run = Run {
        o,
        client,
        ns: format!("{}-{unique}", o.namespace_prefix),
        release: format!("pe2e-{unique}"),
        host: if o.host.is_empty() {
            format!("chat-{unique}.parley.localhost")
        } else {
            o.host.clone()
        },
        unique,
        summary: Summary::default(),
        created_crds: false,
        installed: false,
        cluster_name: String::new(),
    };
    run.summary.namespace = run.ns.clone();
    // A panic in a step must not skip the cleanup.
    let result = match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        run.steps(),
    ))
    .await
    {
        Ok(r) => r,
        Err(panic) => Err(anyhow!(
            "a step panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or(panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    };
    if let Err(e) = &result {
        log(format_args!("FAILED: {e:#}"));
        log(format_args!(
            "pods of {}:\n{}",
            run.ns,
            k8s::pods_report(&run.client, &run.ns, None).await
        ));
        log(format_args!(
            "events of {}:\n{}",
            run.ns,
            k8s::events_report(&run.client, &run.ns, 30).await
        ));
    }
    if o.keep {
        log(format_args!(
            "--keep: namespace {ns} and release {rel} stay; to remove them: \
             helm uninstall {rel} -n {ns} && kubectl delete namespace {ns} \
             (the release's ClusterRole and ClusterRoleBinding go with the uninstall)",
            ns = run.ns,
            rel = run.release
        ));
    } else if let Err(e) = run.cleanup().await {
        log(format_args!("cleanup incomplete: {e:#}"));
        if result.is_ok() {
            return Err(e.context("cleanup"));
        }
    }
    result.map(|()| run.summary)
}

impl Run<'_> {
    fn limit(&self) -> Duration {
        Duration::from_secs(self.o.wait_secs)
    }

    fn step(&mut self, name: &str, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        log(format_args!("step {name} done in {secs:.1}s"));
        self.summary.steps.push((name.to_owned(), secs));
    }

    async fn steps(&mut self) -> Result<()> {
        let backends = backends::Backends::load(&self.o.backends)?;
        let t = Instant::now();
        self.install()
            .await
            .context("step 1 (install the operator)")?;
        self.step("install", t);
        if self.o.until == Until::Install {
            return Ok(());
        }
        let t = Instant::now();
        let sample = self
            .apply_sample(&backends)
            .await
            .context("step 2 (apply the sample)")?;
        self.step("apply", t);
        let t = Instant::now();
        self.ready(&sample).await.context("step 3 (Ready)")?;
        self.step("ready", t);
        if self.o.until == Until::Ready {
            return Ok(());
        }
        let edge = Edge::new(&self.o.edge_url, Some(&self.host))?;
        let t = Instant::now();
        let chat = chat(&edge, &self.unique, self.limit())
            .await
            .context("step 4 (chat through the edge)")?;
        self.step("chat", t);
        if self.o.until == Until::Chat {
            return Ok(());
        }
        self.churn(&edge, &sample, &backends, chat)
            .await
            .context("step 5/6 (churn under traffic, verify)")
    }

    // ----- 1: install -------------------------------------------------------------------

    async fn install(&mut self) -> Result<()> {
        let ns = self.ns.clone();
        log(format_args!(
            "namespace {ns}, release {}, operator image {}, node image {}, ingress host {}",
            self.release, self.o.operator_image, self.o.node_image, self.host
        ));
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut meta = kube::api::ObjectMeta {
            name: Some(ns.clone()),
            ..Default::default()
        };
        meta.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/part-of".to_owned(),
            "parley-e2e".to_owned(),
        )]));
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: meta,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating namespace {ns}"))?;

        // The chart's CRDs, applied as an upgrade would (helm installs them only when absent).
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        self.created_crds = crds.get_opt(CLUSTER_CRD).await?.is_none();
        let crd_dir = self.o.chart.join("crds");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&crd_dir)
            .with_context(|| format!("cannot read {}", crd_dir.display()))?
        {
            let path = entry?.path();
            if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for doc in sample::parse_documents(&text)? {
                let crd: CustomResourceDefinition = serde_json::from_value(doc)
                    .with_context(|| format!("{} is not a CRD", path.display()))?;
                let name = crd.name_any();
                crds.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("applying CRD {name}"))?;
                names.push(name);
            }
        }
        for name in &names {
            let crds = crds.clone();
            k8s::wait_for(
                &format!("CRD {name} to be established"),
                Duration::from_secs(60),
                Duration::from_millis(300),
                || {
                    let crds = crds.clone();
                    async move {
                        let c = crds.get(name).await?;
                        let ok = c.status.and_then(|s| s.conditions).is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        });
                        Ok(ok.then_some(()))
                    }
                },
            )
            .await?;
        }

        let values = self.o.chart_values(&ns)?;
        let values_file =
            std::env::temp_dir().join(format!("parley-e2e-{}-values.json", self.unique));
        std::fs::write(&values_file, values.to_string())?;
        let chart = self.o.chart.to_string_lossy().into_owned();
        let vf = values_file.to_string_lossy().into_owned();
        let out = k8s::helm(
            &self.o.helm,
            &self.o.kubeconfig,
            &[
                "install",
                &self.release,
                &chart,
                "-n",
                &ns,
                "-f",
                &vf,
                "--timeout",
                "120s",
            ],
            Duration::from_secs(180),
        )
        .await;
        let _ = std::fs::remove_file(&values_file);
        out?;
        self.installed = true;

        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let selector = format!("app.kubernetes.io/instance={}", self.release);
        let release = self.release.clone();
        let client = self.client.clone();
        let waited = k8s::wait_for(
            "the operator Deployment to be available",
            self.limit(),
            Duration::from_secs(1),
            || {
                let deployments = deployments.clone();
                let release = release.clone();
                let client = client.clone();
                let ns = ns.clone();
                let selector = selector.clone();
                async move {
                    let d = deployments.get(&release).await?;
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let st = d.status.clone().unwrap_or_default();
                    let available = st
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Available" && c.status == "True");
                    if available && st.available_replicas.unwrap_or(0) >= want {
                        return Ok(Some(()));
                    }
                    Err(anyhow!(
                        "{} of {want} available\n{}",
                        st.available_replicas.unwrap_or(0),
                        k8s::pods_report(&client, &ns, Some(&selector)).await
                    ))
                }
            },
        )
        .await;
        waited?;

        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        let release = self.release.clone();
        let holder = k8s::wait_for(
            "the operator's Lease to have a holder",
            Duration::from_secs(120),
            Duration::from_secs(1),
            || {
                let leases = leases.clone();
                let release = release.clone();
                async move {
                    let l = leases.get_opt(&release).await?;
                    let holder = l
                        .and_then(|l| l.spec)
                        .and_then(|s| s.holder_identity)
                        .filter(|h| !h.is_empty());
                    Ok(holder)
                }
            },
        )
        .await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let operator_pods = pods
            .list(
                &ListParams::default()
                    .labels(&format!("app.kubernetes.io/instance={}", self.release)),
            )
            .await?;
        ensure!(
            operator_pods.items.iter().any(|p| p.name_any() == holder),
            "the Lease holder {holder} is none of the operator's pods: {:?}",
            operator_pods
                .items
                .iter()
                .map(|p| p.name_any())
                .collect::<Vec<_>>()
        );
        log(format_args!("operator installed; leader {holder}"));
        Ok(())
    }

    // ----- 2: apply the sample ----------------------------------------------------------

    async fn apply_sample(&mut self, b: &backends::Backends) -> Result<sample::Sample> {
        let text = std::fs::read_to_string(&self.o.sample)
            .with_context(|| format!("cannot read the sample {}", self.o.sample.display()))?;
        let docs = sample::parse_documents(&text)
            .with_context(|| format!("{} is not YAML", self.o.sample.display()))?;
        let (node_selector, tolerations) = self.o.scheduling()?;
        let patch = sample::Patch {
            namespace: self.ns.clone(),
            backends: b.clone(),
            node_image: self.o.node_image.clone(),
            pull_policy: self.o.pull_policy.clone(),
            node_selector,
            tolerations,
            ingress_host: self.host.clone(),
            ingress_class: self.o.ingress_class.clone(),
            trusted_proxies: self.o.trusted_proxies(),
            topic_prefix: format!("e2e-{}", self.unique),
            partitions: 6,
            replicas: 2,
            persisters: 1,
            jwt_secret: format!("jwt-{}-{}", self.unique, "0123456789abcdef0123456789abcdef"),
        };
        let s = sample::patch(docs, &patch)?;
        self.cluster_name = sample::name_of(&s.cluster).to_owned();
        for obj in s
            .support
            .iter()
            .chain(std::iter::once(&s.cluster))
            .chain(&s.shards)
        {
            self.apply(obj).await?;
        }
        log(format_args!(
            "applied {} objects of {}: ChatCluster {} with shards {:?}",
            s.support.len() + 1 + s.shards.len(),
            self.o.sample.display(),
            self.cluster_name,
            s.shards.iter().map(sample::name_of).collect::<Vec<_>>()
        ));
        Ok(s)
    }

    async fn apply(&self, obj: &Value) -> Result<()> {
        let ar = k8s::resource_of(obj)?;
        let name = sample::name_of(obj).to_owned();
        k8s::dynamic(&self.client, &self.ns, &ar)
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .with_context(|| format!("applying {} {name}", ar.kind))?;
        Ok(())
    }

    fn clusters(&self) -> Api<kube::api::DynamicObject> {
        k8s::dynamic(&self.client, &self.ns, &k8s::parley_resource("ChatCluster"))
    }

    async fn cluster_json(&self) -> Result<Value> {
        let c = self.clusters().get(&self.cluster_name).await?;
        Ok(serde_json::to_value(c)?)
    }

    // ----- 3: Ready ---------------------------------------------------------------------

    /// Waits until the ChatCluster is Ready for its current generation and `extra` holds.
    async fn wait_ready(
        &self,
        what: &str,
        extra: impl Fn(&Value) -> Result<(), String>,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + self.limit();
        let mut last = String::new();
        loop {
            let c = self.cluster_json().await?;
            let generation = c["metadata"]["generation"].as_i64().unwrap_or(0);
            let observed = c["status"]["observedGeneration"].as_i64().unwrap_or(0);
            let ready = k8s::condition(&c, "Ready");
            let state = match (&ready, extra(&c)) {
                (Some((s, _, _)), Ok(())) if s == "True" && observed >= generation => {
                    return Ok(c);
                }
                (_, Err(e)) => e,
                _ => format!("not Ready (generation {generation}, observed {observed})"),
            };
            if state != last {
                log(format_args!("waiting for {what}: {state}"));
                last = state;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out after {:?} waiting for {what}: {last}\nconditions:\n{}\nstatus: {}\npods:\n{}\nevents:\n{}",
                    self.limit(),
                    k8s::conditions_report(&c),
                    c["status"],
                    k8s::pods_report(&self.client, &self.ns, None).await,
                    k8s::events_report(&self.client, &self.ns, 20).await
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn selector(&self, component: &str) -> String {
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.cluster_name
        )
    }

    /// Waits until exactly `n` pods of `component` run with every container started and ready.
    async fn wait_pods(&self, component: &str, n: usize) -> Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let selector = self.selector(component);
        let client = self.client.clone();
        let ns = self.ns.clone();
        k8s::wait_for(
            &format!("{n} {component} pod(s) Running and ready"),
            self.limit(),
            Duration::from_secs(1),
            || {
                let pods = pods.clone();
                let selector = selector.clone();
                let client = client.clone();
                let ns = ns.clone();
                async move {
                    let list = pods.list(&ListParams::default().labels(&selector)).await?;
                    let good =
                        list.items.len() == n && list.items.iter().all(k8s::pod_running_ready);
                    if good {
                        return Ok(Some(list.items));
                    }
                    Err(anyhow!(
                        "{} pods:\n{}",
                        list.items.len(),
                        k8s::pods_report(&client, &ns, Some(&selector)).await
                    ))
                }
            },
        )
        .await
    }

    async fn ready(&mut self, s: &sample::Sample) -> Result<()> {
        let replicas = s.cluster["spec"]["replicas"].as_i64().unwrap_or(2);
        let shards = s.shards.len();
        let c = self
            .wait_ready("the ChatCluster to be Ready", |c| {
                let ready = c["status"]["readyReplicas"].as_i64().unwrap_or(0);
                let in_force = c["status"]["shards"].as_array().map_or(0, Vec::len);
                if ready == replicas && in_force == shards {
                    Ok(())
                } else {
                    Err(format!(
                        "{ready}/{replicas} chat-nodes ready, {in_force}/{shards} shards in force"
                    ))
                }
            })
            .await?;
        log(format_args!(
            "ChatCluster Ready: ring {}",
            c["status"]["ring"]
        ));

        // The migration Job really ran: it succeeded with a pod that exited 0.
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.ns);
        let list = jobs
            .list(&ListParams::default().labels(&self.selector("migrate")))
            .await?;
        let done: Vec<&Job> = list
            .items
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1)
            .collect();
        ensure!(
            !done.is_empty(),
            "no migration Job succeeded: {:?}",
            list.items
                .iter()
                .map(|j| (j.name_any(), j.status.clone()))
                .collect::<Vec<_>>()
        );
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let mut ran = Vec::new();
        for j in &done {
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={}", j.name_any())))
                .await?;
            ran.extend(list.items.into_iter().filter(k8s::pod_exited_zero));
        }
        ensure!(
            !ran.is_empty(),
            "the migration Job(s) {:?} succeeded but no pod of theirs shows a container that exited 0:\n{}",
            done.iter().map(|j| j.name_any()).collect::<Vec<_>>(),
            k8s::pods_report(&self.client, &self.ns, Some(&self.selector("migrate"))).await
        );
        log(format_args!(
            "migration ran: pod {} exited 0",
            ran[0].name_any()
        ));
        let nodes = self.wait_pods("chat-node", replicas as usize).await?;
        let persisters = s.cluster["spec"]["persister"]["replicas"]
            .as_u64()
            .unwrap_or(1) as usize;
        let ps = self.wait_pods("persister", persisters).await?;
        log(format_args!(
            "running: {} chat-node pod(s) {:?}, {} persister pod(s)",
            nodes.len(),
            nodes.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ps.len()
        ));
        Ok(())
    }

    // ----- 4: chat through the edge -------------------------------------------------------

    // ----- 5 and 6: churn under traffic, verify -------------------------------------------

    async fn churn(
        &mut self,
        edge: &Edge,
        s: &sample::Sample,
        b: &backends::Backends,
        chat: Chat,
    ) -> Result<()> {
        let t0 = Instant::now();
        let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::default()));
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let every = Duration::from_millis(self.o.send_every_ms);
        let mut tasks = Tasks::default();
        let mut receivers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // Every client resumes after step 4's last message, so one that connects late still
        // gets every traffic message.
        let start_after = chat.acked.iter().map(|m| m.id).max().unwrap_or(0);
        let mut clients = vec![
            traffic::Client {
                name: "a".into(),
                user: chat.a.clone(),
                channel: chat.channel,
                send_every: Some(every),
                resume_after: Some(start_after),
            },
            traffic::Client {
                name: "b".into(),
                user: chat.b.clone(),
                channel: chat.channel,
                send_every: Some(every),
                resume_after: Some(start_after),
            },
        ];
        receivers.insert("a".into(), BTreeSet::from(["b".to_owned()]));
        receivers.insert("b".into(), BTreeSet::from(["a".to_owned()]));
        for i in 0..self.o.listeners {
            let name = format!("l{i}");
            clients.push(traffic::Client {
                name: name.clone(),
                user: if i % 2 == 0 {
                    chat.a.clone()
                } else {
                    chat.b.clone()
                },
                channel: chat.channel,
                send_every: None,
                resume_after: Some(start_after),
            });
            receivers.insert(name, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        }
        let names: Vec<String> = clients.iter().map(|c| c.name.clone()).collect();
        for c in clients {
            tasks.0.push(tokio::spawn(traffic::run(
                edge.clone(),
                c,
                ledger.clone(),
                phase_rx.clone(),
                t0,
            )));
        }
        // Warm up: everyone connected, both senders acknowledged.
        {
            let ledger = ledger.clone();
            let names = names.clone();
            k8s::wait_for(
                "the traffic clients to connect and the senders to get acknowledgements",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || {
                    let l = ledger.clone();
                    let names = names.clone();
                    async move {
                        let l = l.lock();
                        if let Some(f) = l.fatal.first() {
                            bail!("a client failed: {f}");
                        }
                        let connected = names.iter().all(|n| l.nodes.contains_key(n));
                        let acked = |c: &str| l.acked.iter().filter(|a| a.client == c).count();
                        if connected && acked("a") >= 5 && acked("b") >= 5 {
                            return Ok(Some(()));
                        }
                        Err(anyhow!(
                            "connected {:?}, acked a={} b={}",
                            l.nodes,
                            acked("a"),
                            acked("b")
                        ))
                    }
                },
            )
            .await?;
        }
        log(format_args!(
            "traffic flowing: 2 senders every {every:?}, {} listeners",
            self.o.listeners
        ));
        let check_clients = |ledger: &SharedLedger| -> Result<()> {
            let l = ledger.lock();
            if let Some(f) = l.fatal.first() {
                bail!("a traffic client failed: {f}");
            }
            Ok(())
        };
        let mut windows: Vec<(String, Duration, Duration)> = Vec::new();

        // (a) delete the chat-node pod that sender a is on.
        let t = Instant::now();
        let start = t0.elapsed();
        self.delete_node_pod(&ledger)
            .await
            .context("deleting a chat-node pod")?;
        windows.push(("pod_delete".into(), start, t0.elapsed()));
        self.step("pod_delete", t);
        check_clients(&ledger)?;

        // (b) scale 2 → 3 → 2.
        for (n, name) in [(3, "scale_up"), (2, "scale_down")] {
            let t = Instant::now();
            let start = t0.elapsed();
            self.scale(n)
                .await
                .with_context(|| format!("scaling to {n}"))?;
            windows.push((name.into(), start, t0.elapsed()));
            self.step(name, t);
            check_clients(&ledger)?;
        }

        // (c) a third ChatShard takes half of a shard's slots.
        let t = Instant::now();
        let start = t0.elapsed();
        self.add_shard(edge, s, b, &chat)
            .await
            .context("adding a third ChatShard")?;
        windows.push(("add_shard".into(), start, t0.elapsed()));
        self.step("add_shard", t);
        check_clients(&ledger)?;

        // (d) kubectl rollout restart of the StatefulSet.
        let t = Instant::now();
        let start = t0.elapsed();
        self.rollout_restart()
            .await
            .context("restarting the StatefulSet")?;
        // Clients told to come back later are still coming back.
        tokio::time::sleep(Duration::from_secs(5)).await;
        windows.push(("rollout".into(), start, t0.elapsed()));
        self.step("rollout", t);
        check_clients(&ledger)?;

        // 6: stop sending, let everything pending be acknowledged and delivered.
        let t = Instant::now();
        phase_tx.send_replace(Phase::StopSending);
        {
            let ledger = ledger.clone();
            let receivers = receivers.clone();
            k8s::wait_for(
                "every send to be acknowledged and delivered to the other clients",
                Duration::from_secs(120),
                Duration::from_millis(500),
                || {
                    let l = ledger.clone();
                    let receivers = receivers.clone();
                    async move {
                        let l = l.lock();
                        if let Some(f) = l.fatal.first() {
                            bail!("a client failed: {f}");
                        }
                        let pending: usize = l.pending.values().sum();
                        let v = traffic::verify(&l.acked, &[], &l.received, &receivers);
                        let undelivered: usize = v.undelivered.values().map(Vec::len).sum();
                        if pending == 0 && undelivered == 0 {
                            return Ok(Some(()));
                        }
                        Err(anyhow!(
                            "{pending} sends pending, {undelivered} deliveries missing: {:?}",
                            v.undelivered
                                .iter()
                                .map(|(c, m)| (c, m.len()))
                                .collect::<Vec<_>>()
                        ))
                    }
                },
            )
            .await?;
        }
        phase_tx.send_replace(Phase::Finish);
        for task in std::mem::take(&mut tasks.0) {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e.context("a traffic client")),
                Ok(Err(e)) => bail!("a traffic client panicked: {e}"),
                Err(_) => bail!("a traffic client did not finish within 30 s"),
            }
        }
        let history = fetch_history(edge, &chat.a, chat.channel).await?;
        let l = ledger.lock();
        let mut all_acked = chat.acked.clone();
        all_acked.extend(l.acked.iter().cloned());
        let traffic_acked: Vec<Acked> = l.acked.clone();
        let v = traffic::verify(&all_acked, &history, &l.received, &receivers);
        let delivery = traffic::verify(&traffic_acked, &history, &l.received, &receivers);

        // Figures.
        let times = |from: Duration, to: Duration| -> Vec<Duration> {
            l.disconnects
                .iter()
                .filter(|d| d.at >= from && d.at <= to)
                .map(|d| d.at)
                .collect()
        };
        let mut other_peak = 0;
        for (name, from, to) in &windows {
            let ts = times(*from, *to);
            let peak = traffic::peak_per_second(&ts);
            let drained = l
                .disconnects
                .iter()
                .filter(|d| d.at >= *from && d.at <= *to)
                .filter(|d| matches!(d.cause, traffic::Cause::Drained { .. }))
                .count();
            log(format_args!(
                "{name}: {} disconnects ({drained} announced with reconnect), peak {peak} reconnects/s",
                ts.len()
            ));
            if name == "rollout" {
                self.summary.peak_reconnects_per_s_rollout = peak;
            } else {
                other_peak = other_peak.max(peak);
            }
        }
        let codes: BTreeMap<String, usize> =
            l.disconnects.iter().fold(BTreeMap::new(), |mut m, d| {
                let k = match &d.cause {
                    traffic::Cause::Drained { code, .. } => format!("reconnect+{code:?}"),
                    traffic::Cause::Closed(code) => format!("closed {code:?}"),
                    traffic::Cause::Silent => "silent".into(),
                };
                *m.entry(k).or_default() += 1;
                m
            });
        log(format_args!(
            "disconnects by cause: {codes:?}; failed connects {}; resync_required {}",
            l.failed_connects, l.resync_required
        ));
        self.summary.peak_reconnects_per_s_other = other_peak;
        self.summary.acked = all_acked.len();
        self.summary.lost = v.lost.len();
        self.summary.disconnects = l.disconnects.len();
        self.summary.drained = l
            .disconnects
            .iter()
            .filter(|d| matches!(d.cause, traffic::Cause::Drained { .. }))
            .count();
        self.summary.send_errors = l.send_errors.clone();
        let resyncs = l.resync_required;
        drop(l);
        self.step("verify", t);
        ensure!(
            v.ok() && delivery.undelivered.is_empty(),
            "the history of channel {} ({} messages) disagrees with what was acknowledged ({}): lost {:?}, duplicates {:?}, seq problems {:?}, seq mismatch {:?}, undelivered {:?}",
            chat.channel,
            history.len(),
            all_acked.len(),
            v.lost,
            v.duplicates,
            v.seq_problems,
            v.seq_mismatch,
            v.undelivered
        );
        ensure!(resyncs == 0, "clients got {resyncs} resync_required");
        log(format_args!(
            "verified: {} acknowledged messages, each in history once, seqs 1..={} gapless, all delivered",
            all_acked.len(),
            history.len()
        ));
        Ok(())
    }

    async fn ring_epoch(&self) -> Result<i64> {
        Ok(self.cluster_json().await?["status"]["ring"]["epoch"]
            .as_i64()
            .unwrap_or(0))
    }

    async fn delete_node_pod(&mut self, ledger: &SharedLedger) -> Result<()> {
        let pod_name = {
            let l = ledger.lock();
            l.nodes
                .get("a")
                .cloned()
                .context("sender a is on no node")?
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let old = pods
            .get(&pod_name)
            .await
            .with_context(|| format!("sender a's node {pod_name} is not a pod of {}", self.ns))?;
        let old_uid = old.uid().unwrap_or_default();
        let epoch = self.ring_epoch().await?;
        log(format_args!(
            "deleting chat-node pod {pod_name} (ring epoch {epoch})"
        ));
        pods.delete(&pod_name, &DeleteParams::default()).await?;
        let name = pod_name.clone();
        let pods2 = pods.clone();
        k8s::wait_for(
            &format!("the StatefulSet to bring {pod_name} back"),
            self.limit(),
            Duration::from_secs(1),
            || {
                let pods = pods2.clone();
                let name = name.clone();
                let old_uid = old_uid.clone();
                async move {
                    let p = pods.get_opt(&name).await?;
                    match p {
                        Some(p)
                            if p.uid().unwrap_or_default() != old_uid
                                && k8s::pod_running_ready(&p) =>
                        {
                            Ok(Some(()))
                        }
                        Some(p) => Err(anyhow!("{}", k8s::pod_line(&p))),
                        None => Err(anyhow!("{name} is gone")),
                    }
                }
            },
        )
        .await?;
        let c = self
            .wait_ready("the ring to follow the new pod", |c| {
                let ring = &c["status"]["ring"];
                let e = ring["epoch"].as_i64().unwrap_or(0);
                let has = ring["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["name"] == pod_name.as_str()));
                if e > epoch
                    && has
                    && c["status"]["readyReplicas"].as_i64() == c["spec"]["replicas"].as_i64()
                {
                    Ok(())
                } else {
                    Err(format!(
                        "ring epoch {e} (was {epoch}), {pod_name} in it: {has}"
                    ))
                }
            })
            .await?;
        log(format_args!(
            "{pod_name} is back; ring epoch {}",
            c["status"]["ring"]["epoch"]
        ));
        Ok(())
    }

    async fn scale(&mut self, n: i64) -> Result<()> {
        log(format_args!("scaling to {n}"));
        self.clusters()
            .patch(
                &self.cluster_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await?;
        self.wait_ready(&format!("{n} chat-nodes in the ring"), |c| {
            let ready = c["status"]["readyReplicas"].as_i64().unwrap_or(0);
            let members = c["status"]["ring"]["members"]
                .as_array()
                .map_or(0, Vec::len) as i64;
            if ready == n && members == n {
                Ok(())
            } else {
                Err(format!("{ready} ready, {members} in the ring"))
            }
        })
        .await?;
        self.wait_pods("chat-node", n as usize).await?;
        Ok(())
    }

    async fn add_shard(
        &mut self,
        edge: &Edge,
        s: &sample::Sample,
        b: &backends::Backends,
        chat: &Chat,
    ) -> Result<()> {
        // Slots of every channel of the two users: none of them may move (no data moves).
        let mut busy = Vec::new();
        for user in [&chat.a, &chat.b] {
            let r = edge
                .expect(
                    reqwest::Method::GET,
                    "/v1/channels",
                    Some(&user.token),
                    None,
                    200,
                )
                .await?;
            for c in r["channels"].as_array().into_iter().flatten() {
                busy.push(parley_crd::slot_of(edge::id(&c["id"])?));
            }
        }
        let ranges = s
            .shards
            .iter()
            .map(sample::slot_range)
            .collect::<Result<Vec<_>>>()?;
        let split = sample::choose_split(&ranges, &busy).with_context(|| {
            format!("no half of a shard is free of the test's channels (slots {busy:?})")
        })?;
        let donor = &s.shards[split.shard];
        let new_name = format!("{}-c", self.cluster_name);
        let (shard, secret) = sample::third_shard(donor, &new_name, &split, &b.shard_urls[2]);
        log(format_args!(
            "shard {} keeps {}-{}, new shard {new_name} takes {}-{}",
            sample::name_of(donor),
            split.keep.0,
            split.keep.1,
            split.moved.0,
            split.moved.1
        ));
        self.apply(&secret).await?;
        self.apply(&shard).await?;
        let shards = k8s::dynamic(&self.client, &self.ns, &k8s::parley_resource("ChatShard"));
        shards
            .patch(
                sample::name_of(donor),
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"slots": [format!("{}-{}", split.keep.0, split.keep.1)]}}),
                ),
            )
            .await?;
        let new = new_name.clone();
        self.wait_ready("the map in force to have three shards", |c| {
            let map = c["status"]["shards"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = map.iter().all(|s| s["ready"] == true);
            let has_new = map.iter().any(|s| s["name"] == new.as_str());
            if map.len() == 3 && ready && has_new {
                Ok(())
            } else {
                Err(format!("map in force {}", Value::Array(map)))
            }
        })
        .await?;
        // The new shard serves: a channel whose slot moved takes and gives back a message.
        for attempt in 1..=32 {
            let g = edge
                .expect(
                    reqwest::Method::POST,
                    "/v1/channels",
                    Some(&chat.a.token),
                    Some(&json!({"name": format!("e2e-{}-s{attempt}", self.unique)})),
                    201,
                )
                .await?;
            let id = edge::id(&g["id"])?;
            let slot = parley_crd::slot_of(id);
            if !(split.moved.0..=split.moved.1).contains(&slot) {
                continue;
            }
            let m = edge
                .expect(
                    reqwest::Method::POST,
                    &format!("/v1/channels/{id}/messages"),
                    Some(&chat.a.token),
                    Some(&json!({"text": "on the new shard"})),
                    201,
                )
                .await?;
            let r = edge
                .expect(
                    reqwest::Method::GET,
                    &format!("/v1/channels/{id}/messages"),
                    Some(&chat.a.token),
                    None,
                    200,
                )
                .await?;
            let ids = message_ids(&r["messages"])?;
            ensure!(
                ids == [edge::id(&m["id"])?],
                "a channel in slot {slot} (moved to {new_name}) has history {ids:?}"
            );
            log(format_args!(
                "channel {id} (slot {slot}) lives on {new_name}"
            ));
            return Ok(());
        }
        bail!("32 new channels all fell outside the moved slots")
    }

    async fn rollout_restart(&mut self) -> Result<()> {
        let name = format!("{}-node", self.cluster_name);
        let sts: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.ns);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        log(format_args!("rollout restart of StatefulSet {name}"));
        sts.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}})),
        )
        .await?;
        let name2 = name.clone();
        k8s::wait_for(
            &format!("the rollout of {name}"),
            self.limit() * 2,
            Duration::from_secs(1),
            || {
                let sts = sts.clone();
                let name = name2.clone();
                async move {
                    let s = sts.get(&name).await?;
                    let generation = s.metadata.generation.unwrap_or(0);
                    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    let st = s.status.unwrap_or_default();
                    let done = st.observed_generation.unwrap_or(0) >= generation
                        && st.updated_replicas.unwrap_or(0) == want
                        && st.ready_replicas.unwrap_or(0) == want
                        && st.current_revision.is_some()
                        && st.current_revision == st.update_revision;
                    if done {
                        Ok(Some(()))
                    } else {
                        Err(anyhow!(
                            "{} updated, {} ready of {want}; revision {:?} → {:?}",
                            st.updated_replicas.unwrap_or(0),
                            st.ready_replicas.unwrap_or(0),
                            st.current_revision,
                            st.update_revision
                        ))
                    }
                }
            },
        )
        .await?;
        self.wait_ready("the cluster after the rollout", |c| {
            let ready = c["status"]["readyReplicas"].as_i64();
            if ready == c["spec"]["replicas"].as_i64() {
                Ok(())
            } else {
                Err(format!("{ready:?} ready"))
            }
        })
        .await?;
        Ok(())
    }

    // ----- cleanup ----------------------------------------------------------------------

    async fn cleanup(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        log(format_args!("cleaning up {}", self.ns));
        if !self.cluster_name.is_empty() {
            let _ = self
                .clusters()
                .delete(&self.cluster_name, &DeleteParams::default())
                .await;
        }
        if self.installed
            && let Err(e) = k8s::helm(
                &self.o.helm,
                &self.o.kubeconfig,
                &[
                    "uninstall",
                    &self.release,
                    "-n",
                    &self.ns,
                    "--wait",
                    "--timeout",
                    "120s",
                ],
                Duration::from_secs(150),
            )
            .await
        {
            problems.push(format!("{e:#}"));
        }
        // Cluster-scoped objects of the release go with it; make sure.
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        let bindings: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        let _ = bindings
            .delete(&self.release, &DeleteParams::default())
            .await;
        let _ = roles.delete(&self.release, &DeleteParams::default()).await;

        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.delete(&self.ns, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => problems.push(format!("deleting namespace {}: {e}", self.ns)),
        }
        let ns = self.ns.clone();
        let gone = k8s::wait_for(
            &format!("namespace {ns} to go"),
            Duration::from_secs(180),
            Duration::from_secs(1),
            || {
                let namespaces = namespaces.clone();
                let ns = ns.clone();
                async move { Ok(namespaces.get_opt(&ns).await?.is_none().then_some(())) }
            },
        )
        .await;
        if let Err(e) = gone {
            problems.push(format!("{e:#}"));
        }
        if self.created_crds {
            // Only when no other ChatCluster uses them.
            let all: Api<kube::api::DynamicObject> =
                Api::all_with(self.client.clone(), &k8s::parley_resource("ChatCluster"));
            let others = all
                .list(&ListParams::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(1);
            if others == 0 {
                let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
                for name in [CLUSTER_CRD, "chatshards.parley.dev"] {
                    let _ = crds.delete(name, &DeleteParams::default()).await;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(problems.join("; ")))
        }
    }
}

/// What step 4 leaves for step 5: the users, their group, what was acknowledged.
#[derive(Debug, Clone)]
pub struct Chat {
    pub a: User,
    pub b: User,
    /// The group both are members of.
    pub channel: u64,
    /// The messages step 4 had acknowledged.
    pub acked: Vec<Acked>,
}

/// Step 4, through `edge` only: users `e2e-<unique>-a` and `-b` in group `e2e-<unique>` on two
/// different chat-node pods chat both ways, page history (socket and REST) and `b` resumes
/// after a reconnect with exactly the messages it missed. `limit` bounds the wait for the
/// edge to route.
pub async fn chat(edge: &Edge, unique: &str, limit: Duration) -> Result<Chat> {
    let probe = edge.clone();
    k8s::wait_for(
        "the edge to route to a ready chat-node (/readyz)",
        limit,
        Duration::from_millis(500),
        || {
            let probe = probe.clone();
            async move {
                let (status, body) = probe
                    .request(reqwest::Method::GET, "/readyz", None, None)
                    .await?;
                if status == 200 {
                    Ok(Some(()))
                } else {
                    Err(anyhow!("/readyz answered {status}: {body}"))
                }
            }
        },
    )
    .await?;

    let a = edge.register(&format!("e2e-{}-a", unique)).await?;
    let b = edge.register(&format!("e2e-{}-b", unique)).await?;
    let group = edge
        .expect(
            reqwest::Method::POST,
            "/v1/channels",
            Some(&a.token),
            Some(&json!({"name": format!("e2e-{}", unique)})),
            201,
        )
        .await?;
    let channel = edge::id(&group["id"])?;
    edge.expect(
        reqwest::Method::POST,
        &format!("/v1/channels/{channel}/join"),
        Some(&b.token),
        Some(&json!({})),
        200,
    )
    .await?;

    // Two sockets on different chat-node pods.
    let (mut wa, ra) = edge.connect(&a.token, None).await?;
    let node_a = ra["node"].as_str().unwrap_or("").to_owned();
    // The edge learns of each ready pod on its own schedule (Traefik throttles provider
    // updates, 2 s by default), so b keeps reconnecting, a little apart, until it lands
    // elsewhere or `limit` passes.
    let mut attempt = 0;
    let spread_deadline = tokio::time::Instant::now() + limit;
    let (mut wb, node_b) = loop {
        attempt += 1;
        let (ws, rb) = edge.connect(&b.token, None).await?;
        let node = rb["node"].as_str().unwrap_or("").to_owned();
        if node != node_a {
            break (ws, node);
        }
        ensure!(
            tokio::time::Instant::now() < spread_deadline,
            "{attempt} WebSockets through the edge in {limit:?} all landed on {node_a}; the edge does not spread them"
        );
        close(ws).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    log(format_args!(
        "user a on {node_a}, user b on {node_b} ({attempt} connection(s) for b)"
    ));

    let mut acked = Vec::new();
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    // a → b and b → a.
    let m = ws_send(&mut wa, channel, "hello from a", "chat-a-1", &mut seen_a).await?;
    expect_message(&mut wb, m.id, &mut seen_b)
        .await
        .context("b receiving a's message")?;
    acked.push(acked_of(&m, &a, "chat"));
    let m = ws_send(&mut wb, channel, "hello from b", "chat-b-1", &mut seen_b).await?;
    expect_message(&mut wa, m.id, &mut seen_a)
        .await
        .context("a receiving b's message")?;
    acked.push(acked_of(&m, &b, "chat"));
    for i in 2..=5 {
        for (ws, seen, user, who) in [
            (&mut wa, &mut seen_a, &a, "a"),
            (&mut wb, &mut seen_b, &b, "b"),
        ] {
            let m = ws_send(
                ws,
                channel,
                &format!("message {i} from {who}"),
                &format!("chat-{who}-{i}"),
                seen,
            )
            .await?;
            acked.push(acked_of(&m, user, "chat"));
        }
    }
    let ids: Vec<u64> = acked.iter().map(|m| m.id).collect();
    let seqs: Vec<u64> = acked.iter().map(|m| m.seq).collect();
    ensure!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs of ten messages in a row are not consecutive: {seqs:?}"
    );
    // History pages, over the socket and over REST.
    let page = ws_history(&mut wa, channel, json!({"limit": 4}), &mut seen_a).await?;
    let want: Vec<u64> = ids.iter().rev().take(4).copied().collect();
    ensure!(
        page.0 == want && page.1,
        "history limit=4 gave {page:?}, wanted {want:?} and more"
    );
    let page = ws_history(
        &mut wb,
        channel,
        json!({"before": ids[6].to_string(), "limit": 3}),
        &mut seen_b,
    )
    .await?;
    let want = vec![ids[5], ids[4], ids[3]];
    ensure!(
        page.0 == want,
        "history before={} limit=3 gave {:?}, wanted {want:?}",
        ids[6],
        page.0
    );
    let r = edge
        .expect(
            reqwest::Method::GET,
            &format!("/v1/channels/{channel}/messages?after={}&limit=3", ids[1]),
            Some(&b.token),
            None,
            200,
        )
        .await?;
    let got = message_ids(&r["messages"])?;
    ensure!(
        got == ids[2..5] && r["has_more"] == true,
        "GET messages after={} limit=3 gave {got:?} (has_more {}), wanted {:?}",
        ids[1],
        r["has_more"],
        &ids[2..5]
    );

    // b drops its socket; a sends three; b resumes and gets exactly those, in order.
    drain(&mut wb, &mut seen_b).await;
    let last_b = seen_b
        .iter()
        .filter(|f| f["t"] == "message")
        .filter_map(|f| edge::id(&f["d"]["id"]).ok())
        .chain(acked.iter().filter(|m| m.author == b.id).map(|m| m.id))
        .max()
        .context("b saw no message")?;
    close(wb).await;
    let mut missed = Vec::new();
    for i in 1..=3 {
        let m = ws_send(
            &mut wa,
            channel,
            &format!("while b was away {i}"),
            &format!("chat-a-away-{i}"),
            &mut seen_a,
        )
        .await?;
        missed.push(m.id);
        acked.push(acked_of(&m, &a, "chat"));
    }
    let (mut wb, rb) = edge.connect(&b.token, Some(last_b)).await?;
    let mut got = Vec::new();
    while got.len() < missed.len() {
        match edge::next_frame(&mut wb, FRAME_WAIT)
            .await
            .context("b resuming")?
        {
            Frame::Json(f) if f["t"] == "message" => {
                let id = edge::id(&f["d"]["id"])?;
                if id > last_b {
                    got.push(id);
                }
            }
            Frame::Json(_) => {}
            Frame::Closed(code) => bail!("b's resumed socket closed ({code:?})"),
        }
    }
    ensure!(
        got == missed,
        "b resumed after {last_b} and got {got:?}, wanted {missed:?}"
    );
    log(format_args!(
        "chatted both ways, paged history, b resumed on {} and got the 3 missed messages",
        rb["node"].as_str().unwrap_or("?")
    ));
    close(wa).await;
    close(wb).await;
    Ok(Chat {
        a,
        b,
        channel,
        acked,
    })
}

/// An acknowledged message as `send`'s `ok` returns it.
#[derive(Debug, Clone)]
struct Sent {
    id: u64,
    seq: u64,
    client_msg_id: String,
}

fn acked_of(m: &Sent, user: &User, client: &str) -> Acked {
    Acked {
        client: client.to_owned(),
        author: user.id,
        id: m.id,
        seq: m.seq,
        client_msg_id: m.client_msg_id.clone(),
    }
}

async fn ws_send(
    ws: &mut Socket,
    channel: u64,
    text: &str,
    cmid: &str,
    seen: &mut Vec<Value>,
) -> Result<Sent> {
    edge::send_op(
        ws,
        "send",
        cmid,
        json!({"channel_id": channel.to_string(), "text": text, "client_msg_id": cmid}),
    )
    .await?;
    let r = edge::reply(ws, cmid, FRAME_WAIT, seen).await?;
    ensure!(r["t"] == "ok", "send {cmid} answered {r}");
    let m = &r["d"]["message"];
    Ok(Sent {
        id: edge::id(&m["id"])?,
        seq: m["seq"]
            .as_u64()
            .with_context(|| format!("no seq in {m}"))?,
        client_msg_id: cmid.to_owned(),
    })
}

async fn expect_message(ws: &mut Socket, id: u64, seen: &mut Vec<Value>) -> Result<()> {
    edge::event(ws, "message", FRAME_WAIT, seen, |d| {
        edge::id(&d["id"]).ok() == Some(id)
    })
    .await?;
    Ok(())
}

fn message_ids(v: &Value) -> Result<Vec<u64>> {
    v.as_array()
        .context("no messages array")?
        .iter()
        .map(|m| edge::id(&m["id"]))
        .collect()
}

async fn ws_history(
    ws: &mut Socket,
    channel: u64,
    mut q: Value,
    seen: &mut Vec<Value>,
) -> Result<(Vec<u64>, bool)> {
    q["channel_id"] = json!(channel.to_string());
    edge::send_op(ws, "history", "history", q.clone()).await?;
    let r = edge::reply(ws, "history", FRAME_WAIT, seen).await?;
    ensure!(r["t"] == "ok", "history {q} answered {r}");
    Ok((
        message_ids(&r["d"]["messages"])?,
        r["d"]["has_more"] == true,
    ))
}

/// Reads what is already there (briefly) into `seen`.
async fn drain(ws: &mut Socket, seen: &mut Vec<Value>) {
    while let Ok(Frame::Json(f)) = edge::next_frame(ws, Duration::from_millis(500)).await {
        seen.push(f);
    }
}

async fn close(mut ws: Socket) {
    use futures_util::StreamExt as _;
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ws.next().await.is_some() {}
    })
    .await;
}

/// The channel's whole history, through the edge, oldest first.
async fn fetch_history(edge: &Edge, user: &User, channel: u64) -> Result<Vec<traffic::Stored>> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let r = edge
            .expect(
                reqwest::Method::GET,
                &format!("/v1/channels/{channel}/messages?after={after}&limit=100"),
                Some(&user.token),
                None,
                200,
            )
            .await?;
        let messages = r["messages"].as_array().context("no messages")?;
        for m in messages {
            out.push(traffic::Stored {
                id: edge::id(&m["id"])?,
                seq: m["seq"].as_u64().context("no seq")?,
                author: edge::id(&m["author_id"])?,
                client_msg_id: m["client_msg_id"].as_str().map(str::to_owned),
            });
        }
        match messages.last() {
            Some(m) if r["has_more"] == true => after = edge::id(&m["id"])?,
            _ => return Ok(out),
        }
    }
}
