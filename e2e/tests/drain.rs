//! A chat-node stopped with SIGTERM while traffic flows (distributed mode, two nodes): it
//! gives its channels up first, then sends its clients `reconnect` + close 4010 spread over
//! `PARLEY_DRAIN_MS`; they come back on the other node with `resume_after`. Nothing
//! acknowledged is lost or doubled, seqs stay gapless, and the reconnect rate stays bounded
//! by the spread (the figure is printed).
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom; the 80-line bar is for non-test code"
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parley_e2e::client::{Api, Next, Ws, id_of};
use parley_e2e::cluster::{Cluster, Options, assert_stored_exactly_once};
use parley_e2e::services;
use parley_protocol::Id;
use serde_json::json;

const DRAIN_MS: u64 = 4000;
const ROAMERS: usize = 16;

/// Sends over a WebSocket until `stop`, following `reconnect`/closes to the other node and
/// retrying (same client_msg_id) on `unavailable`. Returns the acknowledged ids.
async fn sender(
    users: Vec<Api>,
    start: usize,
    channel: Id,
    tag: String,
    stop: Arc<AtomicBool>,
) -> Vec<Id> {
    let mut node = start;
    let mut acked = Vec::new();
    let mut ws: Option<Ws> = None;
    let mut i = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) || i < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sender {tag} stuck at {i}"
        );
        if ws.is_none() {
            let api = &users[node % users.len()];
            match tokio::time::timeout(Duration::from_secs(3), api.try_connect(None)).await {
                Ok(Ok((s, _))) => ws = Some(s),
                _ => {
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let s = ws.as_mut().unwrap();
        let r = format!("{tag}-{i}");
        s.op(
            "send",
            &r,
            json!({"channel_id": channel.to_string(), "text": r, "client_msg_id": r}),
        )
        .await;
        let mut after_ms = None;
        let reply = loop {
            match s.next_within(Duration::from_secs(10)).await {
                Some(Next::Frame(t)) => {
                    let f: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if f["t"] == "reconnect" {
                        after_ms = f["d"]["after_ms"].as_u64();
                    }
                    if f["ref"] == r.as_str() {
                        break Some(f);
                    }
                }
                _ => break None,
            }
        };
        match reply {
            Some(f) if f["t"] == "ok" => {
                acked.push(id_of(&f["d"]["message"]["id"]));
                i += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            Some(f) => {
                assert_eq!(f["d"]["code"], "unavailable", "{f}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {
                // Closed (4010 after a reconnect): wait as told, then go elsewhere.
                tokio::time::sleep(Duration::from_millis(after_ms.unwrap_or(100))).await;
                ws = None;
                node += 1;
            }
        }
    }
    acked
}

/// What a client of the stopped node went through.
#[derive(Debug)]
struct Roamed {
    seen: BTreeSet<Id>,
    code: Option<u16>,
    /// When it reconnected (after its `after_ms`), since the SIGTERM.
    reconnected_at: Duration,
}

/// Reads until the node closes the socket (expecting `reconnect` first), waits `after_ms`,
/// resumes on `elsewhere` and reads until `done` and the stream is quiet.
async fn roam(
    mut ws: Ws,
    elsewhere: Api,
    sigterm: Arc<std::sync::OnceLock<Instant>>,
    done: Arc<AtomicBool>,
) -> Roamed {
    let closed = ws.until_closed(Duration::from_secs(60)).await;
    let mut seen: BTreeSet<Id> = closed
        .frames
        .iter()
        .filter(|f| f.t == "message")
        .map(|f| id_of(&f.d["id"]))
        .collect();
    let last = seen.last().copied();
    let code = closed.code;
    let after_ms = closed.after_ms.expect("a reconnect event before the close");
    let reconnected_at = sigterm.get().map_or(Duration::ZERO, |t| {
        t.elapsed() + Duration::from_millis(after_ms)
    });
    let (mut ws, _) = elsewhere
        .reconnect_after(after_ms, last, Duration::from_secs(30))
        .await;
    ws.keep_alive(Duration::from_secs(2));
    // Until the senders are done and no message came for 3 s (pongs do not count).
    let mut last_message = tokio::time::Instant::now();
    loop {
        if done.load(Ordering::Relaxed) && last_message.elapsed() > Duration::from_secs(3) {
            break;
        }
        match ws.next_within(Duration::from_secs(1)).await {
            Some(Next::Frame(t)) => {
                let f: serde_json::Value = serde_json::from_str(&t).unwrap();
                if f["t"] == "message" {
                    seen.insert(id_of(&f["d"]["id"]));
                    last_message = tokio::time::Instant::now();
                }
            }
            None => {}
            Some(Next::Closed(c)) => panic!("the resumed socket closed: {c:?}"),
        }
    }
    Roamed {
        seen,
        code,
        reconnected_at,
    }
}

#[tokio::test]
async fn sigterm_drains_a_node_without_a_reconnect_storm_or_a_lost_message() {
    let services = services();
    let mut cluster = Cluster::start(
        &services,
        Options {
            nodes: 2,
            persisters: 1,
            extra_env: vec![("PARLEY_DRAIN_MS".into(), DRAIN_MS.to_string())],
            ..Options::default()
        },
    )
    .await;
    let owner = Api::register(cluster.url(0), &cluster.name("owner")).await;
    let group = owner.create_group(&cluster.name("drain")).await;

    // Clients of node 2, the one that will be stopped.
    let sigterm: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let mut roamers = Vec::new();
    for k in 0..ROAMERS {
        let user = Api::register(cluster.url(1), &cluster.name(&format!("r{k}x"))).await;
        user.join(group).await;
        let (mut ws, _) = user.connect(None).await;
        ws.keep_alive(Duration::from_secs(2));
        roamers.push(tokio::spawn(roam(
            ws,
            user.on(cluster.url(0)),
            sigterm.clone(),
            done.clone(),
        )));
    }
    // Senders on both nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for k in 0..2 {
        let user = Api::register(cluster.url(k), &cluster.name(&format!("s{k}x"))).await;
        user.join(group).await;
        let on_each: Vec<Api> = (0..2).map(|n| user.on(cluster.url(n))).collect();
        senders.push(tokio::spawn(sender(
            on_each,
            k,
            group,
            format!("s{k}"),
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // /readyz of the stopping node turns 503 at once and never comes back.
    let url = cluster.url(1).to_owned();
    let probe = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut seen = Vec::new();
        loop {
            match http
                .get(format!("{url}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) => seen.push(r.status().as_u16()),
                Err(_) => return seen,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = sigterm.set(Instant::now());
    let started = Instant::now();
    cluster.stop(1).await;
    let took = started.elapsed();
    let statuses = probe.await.unwrap();
    let first_503 = statuses
        .iter()
        .position(|s| *s == 503)
        .expect("/readyz never said 503");
    assert!(
        statuses[first_503..].iter().all(|s| *s == 503),
        "{statuses:?}"
    );
    assert!(
        took < Duration::from_millis(DRAIN_MS) + Duration::from_secs(8),
        "the node took {took:?} to drain and exit"
    );
    cluster.wait_ring(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acked = BTreeSet::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let mut reconnects = Vec::new();
    for r in roamers {
        let r = r.await.unwrap();
        assert_eq!(r.code, Some(4010), "close code of a drained client");
        let missing: Vec<&Id> = acked.iter().filter(|id| !r.seen.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "a resumed client missed {missing:?}\n{}",
            cluster.logs()
        );
        reconnects.push(r.reconnected_at);
    }

    // Every acknowledged message stored exactly once, seqs 1..=n.
    assert_stored_exactly_once(&services, group, &acked, &cluster).await;

    // The reconnect rate: bounded by the spread, never the whole node at once.
    reconnects.sort();
    let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
    for r in &reconnects {
        *per_second.entry(r.as_secs()).or_default() += 1;
    }
    let peak = per_second.values().copied().max().unwrap_or(0);
    let span = reconnects[ROAMERS - 1] - reconnects[0];
    println!(
        "drain of {ROAMERS} sockets over {DRAIN_MS} ms: reconnects per second {per_second:?}, \
         peak {peak}/s, spread {span:?}, node exited after {took:?}; {} messages acknowledged, 0 lost",
        acked.len()
    );
    let even = ROAMERS as f64 / (DRAIN_MS as f64 / 1000.0);
    assert!(
        (peak as f64) <= 2.0 * even + 2.0,
        "a reconnect storm: peak {peak}/s, {per_second:?}"
    );
    assert!(
        span >= Duration::from_millis(DRAIN_MS / 2),
        "reconnects bunched: {span:?}"
    );
}
