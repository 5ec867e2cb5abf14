//! Step 6: the sending stops, everything pending is acknowledged and delivered, and every
//! acknowledged message (step 4's and the traffic's) is checked against the channel's history:
//! there exactly once, seqs gapless, received by the other clients. The figures of step 5's
//! windows (disconnects, peak reconnects per second) go to the log and the [`Summary`].
//!
//! [`Summary`]: super::Summary

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};

use super::chat::{Chat, fetch_history};
use super::churn::{Traffic, Window};
use super::edge::Edge;
use super::run::Run;
use super::traffic::{self, Acked, Ledger, Phase};
use super::{k8s, log};

impl Run<'_> {
    /// Step 6 (see the module's doc); `windows` are step 5's changes.
    pub(super) async fn verify(
        &mut self,
        edge: &Edge,
        chat: &Chat,
        mut traffic: Traffic,
        windows: &[Window],
    ) -> Result<()> {
        // 6: stop sending, let everything pending be acknowledged and delivered.
        let t = Instant::now();
        settle(&mut traffic).await?;
        let receivers = &traffic.receivers;
        let history = fetch_history(edge, &chat.a, chat.channel).await?;
        let l = traffic.ledger.lock();
        let mut all_acked = chat.acked.clone();
        all_acked.extend(l.acked.iter().cloned());
        let traffic_acked: Vec<Acked> = l.acked.clone();
        let v = traffic::verify(&all_acked, &history, &l.received, receivers);
        let delivery = traffic::verify(&traffic_acked, &history, &l.received, receivers);

        self.record_figures(&l, windows);
        self.summary.acked = all_acked.len();
        self.summary.lost = v.lost.len();
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

    /// Logs each window's disconnects and peak reconnects per second and the disconnects by
    /// cause, and writes the figures of `l` to the summary.
    fn record_figures(&mut self, l: &Ledger, windows: &[Window]) {
        // Figures.
        let times = |from: Duration, to: Duration| -> Vec<Duration> {
            l.disconnects
                .iter()
                .filter(|d| d.at >= from && d.at <= to)
                .map(|d| d.at)
                .collect()
        };
        let mut other_peak = 0;
        for (name, from, to) in windows {
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
        self.summary.disconnects = l.disconnects.len();
        self.summary.drained = l
            .disconnects
            .iter()
            .filter(|d| matches!(d.cause, traffic::Cause::Drained { .. }))
            .count();
        self.summary.send_errors = l.send_errors.clone();
    }
}

/// Stops the sending, waits until every send is acknowledged and delivered to the other
/// clients, then lets every client finish (within 30 s).
async fn settle(traffic: &mut Traffic) -> Result<()> {
    let Traffic {
        ledger,
        receivers,
        tasks,
        phase_tx,
        ..
    } = traffic;
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
    Ok(())
}
