//! Step 5: traffic through the edge (two senders, listeners) while the cluster changes under
//! it: a chat-node pod deleted, scaled 2 → 3 → 2, a third ChatShard (see `shard.rs`), a
//! rollout restart of the StatefulSet. Each change is a window of the figures step 6 prints
//! (`verify.rs`).

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

use super::chat::Chat;
use super::edge::Edge;
use super::run::{Run, Tasks};
use super::traffic::{self, Ledger, Phase, SharedLedger};
use super::{backends, k8s, log, sample};

/// A change of step 5 and when it ran, from the start of the traffic: (name, from, to).
pub(super) type Window = (String, Duration, Duration);

/// The traffic clients of steps 5 and 6 (their tasks are aborted when this is dropped).
pub(super) struct Traffic {
    /// When the traffic started; disconnects and windows count from it.
    pub(super) t0: Instant,
    /// The clients' names.
    pub(super) names: Vec<String>,
    /// Whose messages each client must receive (client → senders).
    pub(super) receivers: BTreeMap<String, BTreeSet<String>>,
    pub(super) tasks: Tasks,
    pub(super) phase_tx: watch::Sender<Phase>,
    /// What the clients saw.
    pub(super) ledger: SharedLedger,
}

impl Run<'_> {
    /// Steps 5 and 6: traffic flowing, the cluster churned under it, then everything
    /// acknowledged verified.
    pub(super) async fn churn(
        &mut self,
        edge: &Edge,
        s: &sample::Sample,
        b: &backends::Backends,
        chat: Chat,
    ) -> Result<()> {
        let traffic = self.start_traffic(edge, &chat);
        warm_up(&traffic).await?;
        log(format_args!(
            "traffic flowing: 2 senders every {:?}, {} listeners",
            Duration::from_millis(self.o.send_every_ms),
            self.o.listeners
        ));
        let windows = self.disturb(edge, s, b, &chat, &traffic).await?;
        self.verify(edge, &chat, traffic, &windows).await
    }

    /// Starts the traffic clients: senders `a` and `b` (a message every `--send-every-ms`)
    /// and `--listeners` listeners, every one resuming after step 4's last message.
    fn start_traffic(&self, edge: &Edge, chat: &Chat) -> Traffic {
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
        Traffic {
            t0,
            names,
            receivers,
            tasks,
            phase_tx,
            ledger,
        }
    }

    /// The four changes under traffic, in order, each checked to leave every client running:
    /// (a) delete the chat-node pod sender `a` is on, (b) scale 2 → 3 → 2, (c) a third
    /// ChatShard, (d) a rollout restart of the StatefulSet.
    async fn disturb(
        &mut self,
        edge: &Edge,
        s: &sample::Sample,
        b: &backends::Backends,
        chat: &Chat,
        traffic: &Traffic,
    ) -> Result<Vec<Window>> {
        let (ledger, t0) = (&traffic.ledger, traffic.t0);
        let mut windows: Vec<Window> = Vec::new();

        // (a) delete the chat-node pod that sender a is on.
        let t = Instant::now();
        let start = t0.elapsed();
        self.delete_node_pod(ledger)
            .await
            .context("deleting a chat-node pod")?;
        windows.push(("pod_delete".into(), start, t0.elapsed()));
        self.step("pod_delete", t);
        check_clients(ledger)?;

        // (b) scale 2 → 3 → 2.
        for (n, name) in [(3, "scale_up"), (2, "scale_down")] {
            let t = Instant::now();
            let start = t0.elapsed();
            self.scale(n)
                .await
                .with_context(|| format!("scaling to {n}"))?;
            windows.push((name.into(), start, t0.elapsed()));
            self.step(name, t);
            check_clients(ledger)?;
        }

        // (c) a third ChatShard takes half of a shard's slots.
        let t = Instant::now();
        let start = t0.elapsed();
        self.add_shard(edge, s, b, chat)
            .await
            .context("adding a third ChatShard")?;
        windows.push(("add_shard".into(), start, t0.elapsed()));
        self.step("add_shard", t);
        check_clients(ledger)?;

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
        check_clients(ledger)?;
        Ok(windows)
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
}

/// Waits until every client is connected and both senders have acknowledgements.
async fn warm_up(traffic: &Traffic) -> Result<()> {
    let (ledger, names) = (&traffic.ledger, &traffic.names);
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
    Ok(())
}

/// Fails when a traffic client ran into a fatal problem.
fn check_clients(ledger: &SharedLedger) -> Result<()> {
    let l = ledger.lock();
    if let Some(f) = l.fatal.first() {
        bail!("a traffic client failed: {f}");
    }
    Ok(())
}
