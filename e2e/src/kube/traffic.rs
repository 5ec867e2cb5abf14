//! Traffic that keeps flowing while the cluster changes under it: WebSocket clients through
//! the edge that send a message every interval (senders) or only listen, follow `reconnect`
//! {after_ms} and close 4010 as PROTOCOL.md v1.1 asks, come back after any other disconnect,
//! and always resume with `resume_after`. A shared [`Ledger`] records every acknowledged
//! message, every message received and every disconnect; [`verify`] checks them against the
//! channel's history at the end.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::edge::{self, Edge, Frame, Socket, send_op};

/// How long a client may stay unable to connect before it gives up (and fails the run).
pub const DOWN_LIMIT: Duration = Duration::from_secs(120);
/// A connection that gave no frame (not even a pong) for this long counts as dead.
const SILENT_LIMIT: Duration = Duration::from_secs(20);
/// A send without a reply for this long makes the client reconnect and send it again.
const ACK_LIMIT: Duration = Duration::from_secs(20);
const PING_EVERY: Duration = Duration::from_secs(5);

/// An acknowledged message (`ok` to `send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub client: String,
    pub author: u64,
    pub id: u64,
    pub seq: u64,
    pub client_msg_id: String,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// `reconnect` {after_ms} and then a close (4010 expected).
    Drained { after_ms: u64, code: Option<u16> },
    /// A close without `reconnect` first (code when there was one), or a dead socket.
    Closed(Option<u16>),
    /// No frame for too long, or a send without an answer.
    Silent,
}

/// A disconnect a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub client: String,
    /// When it happened, from the start of the run.
    pub at: Duration,
    pub cause: Cause,
}

/// Everything the traffic clients saw.
#[derive(Debug, Default)]
pub struct Ledger {
    pub acked: Vec<Acked>,
    /// Message IDs each client received (live or on resume).
    pub received: BTreeMap<String, BTreeSet<u64>>,
    pub disconnects: Vec<Disconnect>,
    /// Failed connection attempts (the edge had no backend, hello refused, ...).
    pub failed_connects: u64,
    /// `error` replies to `send` by code (the send is retried).
    pub send_errors: BTreeMap<String, u64>,
    pub resync_required: u64,
    /// Sends not yet acknowledged, per client.
    pub pending: BTreeMap<String, usize>,
    /// The node (pod) each client is connected to now.
    pub nodes: BTreeMap<String, String>,
    /// Fatal problems a client ran into.
    pub fatal: Vec<String>,
}

/// Shared ledger.
pub type SharedLedger = Arc<Mutex<Ledger>>;

/// Phases the scenario moves the clients through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// No new sends; pending ones are still retried until acknowledged.
    StopSending,
    /// Close and return once nothing is pending.
    Finish,
}

/// One traffic client.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub user: edge::User,
    pub channel: u64,
    /// Sends a message every `interval` when set.
    pub send_every: Option<Duration>,
    /// Resume after this message when first connecting.
    pub resume_after: Option<u64>,
}

/// Runs one client until [`Phase::Finish`] (or a fatal problem, also written to the ledger).
pub async fn run(
    edge: Edge,
    client: Client,
    ledger: SharedLedger,
    phase: watch::Receiver<Phase>,
    t0: Instant,
) -> Result<()> {
    let name = client.name.clone();
    let r = run_inner(edge, client, ledger.clone(), phase, t0).await;
    if let Err(e) = &r {
        ledger.lock().fatal.push(format!("{name}: {e:#}"));
    }
    r
}

/// A send waiting for its `ok`.
struct Pending {
    text: String,
    sent_at: Option<Instant>,
}

