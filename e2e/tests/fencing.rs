//! Fencing of channel owners on a real cluster (docs/reliability.md, fencing): the owner of
//! a channel is paused with SIGSTOP for longer than its lease while clients on every node
//! keep sending, then woken with SIGCONT; three times. Another node takes the channel over
//! during each pause; the woken owner, whose ring view never changed, must answer
//! `unavailable` for the sends it had waiting (its stale lease, or its term fenced after the
//! append), and every acknowledged message is stored once with seqs 1..n.
//!
//! A pause stops the process, not the services, so this runs beside the other tests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parley_crd::{Member, Ring};
use parley_e2e::client::{Api, Next, Ws, id_of};
use parley_e2e::cluster::{Cluster, Options, assert_stored_exactly_once, stored_messages};
use parley_e2e::services;
use parley_protocol::Id;
use serde_json::json;

/// The harness's `PARLEY_NODE_LEASE_MS`.
const LEASE: Duration = Duration::from_millis(4000);
const PAUSES: usize = 3;

/// What one sending client saw.
#[derive(Debug, Default)]
struct Tally {
    acked: Vec<Id>,
    /// `unavailable` answers per pause round (index = rounds completed when it came).
    unavailable: Vec<usize>,
    /// Replies that did not come within the client's patience (it then reconnected and
    /// sent the same `client_msg_id` again).
    timeouts: usize,
}

/// What the test tells every sender: stop, and which pause round it is.
#[derive(Debug, Clone, Default)]
struct Shared {
    stop: Arc<AtomicBool>,
    round: Arc<AtomicUsize>,
}

