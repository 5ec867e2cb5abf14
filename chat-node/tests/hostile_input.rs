//! Input a hostile or buggy client sends, refused where it is parsed or checked against what
//! it must name: IDs that name nothing in scope, IDs above `i64::MAX`, presence of strangers,
//! uploads replaced after the fact, a world-readable data directory, and per-user caps.
//! Embedded nodes in-process; distributed mode as real processes over `dev/services`.
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom; the 80-line bar is for non-test code"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Api, Next, TestNode, Ws};
use parley_e2e::client::{WAIT, id_of};
use parley_e2e::cluster::{Cluster, Options};
use parley_protocol::Id;
use serde_json::{Value, json};

/// Just above `i64::MAX`, and `u64::MAX`: both wrapped to negative numbers in the stores.
const BIG: [&str; 2] = ["9223372036854775808", "18446744073709551615"];
/// `i64::MAX`: the largest valid ID.
const MAX: &str = "9223372036854775807";

fn messages(path: &str) -> String {
    format!("/v1/channels/{path}/messages")
}

/// A POST that also returns the `Retry-After` header.
async fn post_seeing_headers(api: &Api, path: &str, body: &Value) -> (u16, String, Option<u64>) {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", api.base))
        .bearer_auth(api.token.clone().unwrap())
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code, retry)
}

