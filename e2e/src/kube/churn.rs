//! Steps 5 and 6: traffic through the edge (two senders, listeners) while the cluster
//! changes under it (a chat-node pod deleted, scaled 2 → 3 → 2, a third ChatShard, a rollout
//! restart), then everything acknowledged checked against the channel's history.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::chat::{Chat, fetch_history, message_ids};
use super::edge::{self, Edge};
use super::run::{Run, Tasks};
use super::traffic::{self, Acked, Ledger, Phase, SharedLedger};
use super::{backends, k8s, log, sample};

impl Run<'_> {
    pub(super) async fn churn(
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
}
