//! `GET /v1/limits`: the limits a node enforces, without a token, following its settings.

mod common;

use common::TestNode;
use serde_json::json;

#[tokio::test]
async fn a_default_node_reports_the_protocol_defaults_without_a_token() {
    let node = TestNode::start().await;
    let r = node.api().get("/v1/limits").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({
            "text_max_chars": 4000,
            "frame_max_bytes": 65536,
            "attachments_max": 10,
            "upload_max_bytes": {"media": 16 * 1024 * 1024, "document": 100 * 1024 * 1024},
            "group_name_max_chars": 64,
            "history_page_default": 50,
            "history_page_max": 100,
            "send_rate_per_s": 20,
            "send_burst": 40,
            "typing_min_interval_ms": 1000,
        })
    );
    // The shared wire type reads it back.
    let typed: parley_protocol::rest::Limits = serde_json::from_value(r.body).unwrap();
    assert_eq!(typed.upload_max_bytes.media, 16 * 1024 * 1024);
    node.stop().await;
}

#[tokio::test]
async fn the_answer_follows_the_nodes_settings_and_they_hold() {
    let node = TestNode::with(|c| {
        c.limits.max_text_chars = 12;
        c.limits.max_attachments = 2;
        c.limits.max_media_bytes = 1000;
        c.limits.send_rate = 7;
        c.limits.send_burst = 9;
        c.ws.ws_typing_rate = 4;
    })
    .await;
    let r = node.api().get("/v1/limits").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["text_max_chars"], 12);
    assert_eq!(r.body["attachments_max"], 2);
    assert_eq!(r.body["upload_max_bytes"]["media"], 1000);
    assert_eq!(r.body["send_rate_per_s"], 7);
    assert_eq!(r.body["send_burst"], 9);
    assert_eq!(r.body["typing_min_interval_ms"], 250);

    // What it reports is what a send is held to.
    let alice = node.user("alice").await;
    let group = alice.create_group("limits").await;
    let at_limit = "x".repeat(12);
    let r = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({ "text": at_limit }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({ "text": format!("{at_limit}x") }),
        )
        .await;
    assert_eq!((r.status, r.code()), (413, "too_large"), "{:?}", r.body);
    node.stop().await;
}
