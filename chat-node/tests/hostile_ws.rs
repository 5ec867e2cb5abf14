//! Hostile WebSocket clients against a real embedded node: a reader that stops reading, a
//! client that stops pinging, sockets opened during a drain, a user with too many sessions,
//! resumes that replay the backlog over and over, typing multiplied over sessions, and a
//! token that expires mid-session. Each is bounded by a documented setting.

mod common;

use std::time::{Duration, Instant};

use common::{Api, Next, TestNode, Ws};
use futures_util::{SinkExt as _, StreamExt as _};
use parley_protocol::Id;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const BOUND: Duration = Duration::from_secs(20);

fn addr(node: &TestNode) -> String {
    node.base.trim_start_matches("http://").to_owned()
}

/// A socket with a small receive buffer that says hello, reads `ready`, then never reads
/// again (nor pings). Returned so that it stays open.
async fn stop_reading_after_hello(
    node: &TestNode,
    user: &Api,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr(node).parse().unwrap()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(user.ws_url(), tcp)
        .await
        .unwrap();
    let hello = json!({"op": "hello", "ref": "h", "d": {"token": user.token.clone().unwrap()}});
    ws.send(WsMessage::Text(hello.to_string().into()))
        .await
        .unwrap();
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) if t.contains("\"ready\"") => return ws,
            Some(Ok(_)) => {}
            other => panic!("no ready: {other:?}"),
        }
    }
}

/// 4000 four-byte characters: 16 KB per message event.
fn big_text() -> String {
    "\u{1F600}".repeat(4000)
}