async fn run_inner(
    edge: Edge,
    c: Client,
    ledger: SharedLedger,
    mut phase: watch::Receiver<Phase>,
    t0: Instant,
) -> Result<()> {
    let mut last_seen = c.resume_after;
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut next_number = 0u64;
    let mut delay = Duration::ZERO;
    let mut down_since: Option<Instant> = None;
    ledger.lock().received.entry(c.name.clone()).or_default();
    loop {
        if *phase.borrow() == Phase::Finish && pending.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(delay).await;
        let (mut ws, ready) = match edge.connect(&c.user.token, last_seen).await {
            Ok(x) => x,
            Err(e) => {
                ledger.lock().failed_connects += 1;
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() > DOWN_LIMIT {
                    bail!("could not connect through the edge for {DOWN_LIMIT:?}: {e:#}");
                }
                delay = Duration::from_millis(300);
                continue;
            }
        };
        down_since = None;
        ledger.lock().nodes.insert(
            c.name.clone(),
            ready["node"].as_str().unwrap_or("?").to_owned(),
        );
        // What was sent on the last connection and not acknowledged goes again, with the
        // same client_msg_id: the server answers a repeat with the original message.
        let mut resent = true;
        for (cmid, p) in pending.iter_mut() {
            resent = send_op(&mut ws, "send", cmid, send_body(c.channel, &p.text, cmid))
                .await
                .is_ok();
            if !resent {
                break;
            }
            p.sent_at = Some(Instant::now());
        }
        let cause = if resent {
            connection(
                &mut ws,
                &c,
                &ledger,
                &mut phase,
                &mut pending,
                &mut next_number,
                &mut last_seen,
            )
            .await
        } else {
            Some(Cause::Closed(None))
        };
        {
            let mut l = ledger.lock();
            l.pending.insert(c.name.clone(), pending.len());
            if let Some(cause) = &cause {
                l.disconnects.push(Disconnect {
                    client: c.name.clone(),
                    at: t0.elapsed(),
                    cause: cause.clone(),
                });
            }
        }
        match cause {
            None => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            Some(Cause::Drained { after_ms, .. }) => delay = Duration::from_millis(after_ms),
            Some(_) => delay = Duration::from_millis(200),
        }
    }
}

fn send_body(channel: u64, text: &str, cmid: &str) -> Value {
    json!({"channel_id": channel.to_string(), "text": text, "client_msg_id": cmid})
}

/// One connection: returns why it ended, or `None` when the client finished.
#[allow(clippy::too_many_arguments)]
async fn connection(
    ws: &mut Socket,
    c: &Client,
    ledger: &SharedLedger,
    phase: &mut watch::Receiver<Phase>,
    pending: &mut BTreeMap<String, Pending>,
    next_number: &mut u64,
    last_seen: &mut Option<u64>,
) -> Option<Cause> {
    let mut send_tick = tokio::time::interval(c.send_every.unwrap_or(Duration::from_secs(3600)));
    send_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping_tick = tokio::time::interval(PING_EVERY);
    let mut last_frame = Instant::now();
    let mut drained: Option<u64> = None;
    let mut retry: Vec<String> = Vec::new();
    loop {
        let now_phase = *phase.borrow();
        if now_phase == Phase::Finish && pending.is_empty() {
            return None;
        }
        tokio::select! {
            _ = send_tick.tick(), if c.send_every.is_some() => {
                // Sends refused with a retryable error go again first.
                for cmid in std::mem::take(&mut retry) {
                    if let Some(p) = pending.get_mut(&cmid) {
                        if send_op(ws, "send", &cmid, send_body(c.channel, &p.text, &cmid)).await.is_err() {
                            return Some(Cause::Closed(None));
                        }
                        p.sent_at = Some(Instant::now());
                    }
                }
                if now_phase == Phase::Running {
                    *next_number += 1;
                    let cmid = format!("{}-{}", c.name, next_number);
                    let text = format!("traffic {cmid}");
                    let body = send_body(c.channel, &text, &cmid);
                    pending.insert(cmid.clone(), Pending { text, sent_at: Some(Instant::now()) });
                    ledger.lock().pending.insert(c.name.clone(), pending.len());
                    if send_op(ws, "send", &cmid, body).await.is_err() {
                        return Some(Cause::Closed(None));
                    }
                }
            }
            _ = ping_tick.tick() => {
                let stuck = pending.values().any(|p| p.sent_at.is_some_and(|t| t.elapsed() > ACK_LIMIT));
                if last_frame.elapsed() > SILENT_LIMIT || stuck {
                    return Some(Cause::Silent);
                }
                if send_op(ws, "ping", "ping", json!({})).await.is_err() {
                    return Some(Cause::Closed(None));
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    // The scenario is gone: finish.
                    return None;
                }
            }
            msg = ws.next() => {
                let Some(frame) = edge::frame_of(msg) else { continue };
                last_frame = Instant::now();
                match frame {
                    Frame::Closed(code) => {
                        return Some(match drained {
                            Some(after_ms) => Cause::Drained { after_ms, code },
                            None => Cause::Closed(code),
                        });
                    }
                    Frame::Json(f) => {
                        handle(&f, c, ledger, pending, &mut retry, last_seen, &mut drained);
                    }
                }
            }
        }
    }
}

