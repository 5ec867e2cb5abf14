//! The REST API of an embedded node, driven over real HTTP.
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom; the 80-line bar is for non-test code"
)]

mod common;

use common::TestNode;
use parley_protocol::Id;
use serde_json::json;

#[tokio::test]
async fn register_login_and_users() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let api = node.api();

    let r = api
        .post(
            "/v1/auth/register",
            &json!({"username": "ALICE", "password": "another-password"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict"),
        "usernames are unique regardless of case"
    );
    let r = api
        .post(
            "/v1/auth/register",
            &json!({"username": "a b", "password": "long enough"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = api
        .post(
            "/v1/auth/register",
            &json!({"username": "carol", "password": "short"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));

    let r = api
        .post(
            "/v1/auth/login",
            &json!({"username": "alice", "password": "password-alice"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["user"]["username"], "alice");
    assert!(r.body["token"].as_str().unwrap().len() > 20);
    let r = api
        .post(
            "/v1/auth/login",
            &json!({"username": "alice", "password": "wrong-password"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = api
        .post(
            "/v1/auth/login",
            &json!({"username": "nobody", "password": "wrong-password"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));

    let r = alice.get("/v1/users/me").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["display_name"], "alice D.");
    assert!(r.body["created_at"].as_str().unwrap().ends_with('Z'));
    let r = alice.get(&format!("/v1/users/{}", alice.id())).await;
    assert_eq!(r.body["username"], "alice");
    let r = alice.get("/v1/users?username=Alice").await;
    assert_eq!(r.body["id"], alice.id().to_string());
    let r = alice.get("/v1/users?username=nobody").await;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    let r = api.get("/v1/users/me").await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let mut forged = alice.clone();
    forged.token = Some("not.a.token".into());
    assert_eq!(forged.get("/v1/users/me").await.status, 401);
}

#[tokio::test]
async fn groups_dms_and_membership() {
    let node = TestNode::start().await;
    let (alice, bob, carol) = (
        node.user("alice").await,
        node.user("bob").await,
        node.user("carol").await,
    );

    let group = alice.create_group("Rustaceans").await;
    let r = bob
        .post("/v1/channels", &json!({"name": "rustaceans"}))
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    let r = bob.post("/v1/channels", &json!({"name": "   "})).await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));

    let r = bob.get("/v1/channels/lookup?name=RUSTACEANS").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], group.to_string());
    assert_eq!(r.body["kind"], "group");
    assert_eq!(bob.get("/v1/channels/lookup?name=nope").await.status, 404);

    // Members only.
    let r = bob.get(&format!("/v1/channels/{group}")).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    assert_eq!(
        bob.get(&format!("/v1/channels/{group}/messages"))
            .await
            .status,
        403
    );
    assert_eq!(bob.get("/v1/channels/12345").await.status, 404);

    bob.join(group).await;
    let r = bob.get(&format!("/v1/channels/{group}")).await;
    assert_eq!(r.body["member_count"], 2);
    let r = bob.get(&format!("/v1/channels/{group}/members")).await;
    let names: Vec<&str> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str_field("username"))
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let r = bob.get("/v1/channels").await;
    assert_eq!(r.body["channels"].as_array().unwrap().len(), 1);
    let r = bob
        .post(&format!("/v1/channels/{group}/leave"), &json!({}))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(bob.get(&format!("/v1/channels/{group}")).await.status, 403);
    let r = bob
        .post(&format!("/v1/channels/{group}/leave"), &json!({}))
        .await;
    assert_eq!(r.status, 403);

    let r = alice
        .post("/v1/dms", &json!({"user_id": carol.id().to_string()}))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["kind"], "dm");
    assert_eq!(r.body["name"], serde_json::Value::Null);
    let dm = r.body["id"].clone();
    let r = carol
        .post("/v1/dms", &json!({"user_id": alice.id().to_string()}))
        .await;
    assert_eq!(r.status, 200, "the same pair gets the same DM");
    assert_eq!(r.body["id"], dm);
    assert_eq!(
        alice
            .post("/v1/dms", &json!({"user_id": alice.id().to_string()}))
            .await
            .status,
        400
    );
    assert_eq!(
        alice
            .post("/v1/dms", &json!({"user_id": "999"}))
            .await
            .status,
        404
    );
    let r = bob
        .post(
            &format!("/v1/channels/{}/join", dm.as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "nobody joins a DM"
    );
}

trait Field {
    fn as_str_field(&self, k: &str) -> &str;
}

impl Field for serde_json::Value {
    fn as_str_field(&self, k: &str) -> &str {
        self[k].as_str().unwrap_or_default()
    }
}

fn ids(page: &serde_json::Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn messages_history_sync_and_read_markers() {
    let node = TestNode::start().await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    let group = alice.create_group("general").await;
    bob.join(group).await;
    let mut sent = Vec::new();
    for i in 1..=7 {
        let m = alice.send(group, &format!("  hello {i}  ")).await;
        assert_eq!(m["seq"], i, "seq counts 1, 2, 3 without gaps");
        assert_eq!(m["text"], format!("hello {i}"), "text is trimmed");
        assert_eq!(m["author_id"], alice.id().to_string());
        assert_eq!(m["moderated"], false);
        sent.push(m["id"].as_str().unwrap().parse::<u64>().unwrap());
    }
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "ids increase");

    // Read-your-writes: history right after the sends, from the other member.
    let r = bob
        .get(&format!("/v1/channels/{group}/messages?limit=3"))
        .await;
    assert_eq!(ids(&r.body), [7, 6, 5]);
    assert_eq!(r.body["has_more"], true);
    let r = bob
        .get(&format!(
            "/v1/channels/{group}/messages?before={}&limit=10",
            sent[4]
        ))
        .await;
    assert_eq!(ids(&r.body), [4, 3, 2, 1]);
    assert_eq!(r.body["has_more"], false);
    let r = bob
        .get(&format!(
            "/v1/channels/{group}/messages?after={}&limit=2",
            sent[1]
        ))
        .await;
    assert_eq!(ids(&r.body), [3, 4]);
    assert_eq!(r.body["has_more"], true);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        &format!("before={}&after={}", sent[0], sent[1]),
        "before=-1",
    ] {
        let r = bob
            .get(&format!("/v1/channels/{group}/messages?{bad}"))
            .await;
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{bad}");
    }

    let dm: Id = bob
        .post("/v1/dms", &json!({"user_id": alice.id().to_string()}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    bob.send(dm, "psst").await;
    let r = alice.get(&format!("/v1/sync?after={}", sent[5])).await;
    let texts: Vec<&str> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello 7", "psst"], "every channel, ascending");
    let r = alice.get("/v1/sync?limit=3").await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 3);
    assert_eq!(r.body["has_more"], true);

    let r = bob
        .post(
            &format!("/v1/channels/{group}/read"),
            &json!({"message_id": sent[6].to_string()}),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = node
        .user("mallory")
        .await
        .post(
            &format!("/v1/channels/{group}/read"),
            &json!({"message_id": "1"}),
        )
        .await;
    assert_eq!(r.status, 403);

    // Idempotent sends over REST too.
    let body = json!({"text": "once", "client_msg_id": "c-1"});
    let first = alice
        .post(&format!("/v1/channels/{group}/messages"), &body)
        .await;
    let again = alice
        .post(&format!("/v1/channels/{group}/messages"), &body)
        .await;
    assert_eq!(first.body["id"], again.body["id"]);
    assert_eq!(again.body["seq"], 8);
    let next = alice.send(group, "after").await;
    assert_eq!(next["seq"], 9, "a repeat does not use up a seq");
}

#[tokio::test]
async fn bad_requests_get_documented_errors() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let group = alice.create_group("g").await;
    let path = format!("/v1/channels/{group}/messages");

    let r = alice
        .raw(
            "POST",
            &path,
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = alice
        .raw(
            "POST",
            &path,
            Some("application/json"),
            br#"{"text": 5}"#.to_vec(),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = alice
        .raw(
            "POST",
            &path,
            Some("text/plain"),
            br#"{"text": "x"}"#.to_vec(),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = alice
        .raw(
            "POST",
            &path,
            Some("application/json"),
            vec![b' '; 100 * 1024],
        )
        .await;
    assert_eq!((r.status, r.code()), (413, "too_large"));
    let r = alice.post(&path, &json!({"text": "x".repeat(4001)})).await;
    assert_eq!((r.status, r.code()), (413, "too_large"));
    let r = alice.post(&path, &json!({"text": "é".repeat(4000)})).await;
    assert_eq!(
        r.status, 201,
        "4000 scalar values are fine whatever their bytes"
    );
    let r = alice.post(&path, &json!({"text": " \n "})).await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = alice
        .post(&path, &json!({"text": "x", "attachments": ["1"]}))
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = alice
        .post("/v1/channels/abc/messages", &json!({"text": "x"}))
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = alice.get("/v1/no/such/route").await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = alice.raw("DELETE", "/v1/channels", None, vec![]).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = alice.get("/v1/presence?user_ids=1,x").await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));

    // Nothing half-written: the channel holds exactly the one good message.
    let r = alice.get(&path).await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 1);

    let metrics = alice.get("/metrics").await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("parley_errors_total{code=\"bad_request\"}"),
        "{text}"
    );
    assert!(text.contains("parley_messages_in_total 1"), "{text}");
    assert!(
        text.contains("parley_send_latency_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn sends_are_rate_limited_per_user() {
    // The default burst (40) with a refill of 1 per second: the count does not depend on
    // how fast this (possibly loaded) machine sends the 45 requests, as long as it takes
    // less than a second.
    let node = TestNode::with(|c| c.limits.send_rate = 1).await;
    let alice = node.user("alice").await;
    let group = alice.create_group("g").await;
    let mut codes = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..45 {
        let r = alice
            .post(
                &format!("/v1/channels/{group}/messages"),
                &json!({"text": format!("m{i}")}),
            )
            .await;
        codes.push(r.status);
    }
    let accepted = codes.iter().filter(|s| **s == 201).count();
    // The burst, plus one token per whole second the sends took.
    let refill = started.elapsed().as_secs() as usize;
    assert!(
        (40..=41 + refill).contains(&accepted),
        "burst of 40 (plus a refill of {refill}): {accepted}"
    );
    assert!(codes.contains(&429));
    let r = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({"text": "x"}),
        )
        .await;
    assert_eq!(r.code(), "rate_limited");
}

#[tokio::test]
async fn moderation_masks_or_rejects() {
    let dir = common::temp_dir("words");
    let words = dir.join("words.txt");
    std::fs::write(&words, "darn\nheck\n").unwrap();
    let w = words.clone();
    let node = TestNode::with(move |c| c.moderation_words_file = Some(w)).await;
    let alice = node.user("alice").await;
    let group = alice.create_group("g").await;
    let m = alice.send(group, "D4RN it, what the HECK").await;
    assert_eq!(m["text"], "**** it, what the ****");
    assert_eq!(m["moderated"], true);
    let m = alice.send(group, "darning socks").await;
    assert_eq!(m["moderated"], false);

    let w = words.clone();
    let strict = TestNode::with(move |c| {
        c.moderation_words_file = Some(w);
        c.moderation_policy = chat_node::moderation::Policy::Reject;
    })
    .await;
    let bob = strict.user("bob").await;
    let group = bob.create_group("g").await;
    let r = bob
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({"text": "darn"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "content_rejected"));
    assert_eq!(
        bob.get(&format!("/v1/channels/{group}/messages"))
            .await
            .body["messages"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn health_readiness_and_the_web_page() {
    let node = TestNode::start().await;
    let api = node.api();
    assert_eq!(api.get("/healthz").await.body["status"], "ok");
    assert_eq!(api.get("/readyz").await.body["status"], "ready");
    let page = api.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.as_str().unwrap().contains("<html"),
        "the page is served"
    );
    assert_eq!(api.get("/app.js").await.status, 200);
    assert_eq!(api.get("/app.css").await.status, 200);
}