/// Sends `n` big messages into `channel` as `by` (stops early once `until` holds).
async fn flood(by: &Api, channel: Id, n: usize, until: impl Fn() -> bool) -> usize {
    let text = big_text();
    for i in 0..n {
        if until() {
            return i;
        }
        let r = by
            .post(
                &format!("/v1/channels/{channel}/messages"),
                &json!({"text": text}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    n
}

async fn wait_for(what: &str, wait: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + wait;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {wait:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unlimited_sends(c: &mut chat_node::config::Config) {
    c.limits.send_rate = 100_000;
    c.limits.send_burst = 100_000;
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_dropped_at_the_write_timeout() {
    let node = TestNode::with(|c| {
        unlimited_sends(c);
        c.ws.ws_write_timeout = Duration::from_millis(1000);
        c.heartbeat_interval = Duration::from_millis(600_000);
    })
    .await;
    let alice = node.user("alice").await;
    let bob = node.user("bob").await;
    let group = alice.create_group("flooded").await;
    bob.join(group).await;
    let _stuck = stop_reading_after_hello(&node, &alice).await;
    assert_eq!(node.chat.hub().connections(), 1);
    // Fewer events than the queue holds (1024) beyond what the socket buffers absorb: only
    // the write timeout can end it.
    let hub = node.chat.hub().clone();
    let sent = flood(&bob, group, 900, || hub.connections() == 0).await;
    println!("{sent} messages sent before the reader was dropped");
    wait_for("the stuck reader dropped and forgotten", BOUND, || {
        node.chat.hub().connections() == 0 && node.chat.lifecycle().drain().open_sessions() == 0
    })
    .await;
    let metrics = alice.get("/metrics").await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(text.lines().any(|l| l == "parley_connections 0"), "{text}");
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_dropped_when_its_queue_overflows() {
    let node = TestNode::with(|c| {
        unlimited_sends(c);
        // Only the queue limit can end it.
        c.ws.ws_write_timeout = Duration::from_millis(600_000);
        c.heartbeat_interval = Duration::from_millis(600_000);
    })
    .await;
    let alice = node.user("alice").await;
    let bob = node.user("bob").await;
    let group = alice.create_group("flooded").await;
    bob.join(group).await;
    let _stuck = stop_reading_after_hello(&node, &alice).await;
    let hub = node.chat.hub().clone();
    let sent = flood(&bob, group, 3000, || hub.connections() == 0).await;
    println!("{sent} messages sent before the reader was dropped");
    wait_for("the overflowing reader dropped", BOUND, || {
        node.chat.hub().connections() == 0
    })
    .await;
}

#[tokio::test]
async fn a_client_that_neither_reads_nor_pings_is_dropped_at_the_heartbeat_expiry() {
    let node = TestNode::with(|c| {
        unlimited_sends(c);
        c.ws.ws_write_timeout = Duration::from_millis(600_000);
        // Offline (and closed with 4002) after 5 missed intervals: 2.5 s.
        c.heartbeat_interval = Duration::from_millis(500);
    })
    .await;
    let alice = node.user("alice").await;
    let bob = node.user("bob").await;
    let group = alice.create_group("flooded").await;
    bob.join(group).await;
    let _stuck = stop_reading_after_hello(&node, &alice).await;
    // Enough to fill the socket buffers (~4 MB), not the queue.
    let hub = node.chat.hub().clone();
    flood(&bob, group, 600, || hub.connections() == 0).await;
    wait_for("the silent reader dropped", BOUND, || {
        node.chat.hub().connections() == 0
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_pinging_gets_4002() {
    let node = TestNode::with(|c| c.heartbeat_interval = Duration::from_millis(500)).await;
    let alice = node.user("alice").await;
    let (mut ws, _) = alice.connect(None).await;
    assert_eq!(ws.closed(BOUND).await, Some(4002));
}

#[tokio::test]
async fn websockets_opened_during_a_drain_are_refused_with_503() {
    let node = TestNode::with(|c| c.drain_window = Duration::from_millis(3000)).await;
    let alice = node.user("alice").await;
    let (mut open, _) = alice.connect(None).await;
    open.keep_alive(Duration::from_millis(500));
    let ws_url = alice.ws_url();
    let chat = node.chat.clone();
    let stopping = tokio::spawn(node.stop());
    wait_for("draining", BOUND, || chat.lifecycle().drain().is_draining()).await;
    let err = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect_err("a WebSocket was upgraded during the drain");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(open.closed(BOUND).await, Some(4010));
    stopping.await.unwrap();
}

/// Says hello on a fresh socket; returns the first frame (or the close) and the socket.
async fn hello(user: &Api, resume_after: Option<u64>) -> (Ws, Option<Next>) {
    let mut ws = Ws::open(&user.ws_url()).await;
    let mut d = json!({"token": user.token.clone().unwrap()});
    if let Some(after) = resume_after {
        d["resume_after"] = json!(after.to_string());
    }
    ws.op("hello", "hello", d).await;
    let first = ws.next_within(BOUND).await;
    (ws, first)
}

fn frame(next: &Option<Next>) -> serde_json::Value {
    match next {
        Some(Next::Frame(t)) => serde_json::from_str(t).unwrap(),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_user_holds_at_most_the_configured_sessions() {
    const MAX: usize = 3;
    let node = TestNode::with(|c| c.ws.ws_max_sessions_per_user = MAX as u32).await;
    let alice = node.user("alice").await;
    let bob = node.user("bob").await;
    let mut open = Vec::new();
    for _ in 0..MAX {
        let (ws, first) = hello(&alice, None).await;
        assert_eq!(frame(&first)["t"], "ready");
        open.push(ws);
    }
    let (mut over, first) = hello(&alice, None).await;
    let f = frame(&first);
    assert_eq!(f["t"], "error", "{f}");
    assert_eq!(f["ref"], "hello");
    assert_eq!(f["d"]["code"], "rate_limited", "{f}");
    assert_eq!(over.closed(BOUND).await, Some(4008));
    // Another user is not affected; a closed session makes room.
    let (_b, first) = hello(&bob, None).await;
    assert_eq!(frame(&first)["t"], "ready");
    open.pop().unwrap().close().await;
    let deadline = Instant::now() + BOUND;
    loop {
        let (ws, first) = hello(&alice, None).await;
        if frame(&first)["t"] == "ready" {
            open.push(ws);
            break;
        }
        assert!(Instant::now() < deadline, "no room after a session closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn resume_replays_are_bounded_per_user() {
    let node = TestNode::with(|c| {
        c.ws.ws_resume_burst = 10;
        c.ws.ws_resume_per_minute = 1;
    })
    .await;
    let alice = node.user("alice").await;
    let group = alice.create_group("history").await;
    for i in 0..4 {
        alice.send(group, &format!("m{i}")).await;
    }
    // Each full replay costs 4 messages of a budget of 10: the third finds it spent.
    let mut replayed = Vec::new();
    let mut refused = None;
    for attempt in 0..5 {
        let (mut ws, first) = hello(&alice, Some(0)).await;
        let f = frame(&first);
        if f["t"] == "ready" {
            let frames = ws.drain(Duration::from_millis(300)).await;
            replayed.push(frames.iter().filter(|f| f.t == "message").count());
            ws.close().await;
            continue;
        }
        assert_eq!(f["t"], "error", "{f}");
        assert_eq!(f["d"]["code"], "rate_limited", "{f}");
        assert_eq!(ws.closed(BOUND).await, Some(4008));
        refused = Some(attempt);
        break;
    }
    assert!(replayed.iter().all(|n| *n == 4), "{replayed:?}");
    assert_eq!(refused, Some(2), "replays before the refusal: {replayed:?}");
    // A hello without resume_after costs nothing and still works.
    let (_ws, first) = hello(&alice, None).await;
    assert_eq!(frame(&first)["t"], "ready");
}

#[tokio::test]
async fn typing_is_limited_per_user_over_all_their_sessions() {
    const SESSIONS: usize = 4;
    const EACH: usize = 5;
    let (rate, burst) = (1u32, 3u32);
    let node = TestNode::with(|c| {
        c.ws.ws_typing_rate = rate;
        c.ws.ws_typing_burst = burst;
    })
    .await;
    let alice = node.user("alice").await;
    let bob = node.user("bob").await;
    let group = alice.create_group("typing").await;
    bob.join(group).await;
    let (mut watcher, _) = bob.connect(None).await;
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(alice.connect(None).await.0);
    }
    let started = Instant::now();
    let (mut ok, mut limited) = (0, 0);
    for round in 0..EACH {
        for ws in &mut sessions {
            let r = format!("t{round}");
            ws.op("typing", &r, json!({"channel_id": group.to_string()}))
                .await;
            let reply = ws.reply(&r).await;
            match reply.t.as_str() {
                "ok" => ok += 1,
                "error" => {
                    assert_eq!(reply.d["code"], "rate_limited", "{reply:?}");
                    limited += 1;
                }
                other => panic!("{other}: {reply:?}"),
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = burst as f64 + rate as f64 * elapsed + 1.0;
    println!("{ok} typing ops accepted, {limited} refused in {elapsed:.2} s");
    assert!(
        (ok as f64) <= allowed,
        "{ok} accepted over {SESSIONS} sessions, at most {allowed} expected"
    );
    let seen = watcher
        .drain(Duration::from_millis(500))
        .await
        .into_iter()
        .filter(|f| f.t == "typing")
        .count();
    assert_eq!(seen, ok, "bob sees exactly the accepted ones");
}

#[tokio::test]
async fn a_session_is_closed_with_4003_when_its_token_expires() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
    let node = TestNode::with(|c| c.jwt_secret = Some(SECRET.into())).await;
    let alice = node.user("alice").await;
    // A token that lives 2 s, signed like the node's own.
    let short = chat_node::auth::Tokens::new(SECRET.as_bytes(), 2)
        .issue(alice.id(), parley_protocol::Timestamp::now());
    let mut brief = alice.clone();
    brief.token = Some(short);
    let (mut ws, _) = brief.connect(None).await;
    ws.keep_alive(Duration::from_millis(500));
    assert_eq!(ws.closed(BOUND).await, Some(4003));
    // A fresh token still works.
    let (_ws, first) = hello(&alice, None).await;
    assert_eq!(frame(&first)["t"], "ready");
}
