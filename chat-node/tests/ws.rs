//! The WebSocket protocol of an embedded node, driven by a real WebSocket client.
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom; the 80-line bar is for non-test code"
)]

mod common;

use std::time::Duration;

use common::{Next, TestNode, Ws};
use parley_protocol::Id;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn id_of(v: &serde_json::Value) -> Id {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn hello_ping_send_and_events_reach_every_member() {
    let node = TestNode::start().await;
    let (alice, bob, carol) = (
        node.user("alice").await,
        node.user("bob").await,
        node.user("carol").await,
    );
    let group = alice.create_group("g").await;
    bob.join(group).await;

    let (mut a, ready) = alice.connect(None).await;
    assert_eq!(ready.d["user_id"], alice.id().to_string());
    assert_eq!(ready.d["heartbeat_interval_ms"], 15000);
    assert_eq!(
        ready.d["channels"],
        json!([{"id": group.to_string(), "last_seq": 0}])
    );
    let (mut b, _) = bob.connect(None).await;
    let (mut c, _) = carol.connect(None).await;

    a.op("ping", "p1", json!({})).await;
    let pong = a.reply("p1").await;
    assert_eq!(pong.t, "pong");
    assert!(pong.d["server_time"].as_str().unwrap().ends_with('Z'));

    a.op(
        "send",
        "s1",
        json!({"channel_id": group.to_string(), "text": "hi bob", "client_msg_id": "m1"}),
    )
    .await;
    let ok = a.reply("s1").await;
    assert_eq!(ok.t, "ok");
    assert_eq!(ok.d["message"]["seq"], 1);
    let ev = b.expect("message").await;
    assert_eq!(ev.d["text"], "hi bob");
    assert_eq!(ev.r#ref, None);
    let own = a.expect("message").await;
    assert_eq!(
        own.d["id"], ok.d["message"]["id"],
        "the sender's connections get the event too"
    );

    // Typing and read go to the other members only.
    b.op("typing", "t1", json!({"channel_id": group.to_string()}))
        .await;
    assert_eq!(b.reply("t1").await.t, "ok");
    let typing = a.expect("typing").await;
    assert_eq!(
        typing.d,
        json!({"channel_id": group.to_string(), "user_id": bob.id().to_string()})
    );
    b.op(
        "read",
        "r1",
        json!({"channel_id": group.to_string(), "message_id": ok.d["message"]["id"]}),
    )
    .await;
    assert_eq!(b.reply("r1").await.t, "ok");
    let read = a.expect("read").await;
    assert_eq!(read.d["user_id"], bob.id().to_string());
    assert!(
        b.drain(Duration::from_millis(200))
            .await
            .iter()
            .all(|f| f.t != "typing" && f.t != "read")
    );

    // history over the socket.
    b.op(
        "history",
        "h1",
        json!({"channel_id": group.to_string(), "limit": 10}),
    )
    .await;
    let h = b.reply("h1").await;
    assert_eq!(h.d["messages"][0]["text"], "hi bob");
    assert_eq!(h.d["has_more"], false);

    // Carol joins: her connection learns it and starts getting the channel's events.
    carol.join(group).await;
    let joined = c.expect("channel_joined").await;
    assert_eq!(joined.d["channel"]["id"], group.to_string());
    let mj = a.expect("member_joined").await;
    assert_eq!(mj.d["user_id"], carol.id().to_string());
    let p = a.expect("presence").await;
    assert_eq!(
        (p.d["user_id"].clone(), p.d["status"].clone()),
        (json!(carol.id().to_string()), json!("online"))
    );
    bob.send(group, "welcome carol").await;
    assert_eq!(c.expect("message").await.d["text"], "welcome carol");

    // Carol leaves: others hear member_left, she gets no more messages.
    let r = carol
        .post(&format!("/v1/channels/{group}/leave"), &json!({}))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        a.expect("member_left").await.d["user_id"],
        carol.id().to_string()
    );
    bob.send(group, "bye carol").await;
    assert_eq!(a.expect("message").await.d["text"], "bye carol");
    assert!(
        c.drain(Duration::from_millis(300))
            .await
            .iter()
            .all(|f| f.t != "message")
    );
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_socket_stays_open() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let other = node.user("other").await;
    let group = alice.create_group("g").await;
    let private = other.create_group("private").await;
    let (mut ws, _) = alice.connect(None).await;

    ws.send_text("this is not json").await;
    let e = ws.expect("error").await;
    assert_eq!(e.d["code"], "bad_request");
    ws.send_text(r#"{"op":"teleport","ref":"x1"}"#).await;
    let e = ws.reply("x1").await;
    assert_eq!(
        (e.t.as_str(), e.d["code"].as_str()),
        ("error", Some("bad_request"))
    );
    ws.send_text(r#"{"op":"send","ref":"x2","d":{"channel_id":5,"text":"x","client_msg_id":"c"}}"#)
        .await;
    assert_eq!(ws.reply("x2").await.d["code"], "bad_request");
    ws.send_text(r#"{"op":"send","ref":"x3","d":{"channel_id":"1","text":"x"}}"#)
        .await;
    assert_eq!(
        ws.reply("x3").await.d["code"],
        "bad_request",
        "client_msg_id is required on send"
    );
    ws.op("hello", "x4", json!({"token": "t"})).await;
    assert_eq!(ws.reply("x4").await.d["code"], "bad_request");
    ws.op(
        "send",
        "x5",
        json!({"channel_id": private.to_string(), "text": "let me in", "client_msg_id": "c5"}),
    )
    .await;
    assert_eq!(ws.reply("x5").await.d["code"], "forbidden");
    ws.op(
        "send",
        "x6",
        json!({"channel_id": group.to_string(), "text": "y".repeat(4001), "client_msg_id": "c6"}),
    )
    .await;
    assert_eq!(ws.reply("x6").await.d["code"], "too_large");
    ws.op(
        "history",
        "x7",
        json!({"channel_id": group.to_string(), "limit": 0}),
    )
    .await;
    assert_eq!(ws.reply("x7").await.d["code"], "bad_request");
    assert!(ws.send_raw(WsMessage::Binary(vec![1, 2, 3].into())).await);
    assert_eq!(ws.expect("error").await.d["code"], "bad_request");

    // Still open, still working.
    ws.op(
        "send",
        "ok1",
        json!({"channel_id": group.to_string(), "text": "fine", "client_msg_id": "c7"}),
    )
    .await;
    let ok = ws.reply("ok1").await;
    assert_eq!(ok.t, "ok");
    assert_eq!(
        ok.d["message"]["seq"], 1,
        "nothing was half-written by the bad frames"
    );

    // A frame over 64 KiB closes with 1009.
    ws.send_text(&format!(
        r#"{{"op":"ping","d":{{"pad":"{}"}}}}"#,
        "z".repeat(70 * 1024)
    ))
    .await;
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(1009));
}

#[tokio::test]
async fn hello_is_required_first_and_must_be_valid() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;

    let mut ws = Ws::open(&alice.ws_url()).await;
    ws.op("ping", "p", json!({})).await;
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(4001));

    let mut ws = Ws::open(&alice.ws_url()).await;
    ws.op("hello", "h", json!({"token": "forged"})).await;
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(4001));

    let mut ws = Ws::open(&alice.ws_url()).await;
    let started = std::time::Instant::now();
    assert_eq!(
        ws.closed(Duration::from_secs(15)).await,
        Some(4001),
        "silence for 10 s"
    );
    assert!(started.elapsed() >= Duration::from_secs(9));
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_messages_before_live_ones() {
    let node = TestNode::start().await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    let group = alice.create_group("g").await;
    bob.join(group).await;
    let dm = id_of(
        &bob.post("/v1/dms", &json!({"user_id": alice.id().to_string()}))
            .await
            .body["id"],
    );

    let seen = alice.send(group, "seen").await;
    let seen_id = id_of(&seen["id"]);
    for i in 1..=3 {
        alice.send(group, &format!("missed {i}")).await;
    }
    alice.send(dm, "missed dm").await;

    let (mut b, ready) = bob.connect(Some(seen_id)).await;
    let cursors = ready.d["channels"].as_array().unwrap();
    assert!(cursors.contains(&json!({"id": group.to_string(), "last_seq": 4})));
    let mut texts = Vec::new();
    for _ in 0..4 {
        let f = b.next_frame().await;
        if f.t == "message" {
            texts.push(f.d["text"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(texts, ["missed 1", "missed 2", "missed 3", "missed dm"]);
    alice.send(group, "live").await;
    assert_eq!(b.expect("message").await.d["text"], "live");
    assert!(
        b.drain(Duration::from_millis(200))
            .await
            .iter()
            .all(|f| f.t != "message"),
        "no duplicates"
    );
}

#[tokio::test]
async fn resume_beyond_1000_messages_asks_for_a_resync() {
    let node = TestNode::with(|c| {
        c.limits.send_rate = 100_000;
        c.limits.send_burst = 100_000;
    })
    .await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    let group = alice.create_group("busy").await;
    let quiet = alice.create_group("quiet").await;
    bob.join(group).await;
    bob.join(quiet).await;
    let first = id_of(&alice.send(quiet, "before").await["id"]);
    for i in 0..1005 {
        alice.send(group, &format!("m{i}")).await;
    }
    let (mut b, _) = bob.connect(Some(first)).await;
    let mut messages = 0;
    let mut resync = Vec::new();
    while let Some(Next::Frame(t)) = b.next_within(Duration::from_millis(500)).await {
        let f: serde_json::Value = serde_json::from_str(&t).unwrap();
        match f["t"].as_str().unwrap() {
            "message" => messages += 1,
            "resync_required" => resync.push(f["d"]["channel_id"].clone()),
            _ => {}
        }
    }
    assert_eq!(messages, 1000, "at most 1000 replayed");
    assert_eq!(resync, [json!(group.to_string())]);
}

#[tokio::test]
async fn repeated_client_msg_id_returns_the_original_and_delivers_nothing_new() {
    let node = TestNode::start().await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    let group = alice.create_group("g").await;
    bob.join(group).await;
    let (mut a, _) = alice.connect(None).await;
    let (mut b, _) = bob.connect(None).await;
    let d = json!({"channel_id": group.to_string(), "text": "once", "client_msg_id": "dup-1"});
    a.op("send", "1", d.clone()).await;
    let first = a.reply("1").await;
    a.op("send", "2", d).await;
    let second = a.reply("2").await;
    assert_eq!(first.d["message"]["id"], second.d["message"]["id"]);
    assert_eq!(b.expect("message").await.d["text"], "once");
    assert!(
        b.drain(Duration::from_millis(300))
            .await
            .iter()
            .all(|f| f.t != "message")
    );
}

#[tokio::test]
async fn concurrent_senders_get_gapless_ordered_seqs() {
    let node = TestNode::with(|c| c.limits.send_burst = 1000).await;
    let users = [
        node.user("user1").await,
        node.user("user2").await,
        node.user("user3").await,
    ];
    let group = users[0].create_group("g").await;
    for u in &users[1..] {
        u.join(group).await;
    }
    let watcher = node.user("watcher").await;
    watcher.join(group).await;
    let (mut w, _) = watcher.connect(None).await;
    let mut tasks = Vec::new();
    for u in users {
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = u.connect(None).await;
            for i in 0..30 {
                ws.op("send", &format!("r{i}"), json!({"channel_id": group.to_string(), "text": format!("{i}"), "client_msg_id": format!("c{i}")})).await;
                assert_eq!(ws.reply(&format!("r{i}")).await.t, "ok");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut seqs = Vec::new();
    let mut ids = Vec::new();
    while seqs.len() < 90 {
        let f = w.expect("message").await;
        seqs.push(f.d["seq"].as_u64().unwrap());
        ids.push(id_of(&f.d["id"]));
    }
    assert_eq!(
        seqs,
        (1..=90).collect::<Vec<u64>>(),
        "delivered in seq order without gaps"
    );
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "and in id order");
}

#[tokio::test]
async fn presence_follows_heartbeats() {
    let node = TestNode::with(|c| c.heartbeat_interval = Duration::from_millis(500)).await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    bob.post("/v1/dms", &json!({"user_id": alice.id().to_string()}))
        .await;
    let (mut b, ready) = bob.connect(None).await;
    assert_eq!(ready.d["heartbeat_interval_ms"], 500);
    let (mut a, _) = alice.connect(None).await;
    let online = b.expect("presence").await;
    assert_eq!(online.d["user_id"], alice.id().to_string());
    assert_eq!(online.d["status"], "online");
    let r = bob
        .get(&format!("/v1/presence?user_ids={},{}", alice.id(), 4242))
        .await;
    assert_eq!(r.body["presence"][0]["status"], "online");
    assert_eq!(r.body["presence"][1]["status"], "offline");

    // Bob keeps pinging; Alice goes quiet: idle after 3 intervals, closed 4002 after 5.
    let pinger = tokio::spawn(async move {
        for i in 0..12 {
            b.op("ping", &format!("p{i}"), json!({})).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        b
    });
    assert_eq!(a.closed(Duration::from_secs(5)).await, Some(4002));
    let mut b = pinger.await.unwrap();
    let statuses: Vec<String> = b
        .drain(Duration::from_millis(200))
        .await
        .into_iter()
        .filter(|f| f.t == "presence")
        .map(|f| f.d["status"].as_str().unwrap().to_owned())
        .collect();
    // Bob's socket buffered the transitions while he pinged.
    assert_eq!(statuses, ["idle", "offline"]);
    let r = bob
        .get(&format!("/v1/presence?user_ids={}", alice.id()))
        .await;
    assert_eq!(r.body["presence"][0]["status"], "offline");
}

#[tokio::test]
async fn a_client_that_asks_gets_presence_in_batches() {
    let node = TestNode::start().await;
    let bob = node.user("bob").await;
    let group = bob.create_group("g").await;
    let mut others = Vec::new();
    for name in ["ann", "cat", "dan", "eve"] {
        let u = node.user(name).await;
        u.join(group).await;
        others.push(u);
    }
    let mut b = Ws::open(&bob.ws_url()).await;
    b.send_json(&json!({"op": "hello", "ref": "h",
        "d": {"token": bob.token.clone().unwrap(), "presence_batch": true}}))
        .await;
    assert_eq!(b.next_frame().await.t, "ready");
    let mut sockets = Vec::new();
    for u in &others {
        sockets.push(u.connect(None).await.0);
    }
    // Each user's status arrives once, inside presence_batch frames; no presence frame.
    let mut told: Vec<(String, String)> = Vec::new();
    let mut batches = 0;
    while told.len() < others.len() {
        let f = b.next_frame().await;
        assert_eq!(f.t, "presence_batch", "{f:?}");
        batches += 1;
        for p in f.d["presences"].as_array().expect("presences") {
            let user = p["user_id"].as_str().unwrap().to_owned();
            told.push((user, p["status"].as_str().unwrap().to_owned()));
        }
    }
    told.sort();
    let mut want: Vec<(String, String)> = others
        .iter()
        .map(|u| (u.id().to_string(), "online".to_owned()))
        .collect();
    want.sort();
    assert_eq!(told, want);
    // (How many batches depends on when the session took them: coalescing itself is
    // checked in the hub's tests.)
    assert!(batches >= 1);
    // Later changes come the same way.
    sockets.pop().unwrap().close().await;
    let off = b.next_frame().await;
    assert_eq!(off.t, "presence_batch");
    assert_eq!(off.d["presences"][0]["user_id"], others[3].id().to_string());
    assert_eq!(off.d["presences"][0]["status"], "offline");
    // A client that did not ask still gets one presence frame per change.
    let (mut a, _) = others[0].connect(None).await;
    sockets.pop().unwrap().close().await;
    let f = a.expect("presence").await;
    assert_eq!(f.d["user_id"], others[2].id().to_string());
    assert_eq!(f.d["status"], "offline");
}

#[tokio::test]
async fn a_clean_close_is_offline_at_once() {
    let node = TestNode::start().await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    bob.post("/v1/dms", &json!({"user_id": alice.id().to_string()}))
        .await;
    let (mut b, _) = bob.connect(None).await;
    let (a, _) = alice.connect(None).await;
    assert_eq!(b.expect("presence").await.d["status"], "online");
    a.close().await;
    let off = b.expect("presence").await;
    assert_eq!(off.d["status"], "offline");
    assert!(off.d["last_seen"].as_str().is_some());
}

#[tokio::test]
async fn foreign_origins_are_refused() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        alice.ws_url(),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        alice.ws_url(),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", node.base.parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(req).await.is_ok(),
        "same origin is fine"
    );
}

#[tokio::test]
async fn shutdown_drains_sockets_with_reconnect_and_4010() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let (mut ws, _) = alice.connect(None).await;
    let stopping = tokio::spawn(node.stop());
    let f = ws.expect("reconnect").await;
    assert!(f.d["after_ms"].as_u64().is_some(), "{f:?}");
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(4010));
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_hard_shutdown_closes_sockets_with_1001() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let (mut ws, _) = alice.connect(None).await;
    node.chat.lifecycle().shutdown().cancel();
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(1001));
    node.stop().await;
}

#[tokio::test]
async fn frames_over_the_rate_get_errors_that_echo_their_ref() {
    let node = TestNode::with(|c| {
        c.limits.ws_frame_rate = 5;
        c.limits.ws_frame_burst = 5;
    })
    .await;
    let alice = node.user("alice").await;
    let (mut ws, _) = alice.connect(None).await;
    for i in 0..8 {
        ws.op("ping", &format!("p{i}"), json!({})).await;
    }
    let mut limited = 0;
    for i in 0..8 {
        let f = ws.reply(&format!("p{i}")).await;
        if f.t == "error" {
            assert_eq!(f.d["code"], "rate_limited");
            limited += 1;
        }
    }
    assert!(
        limited >= 2,
        "frames over the burst are refused ({limited})"
    );
}
