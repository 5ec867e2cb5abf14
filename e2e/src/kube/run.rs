//! One run of the scenario: [`run`] drives the steps in order and cleans up whatever
//! happened; [`Run`] holds what the steps share (the client, the namespace, the release, the
//! ChatCluster's name, the [`Summary`] being filled in) and the waits every step uses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::edge::Edge;
use super::{MANAGER, Options, Until, backends, chat, k8s, log, sample, unique_suffix};

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

/// Aborts its tasks when dropped (a failed run leaves no client behind).
#[derive(Debug, Default)]
pub(super) struct Tasks(pub(super) Vec<tokio::task::JoinHandle<Result<()>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// One run against one cluster.
pub(super) struct Run<'a> {
    pub(super) o: &'a Options,
    pub(super) client: Client,
    pub(super) ns: String,
    pub(super) release: String,
    pub(super) unique: String,
    /// The Ingress host of this run.
    pub(super) host: String,
    pub(super) summary: Summary,
    /// Whether this run created the CRDs (and so removes them when nothing else uses them).
    pub(super) created_crds: bool,
    pub(super) installed: bool,
    pub(super) cluster_name: String,
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
    pub(super) fn limit(&self) -> Duration {
        Duration::from_secs(self.o.wait_secs)
    }

    pub(super) fn step(&mut self, name: &str, started: Instant) {
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

    pub(super) async fn apply(&self, obj: &Value) -> Result<()> {
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

    pub(super) fn clusters(&self) -> Api<kube::api::DynamicObject> {
        k8s::dynamic(&self.client, &self.ns, &k8s::parley_resource("ChatCluster"))
    }

    pub(super) async fn cluster_json(&self) -> Result<Value> {
        let c = self.clusters().get(&self.cluster_name).await?;
        Ok(serde_json::to_value(c)?)
    }

    // ----- 3: Ready ---------------------------------------------------------------------

    /// Waits until the ChatCluster is Ready for its current generation and `extra` holds.
    pub(super) async fn wait_ready(
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

    pub(super) fn selector(&self, component: &str) -> String {
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.cluster_name
        )
    }

    /// Waits until exactly `n` pods of `component` run with every container started and ready.
    pub(super) async fn wait_pods(&self, component: &str, n: usize) -> Result<Vec<Pod>> {
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

    pub(super) async fn ring_epoch(&self) -> Result<i64> {
        Ok(self.cluster_json().await?["status"]["ring"]["epoch"]
            .as_i64()
            .unwrap_or(0))
    }
}