fn handle(
    f: &Value,
    c: &Client,
    ledger: &SharedLedger,
    pending: &mut BTreeMap<String, Pending>,
    retry: &mut Vec<String>,
    last_seen: &mut Option<u64>,
    drained: &mut Option<u64>,
) {
    let t = f["t"].as_str().unwrap_or("");
    let r = f["ref"].as_str().unwrap_or("");
    match t {
        "ok" if pending.contains_key(r) => {
            let m = &f["d"]["message"];
            let mut l = ledger.lock();
            match (edge::id(&m["id"]), m["seq"].as_u64()) {
                (Ok(id), Some(seq)) => {
                    pending.remove(r);
                    l.acked.push(Acked {
                        client: c.name.clone(),
                        author: c.user.id,
                        id,
                        seq,
                        client_msg_id: r.to_owned(),
                    });
                    l.pending.insert(c.name.clone(), pending.len());
                }
                _ => l
                    .fatal
                    .push(format!("{}: an ok to send without a message: {f}", c.name)),
            }
        }
        "error" if pending.contains_key(r) => {
            let code = f["d"]["code"].as_str().unwrap_or("?").to_owned();
            *ledger.lock().send_errors.entry(code).or_default() += 1;
            retry.push(r.to_owned());
        }
        "message" => {
            if let Ok(id) = edge::id(&f["d"]["id"]) {
                ledger
                    .lock()
                    .received
                    .entry(c.name.clone())
                    .or_default()
                    .insert(id);
                *last_seen = Some(last_seen.map_or(id, |s| s.max(id)));
            }
        }
        "reconnect" => *drained = Some(f["d"]["after_ms"].as_u64().unwrap_or(0)),
        "resync_required" => ledger.lock().resync_required += 1,
        _ => {}
    }
}

/// The largest number of `times` within any one-second window.
pub fn peak_per_second(times: &[Duration]) -> usize {
    let mut t: Vec<Duration> = times.to_vec();
    t.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..t.len() {
        while t[end] - t[start] >= Duration::from_secs(1) {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// A message of the channel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: u64,
    pub seq: u64,
    pub author: u64,
    pub client_msg_id: Option<String>,
}

/// What the final check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub acked: usize,
    /// Acknowledged messages missing from history.
    pub lost: Vec<u64>,
    /// Messages stored more than once (by ID, or by author and client_msg_id).
    pub duplicates: Vec<String>,
    /// What is wrong with the seqs (they must be 1, 2, 3, ... in ID order).
    pub seq_problems: Vec<String>,
    /// Acknowledged messages a client that had to get them never received, by client.
    pub undelivered: BTreeMap<String, Vec<u64>>,
    /// Acknowledged messages whose seq differs from the stored one.
    pub seq_mismatch: Vec<u64>,
}

impl Verdict {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.duplicates.is_empty()
            && self.seq_problems.is_empty()
            && self.undelivered.is_empty()
            && self.seq_mismatch.is_empty()
    }
}