/// The error reply to `op`, or a panic with what came instead.
async fn ws_error(ws: &mut Ws, op: &str, r#ref: &str, d: Value) -> String {
    ws.op(op, r#ref, d.clone()).await;
    let reply = ws.reply(r#ref).await;
    assert_eq!(reply.t, "error", "{op} {d} was accepted: {reply:?}");
    reply.d["code"].as_str().unwrap().to_owned()
}

/// Every route and op that takes an ID refuses `9223372036854775808` and `u64::MAX` with
/// `bad_request`, and `i64::MAX` itself is a valid (empty) cursor. `group` has messages.
async fn assert_big_ids_refused(alice: &Api, group: Id) {
    let r = alice
        .get(&format!("{}?after={MAX}", messages(&group.to_string())))
        .await;
    assert_eq!(r.status, 200, "after=i64::MAX: {:?}", r.body);
    assert_eq!(r.body["messages"], json!([]), "nothing is after i64::MAX");
    for big in BIG {
        for path in [
            format!("{}?after={big}", messages(&group.to_string())),
            format!("{}?before={big}", messages(&group.to_string())),
            format!("/v1/sync?after={big}"),
            format!("/v1/channels/{big}"),
            messages(big),
            format!("/v1/users/{big}"),
            format!("/v1/media/{big}"),
            format!("/v1/presence?user_ids={big}"),
        ] {
            let r = alice.get(&path).await;
            assert_eq!(
                (r.status, r.code()),
                (400, "bad_request"),
                "GET {path}: {:?}",
                r.body
            );
        }
        for (path, body) in [
            (
                format!("/v1/channels/{group}/read"),
                json!({"message_id": big}),
            ),
            (
                messages(&group.to_string()),
                json!({"text": "hi", "reply_to": big}),
            ),
            (
                messages(&group.to_string()),
                json!({"text": "hi", "attachments": [big]}),
            ),
            ("/v1/dms".to_owned(), json!({"user_id": big})),
            (format!("/v1/channels/{big}/join"), json!({})),
        ] {
            let r = alice.post(&path, &body).await;
            assert_eq!(
                (r.status, r.code()),
                (400, "bad_request"),
                "POST {path} {body}: {:?}",
                r.body
            );
        }

        let (mut ws, _) = alice.connect(None).await;
        let g = group.to_string();
        for (op, d) in [
            ("history", json!({"channel_id": g, "after": big})),
            ("history", json!({"channel_id": g, "before": big})),
            ("read", json!({"channel_id": g, "message_id": big})),
            (
                "send",
                json!({"channel_id": g, "text": "hi", "client_msg_id": "c", "reply_to": big}),
            ),
            ("typing", json!({"channel_id": big})),
        ] {
            assert_eq!(ws_error(&mut ws, op, "r", d).await, "bad_request", "{op}");
        }
        ws.close().await;

        // A hello whose resume_after is out of range is a bad hello: no replay of everything.
        let mut ws = Ws::open(&alice.ws_url()).await;
        ws.send_json(&json!({"op": "hello", "ref": "h", "d": {
            "token": alice.token.clone().unwrap(), "resume_after": big}}))
            .await;
        match ws.next_within(WAIT).await {
            Some(Next::Closed(code)) => assert_eq!(code, Some(4001)),
            other => panic!("hello with resume_after={big} answered {other:?}"),
        }
    }
}

#[tokio::test]
async fn ids_above_i64_max_are_refused_embedded() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let group = alice.create_group("big-ids").await;
    alice.send(group, "one").await;
    alice.send(group, "two").await;
    assert_big_ids_refused(&alice, group).await;
}

/// Read markers and replies name a message of their own channel; a marker cannot be parked
/// beyond every message.
#[tokio::test]
async fn read_markers_and_replies_name_a_message_of_their_channel() {
    let node = TestNode::start().await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    let g1 = alice.create_group("g1").await;
    bob.join(g1).await;
    let g2 = alice.create_group("g2").await;
    let m1 = id_of(&alice.send(g1, "in g1").await["id"]);
    let m2 = id_of(&alice.send(g2, "in g2").await["id"]);
    let (mut b, _) = bob.connect(None).await;

    let read = |message: String| json!({ "message_id": message });
    let far_future = "9223372036854775000".to_owned();
    for (what, message) in [
        ("another channel's message", m2.to_string()),
        ("no message", (m1.0 + 1).to_string()),
        ("a message far in the future", far_future.clone()),
        ("the channel itself", g1.to_string()),
        ("a user", bob.id().to_string()),
    ] {
        let r = alice
            .post(&format!("/v1/channels/{g1}/read"), &read(message))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "read marker at {what}: {:?}",
            r.body
        );
    }
    // Nothing was parked: the real message moves the marker, and members are told.
    let r = alice
        .post(&format!("/v1/channels/{g1}/read"), &read(m1.to_string()))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let ev = b.expect("read").await;
    assert_eq!(ev.d["message_id"], m1.to_string());

    for (what, target) in [
        ("another channel's message", m2),
        ("a channel", g1),
        ("a user", bob.id()),
        ("no message", Id(m1.0 + 1)),
    ] {
        let r = alice
            .post(
                &messages(&g1.to_string()),
                &json!({"text": "re", "reply_to": target.to_string()}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "reply_to {what}: {:?}",
            r.body
        );
    }
    let r = alice
        .post(
            &messages(&g1.to_string()),
            &json!({"text": "re", "reply_to": m1.to_string()}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["reply_to"], m1.to_string());

    // The same over WebSocket.
    let (mut a, _) = alice.connect(None).await;
    let g = g1.to_string();
    for (op, d) in [
        (
            "read",
            json!({"channel_id": g, "message_id": m2.to_string()}),
        ),
        ("read", json!({"channel_id": g, "message_id": far_future})),
        (
            "send",
            json!({"channel_id": g, "text": "re", "client_msg_id": "w1", "reply_to": m2.to_string()}),
        ),
        (
            "send",
            json!({"channel_id": g, "text": "re", "client_msg_id": "w2", "reply_to": g2.to_string()}),
        ),
    ] {
        assert_eq!(
            ws_error(&mut a, op, "x", d.clone()).await,
            "bad_request",
            "{d}"
        );
    }
    a.op(
        "send",
        "ok",
        json!({"channel_id": g, "text": "re", "client_msg_id": "w3", "reply_to": m1.to_string()}),
    )
    .await;
    assert_eq!(a.reply("ok").await.t, "ok");
}

/// `GET /v1/presence` tells only about users who share a channel with the caller; anyone
/// else reads as offline, never seen. The number of IDs is capped.
#[tokio::test]
async fn presence_of_strangers_reads_offline() {
    let node = TestNode::with(|c| c.quotas.presence_max_ids = 3).await;
    let (alice, bob, carol) = (
        node.user("alice").await,
        node.user("bob").await,
        node.user("carol").await,
    );
    let group = alice.create_group("friends").await;
    bob.join(group).await;
    let (_b, _) = bob.connect(None).await;
    let (_c, _) = carol.connect(None).await;
    let (_a, _) = alice.connect(None).await;

    let r = alice
        .get(&format!(
            "/v1/presence?user_ids={},{},{}",
            bob.id(),
            carol.id(),
            alice.id()
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let p = r.body["presence"].as_array().unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(p[0]["user_id"], bob.id().to_string());
    assert_eq!(p[0]["status"], "online", "a member of a shared group");
    assert_eq!(p[1]["user_id"], carol.id().to_string());
    assert_eq!(p[1]["status"], "offline", "a stranger: {:?}", p[1]);
    assert_eq!(p[1]["last_seen"], Value::Null, "a stranger: {:?}", p[1]);
    assert_eq!(p[2]["status"], "online", "oneself");

    // A DM makes them share a channel.
    let r = alice
        .post("/v1/dms", &json!({"user_id": carol.id().to_string()}))
        .await;
    assert_eq!(r.status, 201);
    let r = alice
        .get(&format!("/v1/presence?user_ids={}", carol.id()))
        .await;
    assert_eq!(r.body["presence"][0]["status"], "online");

    let r = alice.get("/v1/presence?user_ids=1,2,3,4").await;
    assert_eq!((r.status, r.code()), (400, "bad_request"), "{:?}", r.body);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every directory under `root` is 0700 and every file 0600.
#[cfg(unix)]
fn assert_private_tree(root: &Path) -> usize {
    let mut seen = 0;
    assert_eq!(mode(root), 0o700, "{}", root.display());
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        seen += 1;
        if path.is_dir() {
            seen += assert_private_tree(&path);
        } else {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    seen
}

/// The embedded data directory (DMs, password hashes, secrets, media) is readable by the
/// node's user only: created 0700 with files 0600, and tightened when found looser.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = common::temp_dir("private");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = root.join("data");
    let node = TestNode::start_in(chat_node::config::Config::for_tests(data.clone())).await;
    let alice = node.user("alice").await;
    let group = alice.create_group("g").await;
    alice.send(group, "a secret").await;
    let bytes = b"some bytes".to_vec();
    let r = alice
        .post(
            "/v1/media",
            &json!({"filename": "a.txt", "content_type": "text/plain", "size": bytes.len()}),
        )
        .await;
    let upload = &r.body["upload"];
    let mut req = reqwest::Client::new()
        .put(upload["url"].as_str().unwrap())
        .body(bytes);
    for (k, v) in upload["headers"].as_object().unwrap() {
        req = req.header(k, v.as_str().unwrap());
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    for file in ["parley.db", "parley.db-wal", "jwt-secret", "blob-key"] {
        assert!(data.join(file).exists(), "{file}");
    }
    assert!(assert_private_tree(&data) >= 7);
    node.stop().await;

    // A directory made by someone else with the usual 0755/0644 is tightened on start.
    let loose = root.join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(loose.join("parley.db"), b"").unwrap();
    std::fs::set_permissions(
        loose.join("parley.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let node = TestNode::start_in(chat_node::config::Config::for_tests(loose.clone())).await;
    node.user("bob").await;
    assert_private_tree(&loose);
    node.stop().await;
    std::fs::remove_dir_all(&root).ok();
}

async fn put_upload(upload: &Value, body: Vec<u8>) -> u16 {
    let mut req = reqwest::Client::new()
        .put(upload["url"].as_str().unwrap())
        .body(body);
    for (k, v) in upload["headers"].as_object().unwrap() {
        req = req.header(k, v.as_str().unwrap());
    }
    req.send().await.unwrap().status().as_u16()
}

/// An uploaded object cannot be replaced through its upload URL, before or after it was
/// attached; the first upload stays. `conflict` is the embedded store's answer (409), S3's
/// is 412 Precondition Failed.
async fn assert_uploads_are_immutable(alice: &Api, group: Id, refused: u16) {
    let first = b"the original bytes".to_vec();
    let r = alice
        .post(
            "/v1/media",
            &json!({"filename": "doc.txt", "content_type": "text/plain", "size": first.len()}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let upload = r.body["upload"].clone();
    let id = r.body["attachment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(put_upload(&upload, first.clone()).await, 200);
    let other = b"some other bytes!!".to_vec();
    assert_eq!(other.len(), first.len());
    assert_eq!(
        put_upload(&upload, other.clone()).await,
        refused,
        "a second PUT before attaching"
    );
    let r = alice
        .post(
            &messages(&group.to_string()),
            &json!({"text": "see", "attachments": [id]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let url = r.body["attachments"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        put_upload(&upload, other).await,
        refused,
        "a PUT after attaching"
    );
    let got = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.to_vec(), first, "the attached object was replaced");
}

#[tokio::test]
async fn an_uploaded_object_cannot_be_replaced_embedded() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let group = alice.create_group("g").await;
    assert_uploads_are_immutable(&alice, group, 409).await;
}

/// Per-user caps: groups created, DMs opened with strangers, uploads (count and bytes).
#[tokio::test]
async fn per_user_quotas() {
    let node = TestNode::with(|c| {
        c.quotas.groups_per_day = 2;
        c.quotas.stranger_dms_per_day = 1;
        c.quotas.uploads_per_hour = 2;
        c.quotas.upload_mib_per_hour = 1;
    })
    .await;
    let (alice, bob, carol, dave, erin) = (
        node.user("alice").await,
        node.user("bob").await,
        node.user("carol").await,
        node.user("dave").await,
        node.user("erin").await,
    );

    let group = alice.create_group("q1").await;
    alice.create_group("q2").await;
    let (status, code, retry) =
        post_seeing_headers(&alice, "/v1/channels", &json!({"name": "q3"})).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limited"),
        "a third group"
    );
    assert!(
        retry.is_some_and(|s| s > 0),
        "Retry-After on a capped group"
    );
    bob.create_group("bobs").await;

    bob.join(group).await;
    let dm = |u: &Api| json!({ "user_id": u.id().to_string() });
    assert_eq!(
        alice.post("/v1/dms", &dm(&bob)).await.status,
        201,
        "not a stranger"
    );
    assert_eq!(
        alice.post("/v1/dms", &dm(&carol)).await.status,
        201,
        "one stranger"
    );
    assert_eq!(
        alice.post("/v1/dms", &dm(&carol)).await.status,
        200,
        "the same DM"
    );
    let (status, code, retry) = post_seeing_headers(&alice, "/v1/dms", &dm(&dave)).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limited"),
        "a second stranger"
    );
    assert!(retry.is_some_and(|s| s > 0));
    assert_eq!(
        dave.post("/v1/dms", &dm(&erin)).await.status,
        201,
        "others are not capped"
    );

    let media = |size: u64| json!({"filename": "f.bin", "content_type": "application/octet-stream", "size": size});
    assert_eq!(alice.post("/v1/media", &media(10)).await.status, 201);
    assert_eq!(alice.post("/v1/media", &media(10)).await.status, 201);
    let (status, code, retry) = post_seeing_headers(&alice, "/v1/media", &media(10)).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limited"),
        "a third upload"
    );
    assert!(retry.is_some_and(|s| s > 0));

    // Bytes: 1 MiB per hour.
    assert_eq!(erin.post("/v1/media", &media(600 * 1024)).await.status, 201);
    let r = erin.post("/v1/media", &media(2 * 1024 * 1024)).await;
    assert_eq!(
        (r.status, r.code()),
        (413, "too_large"),
        "larger than the hour's amount: {:?}",
        r.body
    );
    let (status, code, retry) = post_seeing_headers(&erin, "/v1/media", &media(600 * 1024)).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limited"),
        "over the bytes"
    );
    assert!(retry.is_some_and(|s| s > 0));
}

/// Distributed mode: two nodes and a persister that is stopped (SIGSTOP) once the channels
/// were taken over (messages then stay in the owners' memory and the log, never reaching
/// the store), so a just-sent message is found only where history finds it: in its owner's
/// sequencer, here or on the other node.
#[tokio::test]
async fn distributed_read_markers_and_replies_find_unstored_messages() {
    let services = parley_e2e::services();
    let cluster = Cluster::start(
        &services,
        Options {
            nodes: 2,
            persisters: 1,
            ..Options::default()
        },
    )
    .await;
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    let bob = Api::register(cluster.url(1), &cluster.name("bob")).await;
    let g1 = alice.create_group(&cluster.name("g1")).await;
    bob.join(g1).await;
    let g2 = alice.create_group(&cluster.name("g2")).await;
    // Each owner takes its channel over with the persister running (a take-over appends a
    // fence record and waits until the persisters consumed it), then the persister stops:
    // what is sent next stays unstored, in its owner's memory.
    let m2 = id_of(&alice.send(g2, "in g2").await["id"]);
    alice.send(g1, "first").await;
    cluster.signal_persister(0, "STOP").unwrap();
    for node in 0..2 {
        // Sent through one node, checked on each: the message is only in its owner's memory.
        let m = id_of(&alice.send(g1, &format!("via {node}")).await["id"]);
        let a = alice.on(cluster.url(node));
        let r = a
            .post(
                &format!("/v1/channels/{g1}/read"),
                &json!({"message_id": m.to_string()}),
            )
            .await;
        assert_eq!(
            r.status, 204,
            "a just-sent message on node {node}: {:?}",
            r.body
        );
        let r = a
            .post(
                &messages(&g1.to_string()),
                &json!({"text": "re", "reply_to": m.to_string()}),
            )
            .await;
        assert_eq!(r.status, 201, "a reply on node {node}: {:?}", r.body);
        for bad in [
            m2.to_string(),
            g1.to_string(),
            bob.id().to_string(),
            "9223372036854775000".to_owned(),
        ] {
            let r = a
                .post(
                    &format!("/v1/channels/{g1}/read"),
                    &json!({"message_id": bad}),
                )
                .await;
            assert_eq!((r.status, r.code()), (400, "bad_request"), "read {bad}");
            let r = a
                .post(
                    &messages(&g1.to_string()),
                    &json!({"text": "re", "reply_to": bad}),
                )
                .await;
            assert_eq!((r.status, r.code()), (400, "bad_request"), "reply_to {bad}");
        }
    }
    cluster.signal_persister(0, "CONT").unwrap();
}

/// Distributed mode: IDs above i64::MAX are refused before they reach PostgreSQL (where
/// they wrapped to negative numbers, or failed a cast with a 500).
#[tokio::test]
async fn distributed_ids_above_i64_max_are_refused() {
    let services = parley_e2e::services();
    let cluster = Cluster::start(
        &services,
        Options {
            nodes: 1,
            persisters: 1,
            ..Options::default()
        },
    )
    .await;
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    let group = alice.create_group(&cluster.name("big-ids")).await;
    alice.send(group, "one").await;
    alice.send(group, "two").await;
    assert_big_ids_refused(&alice, group).await;
}

/// Distributed mode: the presigned S3 PUT is conditional (`If-None-Match: *`, signed, in
/// `upload.headers`), so MinIO refuses to overwrite an object.
#[tokio::test]
async fn distributed_uploads_are_immutable_on_s3() {
    let services = parley_e2e::services();
    let cluster = Cluster::start(
        &services,
        Options {
            nodes: 1,
            persisters: 1,
            ..Options::default()
        },
    )
    .await;
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    let group = alice.create_group(&cluster.name("files")).await;
    let r = alice
        .post(
            "/v1/media",
            &json!({"filename": "x.txt", "content_type": "text/plain", "size": 3}),
        )
        .await;
    let headers = r.body["upload"]["headers"].clone();
    assert_eq!(
        headers
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("if-none-match"))
            .map(|(_, v)| v.clone()),
        Some(json!("*")),
        "upload.headers: {headers}"
    );
    assert_uploads_are_immutable(&alice, group, 412).await;
    // Idle a moment so the persister's work does not race the cluster's teardown.
    tokio::time::sleep(Duration::from_millis(100)).await;
}