/// Sends until `stop`, over a WebSocket to `api`'s node only, each message with its own
/// `client_msg_id`, retried with the same one after `unavailable` or a reply that takes
/// longer than `patience` (on a new connection). Counts its `ok`s in `acks`.
async fn sender(
    api: Api,
    tag: String,
    channel: Id,
    patience: Duration,
    shared: Shared,
    acks: Arc<AtomicUsize>,
) -> Tally {
    let Shared { stop, round } = shared;
    let mut tally = Tally {
        unavailable: vec![0; PAUSES + 1],
        ..Tally::default()
    };
    let mut ws: Option<Ws> = None;
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        if ws.is_none() {
            match tokio::time::timeout(Duration::from_secs(3), api.try_connect(None)).await {
                Ok(Ok((s, _))) => ws = Some(s),
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let s = ws.as_mut().expect("connected");
        let r = format!("{tag}-{i}");
        s.op(
            "send",
            &r,
            json!({"channel_id": channel.to_string(), "text": r, "client_msg_id": r}),
        )
        .await;
        match reply(s, &r, patience).await {
            Some(f) if f["t"] == "ok" => {
                tally.acked.push(id_of(&f["d"]["message"]["id"]));
                acks.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            Some(f) => {
                assert_eq!(f["d"]["code"], "unavailable", "{f}");
                tally.unavailable[round.load(Ordering::SeqCst).min(PAUSES)] += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None => {
                tally.timeouts += 1;
                ws = None;
            }
        }
    }
    tally
}

/// The reply to `r`, if it comes within `patience` on an open socket.
async fn reply(ws: &mut Ws, r: &str, patience: Duration) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_within(left).await {
            Some(Next::Frame(t)) => {
                let f: serde_json::Value = serde_json::from_str(&t).unwrap();
                if f["ref"] == r {
                    return Some(f);
                }
            }
            _ => return None,
        }
    }
}

/// The node that owns `channel` when every node is in the ring.
fn owner_of(cluster: &Cluster, channel: Id) -> usize {
    let members: Vec<Member> = (0..cluster.nodes.len())
        .map(|i| {
            let (name, endpoint) = cluster.member(i);
            Member { name, endpoint }
        })
        .collect();
    let owner = Ring::new(members).owner(channel.0).unwrap().name.clone();
    cluster.nodes.iter().position(|n| n.name == owner).unwrap()
}

/// A counter of node `i`'s `/metrics`.
async fn metric(cluster: &Cluster, i: usize, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", cluster.url(i)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Pauses node `owner` [`PAUSES`] times while the senders run: SIGSTOP for the lease + 2 s,
/// and longer until another node has acknowledged a send (`others_acks` grew: it took the
/// channel over); then SIGCONT. Returns the owner's `parley_fenced_sends_total` after each
/// round.
async fn pause_rounds(
    cluster: &Cluster,
    owner: usize,
    shared: &Shared,
    others_acks: &AtomicUsize,
) -> Vec<u64> {
    let mut fenced = Vec::new();
    for r in 0..PAUSES {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.signal(owner, "STOP").unwrap();
        // Answers the owner wrote before it stopped may still be on their way.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = others_acks.load(Ordering::SeqCst);
        tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
        // The pause lasts until another node has sequenced (an `ok` while the owner is
        // stopped), however slow this machine is.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while others_acks.load(Ordering::SeqCst) == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {r}: no other node took the channel over\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.signal(owner, "CONT").unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        shared.round.fetch_add(1, Ordering::SeqCst);
        fenced.push(metric(cluster, owner, "parley_fenced_sends_total").await);
    }
    fenced
}

#[tokio::test]
async fn a_paused_owner_is_fenced_and_no_seq_is_given_twice() {
    let services = services();
    let cluster = Cluster::start(&services, Options::default()).await;
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    let group = alice.create_group(&cluster.name("fenced")).await;
    let owner = owner_of(&cluster, group);

    // One client per node. The owner's waits out a pause (its answer after the wake is
    // what is checked); the others give up after 1 s and send again, so that another node
    // takes the channel over while the owner is stopped.
    let shared = Shared::default();
    let owners_acks = Arc::new(AtomicUsize::new(0));
    let others_acks = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..cluster.nodes.len() {
        let user = Api::register(cluster.url(k), &cluster.name(&format!("s{k}x"))).await;
        user.join(group).await;
        let (patience, acks) = if k == owner {
            (LEASE * 4, owners_acks.clone())
        } else {
            (Duration::from_millis(500), others_acks.clone())
        };
        tasks.push(tokio::spawn(sender(
            user,
            format!("s{k}"),
            group,
            patience,
            shared.clone(),
            acks,
        )));
    }

    let fenced = pause_rounds(&cluster, owner, &shared, &others_acks).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    shared.stop.store(true, Ordering::SeqCst);
    assert!(owners_acks.load(Ordering::SeqCst) > 0);

    let mut acked = BTreeSet::new();
    let mut tallies = Vec::new();
    for t in tasks {
        let tally = t.await.unwrap();
        acked.extend(tally.acked.iter().copied());
        tallies.push(tally);
    }
    for (k, t) in tallies.iter().enumerate() {
        println!(
            "client on n{}{}: {} ok, unavailable per round {:?}, {} timeouts",
            k + 1,
            if k == owner { " (owner)" } else { "" },
            t.acked.len(),
            t.unavailable,
            t.timeouts
        );
    }
    println!("owner's parley_fenced_sends_total after each round: {fenced:?}");
    let rows = stored_messages(&services, group, acked.len(), Duration::from_secs(60)).await;
    let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let repeated = seqs.windows(2).filter(|w| w[0] == w[1]).count();
    println!(
        "stored: {} messages ({} acknowledged), {repeated} seqs given twice",
        rows.len(),
        acked.len()
    );
    assert_stored_exactly_once(&services, group, &acked, &cluster).await;
    // At each wake the owner had sends waiting: its own client's and ones other nodes had
    // forwarded (their clients gave up on them). The first it handled was refused for its
    // stale lease, or appended with its old term and fenced; later ones may be `ok` once it
    // took the channel back, continuing after the other node's seqs (checked above). Which
    // of them got the refusal varies (a forwarded one is answered to a client that left),
    // so the count is over the whole run.
    let woken: usize = tallies[owner].unavailable.iter().sum();
    let fenced_total = fenced.last().copied().unwrap_or(0);
    assert!(
        woken + usize::try_from(fenced_total).unwrap() >= 1,
        "the woken owner refused nothing: unavailable to its client {woken}, fenced {fenced:?}\n{}",
        cluster.logs()
    );
    assert!(
        tallies.iter().all(|t| !t.acked.is_empty()),
        "every client got messages through"
    );
}