/// Checks the acknowledged messages against `history` (the whole channel) and what each
/// client received: `receivers` maps a client to the sending clients whose acknowledged
/// messages it must have received.
pub fn verify(
    acked: &[Acked],
    history: &[Stored],
    received: &BTreeMap<String, BTreeSet<u64>>,
    receivers: &BTreeMap<String, BTreeSet<String>>,
) -> Verdict {
    let mut v = Verdict {
        acked: acked.len(),
        ..Verdict::default()
    };
    let mut by_id: BTreeMap<u64, Vec<&Stored>> = BTreeMap::new();
    let mut by_cmid: BTreeMap<(u64, &str), usize> = BTreeMap::new();
    for m in history {
        by_id.entry(m.id).or_default().push(m);
        if let Some(c) = &m.client_msg_id {
            *by_cmid.entry((m.author, c.as_str())).or_default() += 1;
        }
    }
    for (id, ms) in &by_id {
        if ms.len() > 1 {
            v.duplicates
                .push(format!("id {id} stored {} times", ms.len()));
        }
    }
    for ((author, cmid), n) in &by_cmid {
        if *n > 1 {
            v.duplicates
                .push(format!("client_msg_id {cmid} of {author} stored {n} times"));
        }
    }
    for a in acked {
        match by_id.get(&a.id) {
            None => v.lost.push(a.id),
            Some(ms) if ms[0].seq != a.seq => v.seq_mismatch.push(a.id),
            Some(_) => {}
        }
    }
    // Seqs: 1..=n with no gap or repeat, increasing with the ID.
    let mut ordered: Vec<&Stored> = history.iter().collect();
    ordered.sort_by_key(|m| m.id);
    for (i, m) in ordered.iter().enumerate() {
        let want = i as u64 + 1;
        if m.seq != want {
            v.seq_problems.push(format!(
                "message {} has seq {}, expected {want}",
                m.id, m.seq
            ));
            if v.seq_problems.len() >= 10 {
                break;
            }
        }
    }
    for (client, senders) in receivers {
        let got = received.get(client);
        let missing: Vec<u64> = acked
            .iter()
            .filter(|a| senders.contains(&a.client))
            .filter(|a| !got.is_some_and(|g| g.contains(&a.id)))
            .map(|a| a.id)
            .collect();
        if !missing.is_empty() {
            v.undelivered.insert(client.clone(), missing);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn peak_is_the_busiest_second() {
        assert_eq!(peak_per_second(&[]), 0);
        assert_eq!(peak_per_second(&ms(&[0, 2000, 4000])), 1);
        assert_eq!(peak_per_second(&ms(&[0, 100, 900, 1000, 1500])), 3);
        assert_eq!(peak_per_second(&ms(&[5000, 10, 20, 30])), 3);
    }

    fn acked(id: u64, seq: u64, author: u64) -> Acked {
        Acked {
            client: format!("c{author}"),
            author,
            id,
            seq,
            client_msg_id: format!("m{id}"),
        }
    }

    fn stored(id: u64, seq: u64, author: u64) -> Stored {
        Stored {
            id,
            seq,
            author,
            client_msg_id: Some(format!("m{id}")),
        }
    }

    #[test]
    fn verify_finds_loss_duplicates_gaps_and_undelivered() {
        let acks = vec![acked(10, 1, 1), acked(20, 2, 2), acked(30, 3, 1)];
        let history = vec![stored(10, 1, 1), stored(20, 2, 2), stored(30, 3, 1)];
        let received = BTreeMap::from([
            ("b".to_owned(), BTreeSet::from([10, 30])),
            ("a".to_owned(), BTreeSet::from([20])),
        ]);
        let receivers = BTreeMap::from([
            ("b".to_owned(), BTreeSet::from(["c1".to_owned()])),
            ("a".to_owned(), BTreeSet::from(["c2".to_owned()])),
        ]);
        let v = verify(&acks, &history, &received, &receivers);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.acked, 3);

        let lossy = vec![stored(10, 1, 1), stored(30, 3, 1)];
        let v = verify(&acks, &lossy, &received, &receivers);
        assert_eq!(v.lost, [20]);
        assert_eq!(v.seq_problems.len(), 1, "{v:?}");

        let mut doubled = history.clone();
        doubled.push(Stored {
            id: 40,
            seq: 4,
            author: 1,
            client_msg_id: Some("m10".into()),
        });
        let v = verify(&acks, &doubled, &received, &receivers);
        assert_eq!(v.duplicates.len(), 1, "{v:?}");

        let deaf = BTreeMap::from([("b".to_owned(), BTreeSet::from([10]))]);
        let v = verify(&acks, &history, &deaf, &receivers);
        assert_eq!(v.undelivered["b"], [30]);
        assert_eq!(v.undelivered["a"], [20]);
    }
}
