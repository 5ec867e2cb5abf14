//! Draining a stopping node (embedded mode): `/readyz` fails at once, new sockets are
//! refused (503), open sockets get `reconnect` and close 4010 spread over the window, and a
//! client that comes back with `resume_after` misses nothing.

mod common;

use std::time::{Duration, Instant};

use common::{Next, TestNode, Ws};
use parley_e2e::client::id_of;
use parley_protocol::Id;
use serde_json::json;

/// What one socket saw during the drain.
#[derive(Debug)]
struct Drained {
    /// The `after_ms` of its `reconnect`, if it got one before the close.
    after_ms: Option<u64>,
    code: Option<u16>,
    /// When the close arrived.
    at: Instant,
    /// Message ids received live before the close.
    messages: Vec<Id>,
}

async fn until_closed(mut ws: Ws) -> Drained {
    let mut after_ms = None;
    let mut messages = Vec::new();
    loop {
        match ws.next_within(Duration::from_secs(30)).await {
            Some(Next::Frame(t)) => {
                let f: serde_json::Value = serde_json::from_str(&t).unwrap();
                match f["t"].as_str() {
                    Some("reconnect") => after_ms = f["d"]["after_ms"].as_u64(),
                    Some("message") => {
                        assert!(after_ms.is_none(), "a message after reconnect: {f}");
                        messages.push(id_of(&f["d"]["id"]));
                    }
                    _ => {}
                }
            }
            Some(Next::Closed(code)) => {
                return Drained {
                    after_ms,
                    code,
                    at: Instant::now(),
                    messages,
                };
            }
            None => panic!("the socket was not closed within 30 s"),
        }
    }
}

async fn readyz(base: &str) -> u16 {
    reqwest::get(format!("{base}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn draining_spreads_reconnect_and_4010_over_the_window() {
    const SOCKETS: usize = 20;
    let window = Duration::from_millis(3000);
    let node = TestNode::with(|c| {
        c.drain_window = window;
        // One user holds all the sockets.
        c.ws.ws_max_sessions_per_user = SOCKETS as u32;
    })
    .await;
    assert_eq!(readyz(&node.base).await, 200);
    let alice = node.user("alice").await;
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let (mut ws, _) = alice.connect(None).await;
        ws.keep_alive(Duration::from_secs(1));
        sockets.push(tokio::spawn(until_closed(ws)));
    }
    let base = node.base.clone();
    let started = Instant::now();
    let stopping = tokio::spawn(node.stop());

    // Not ready from the first moment; the HTTP server still answers meanwhile.
    let deadline = Instant::now() + Duration::from_secs(1);
    while readyz(&base).await != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz still 200 while draining"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new socket is not upgraded: 503, the client goes to another node.
    let late = tokio_tungstenite::connect_async(alice.ws_url()).await;
    let err = late.expect_err("a WebSocket was upgraded during the drain");
    assert!(err.to_string().contains("503"), "{err}");

    let mut closes = Vec::new();
    for s in sockets {
        let d = s.await.unwrap();
        assert_eq!(d.code, Some(4010), "{d:?}");
        let after = d.after_ms.expect("reconnect before the close");
        assert!(after <= 1000, "after_ms {after}");
        closes.push(d.at.duration_since(started));
    }
    stopping.await.unwrap();
    closes.sort();
    let spread = closes[SOCKETS - 1] - closes[0];
    println!(
        "{SOCKETS} sockets closed between {:?} and {:?} (spread {spread:?} of a {window:?} window)",
        closes[0],
        closes[SOCKETS - 1]
    );
    // Generous bounds: the schedule puts them ~window*(n-1)/n apart.
    assert!(
        spread >= window / 2,
        "closes bunched together: spread {spread:?} of {window:?}"
    );
    assert!(
        closes[SOCKETS - 1] <= window + Duration::from_secs(2),
        "the last close came after the window: {:?}",
        closes[SOCKETS - 1]
    );
    // Never all in one burst: no second of the window holds more than half of them.
    let mut per_second = [0usize; 8];
    for c in &closes {
        per_second[(c.as_secs() as usize).min(7)] += 1;
    }
    assert!(
        per_second.iter().all(|n| *n <= SOCKETS / 2),
        "closes per second: {per_second:?}"
    );
}

#[tokio::test]
async fn a_client_that_resumes_after_the_drain_misses_nothing() {
    let node = TestNode::with(|c| c.drain_window = Duration::from_millis(1500)).await;
    let dir = node.dir.clone();
    let alice = node.user("alice").await;
    let bob = node.user("bob").await;
    let group = alice.create_group("general").await;
    bob.join(group).await;
    let (mut b, _) = bob.connect(None).await;
    b.keep_alive(Duration::from_secs(1));
    let mut acked = vec![id_of(&alice.send(group, "before").await["id"])];
    let watching = tokio::spawn(until_closed(b));
    let stopping = tokio::spawn(node.stop());
    // Sends keep being served while the node drains (REST is not cut off), until it exits
    // (here as soon as its one socket is closed).
    let http = reqwest::Client::new();
    let mut i = 0;
    while !watching.is_finished() {
        let r = http
            .post(format!("{}/v1/channels/{group}/messages", alice.base))
            .bearer_auth(alice.token.clone().unwrap())
            .json(&json!({"text": format!("during {i}")}))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 201
        {
            let body: serde_json::Value = r.json().await.unwrap();
            acked.push(id_of(&body["id"]));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = watching.await.unwrap();
    assert_eq!(drained.code, Some(4010));
    let after_ms = drained.after_ms.expect("reconnect before the close");
    stopping.await.unwrap();

    // The node comes back (a new pod on the same volume); more is sent before Bob returns.
    let mut config = chat_node::config::Config::for_tests(dir);
    config.drain_window = Duration::ZERO;
    let node = TestNode::start_in(config).await;
    let alice = alice.on(&node.base);
    acked.push(id_of(&alice.send(group, "after").await["id"]));
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    let last = drained.messages.last().copied();
    assert!(last.is_some(), "bob saw at least the first message live");
    let (mut b, _) = bob.on(&node.base).connect(last).await;
    let mut seen = drained.messages.clone();
    while let Some(Next::Frame(t)) = b.next_within(Duration::from_millis(500)).await {
        let f: serde_json::Value = serde_json::from_str(&t).unwrap();
        if f["t"] == "message" {
            seen.push(id_of(&f["d"]["id"]));
        }
    }
    let missing: Vec<&Id> = acked.iter().filter(|id| !seen.contains(id)).collect();
    assert!(missing.is_empty(), "missed {missing:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "nothing twice");
    node.stop().await;
}
