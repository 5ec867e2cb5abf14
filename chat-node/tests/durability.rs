//! Acknowledged messages survive restarts: a graceful one, and `kill -9` of the real binary.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chat_node::config::Config;
use common::{Api, TestNode};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

#[tokio::test]
async fn a_restarted_node_keeps_users_tokens_messages_and_seq() {
    let dir = common::temp_dir("restart");
    let node = TestNode::start_in(Config::for_tests(dir.clone())).await;
    let alice = node.user("alice").await;
    let group = alice.create_group("g").await;
    for i in 1..=4 {
        alice.send(group, &format!("m{i}")).await;
    }
    let keyed = json!({"text": "m5", "client_msg_id": "k5"});
    let path = format!("/v1/channels/{group}/messages");
    let m5 = alice.post(&path, &keyed).await;
    assert_eq!(m5.status, 201);
    node.stop().await;

    let node = TestNode::start_in(Config::for_tests(dir)).await;
    let alice = alice.on(&node.base);
    assert_eq!(
        alice.get("/v1/users/me").await.status,
        200,
        "the token outlives the restart"
    );
    let r = alice.get(&format!("/v1/channels/{group}/messages")).await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 5);
    assert_eq!(
        alice.send(group, "m6").await["seq"],
        6,
        "seq continues without a gap"
    );
    // A retry of a send made before the restart finds it in the store: the new process
    // does not trust its memory alone with keys of messages it did not make.
    let retried = alice.post(&path, &keyed).await;
    assert_eq!(retried.body["id"], m5.body["id"], "{:?}", retried.body);
    assert_eq!(retried.body["seq"], 5);
}

/// Starts the chat-node binary; returns the child and its base URL.
async fn spawn_binary(dir: &std::path::Path) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-node"))
        .env("PARLEY_LISTEN", "127.0.0.1:0")
        .env("PARLEY_DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = line.rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (child, base)
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_message() {
    let dir = common::temp_dir("kill9");
    let (mut child, base) = spawn_binary(&dir).await;
    let alice = Api::register(&base, "alice").await;
    let group = alice.create_group("g").await;
    let mut acked = Vec::new();
    // Fire sends back to back and kill the process right after the last acknowledgement:
    // the persister has had no time to catch up.
    for i in 0..30 {
        let r = alice
            .post(
                &format!("/v1/channels/{group}/messages"),
                &json!({"text": format!("m{i}")}),
            )
            .await;
        assert_eq!(r.status, 201);
        acked.push(r.body["seq"].as_u64().unwrap());
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let (_child, base) = spawn_binary(&dir).await;
    let alice = alice.on(&base);
    let r = alice
        .get(&format!("/v1/channels/{group}/messages?limit=100"))
        .await;
    let mut seqs: Vec<u64> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, acked, "every acknowledged message, exactly once");
}

#[test]
fn malformed_configuration_stops_start_up_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat-node"))
        .env("PARLEY_MODERATION_POLICY", "shout")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PARLEY_MODERATION_POLICY"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat-node"))
        .env("PARLEY_MODERATION_WORDS_FILE", "/nonexistent/words.txt")
        .env("PARLEY_DATA_DIR", common::temp_dir("cfg"))
        .env("PARLEY_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PARLEY_MODERATION_WORDS_FILE"), "{err}");
}
