//! Media through signed URLs served by the embedded node, and the Blobs conformance suite on
//! the local blob store.
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom; the 80-line bar is for non-test code"
)]

mod common;

use chat_node::backend::conformance;
use common::TestNode;
use serde_json::json;

async fn put(url: &str, headers: &serde_json::Value, body: Vec<u8>) -> u16 {
    let mut req = reqwest::Client::new().put(url).body(body);
    for (k, v) in headers.as_object().unwrap() {
        req = req.header(k, v.as_str().unwrap());
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn upload_attach_and_download() {
    let node = TestNode::start().await;
    let (alice, bob) = (node.user("alice").await, node.user("bob").await);
    let group = alice.create_group("pics").await;
    bob.join(group).await;
    let bytes = b"\x89PNG\r\n\x1a\n not really a png".to_vec();

    let r = alice
        .post(
            "/v1/media",
            &json!({"filename": "cat photo.png", "content_type": "image/png", "size": bytes.len()}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let attachment = r.body["attachment"].clone();
    let upload = r.body["upload"].clone();
    assert_eq!(upload["method"], "PUT");
    assert_eq!(attachment["filename"], "cat photo.png");
    let id = attachment["id"].as_str().unwrap().to_owned();

    // Not uploaded yet: not usable.
    let r = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({"text": "look", "attachments": [id]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));

    // The URL is signed for this type and length only.
    assert_eq!(
        put(
            upload["url"].as_str().unwrap(),
            &json!({"Content-Type": "text/html"}),
            bytes.clone()
        )
        .await,
        403
    );
    assert_eq!(
        put(
            upload["url"].as_str().unwrap(),
            &upload["headers"],
            bytes[..5].to_vec()
        )
        .await,
        403
    );
    assert_eq!(
        put(
            upload["url"].as_str().unwrap(),
            &upload["headers"],
            bytes.clone()
        )
        .await,
        200
    );

    let r = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({"text": "look", "attachments": [id]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let sent = r.body["attachments"][0].clone();
    assert_eq!(sent["size"], bytes.len());
    assert_eq!(sent["content_type"], "image/png");

    // Bob reads it from history and downloads it.
    let h = bob.get(&format!("/v1/channels/{group}/messages")).await;
    let url = h.body["messages"][0]["attachments"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);
    assert_eq!(
        reqwest::get(url.replace("sig=", "sig=0"))
            .await
            .unwrap()
            .status(),
        403
    );

    // Bob may not attach Alice's upload.
    let r = bob
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({"text": "mine", "attachments": [id]}),
        )
        .await;
    assert_eq!(r.status, 400);
    // A fresh download URL for the uploader.
    let r = alice.get(&format!("/v1/media/{id}")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body["attachment"]["url"]
            .as_str()
            .unwrap()
            .contains("sig=")
    );
    assert_eq!(bob.get(&format!("/v1/media/{id}")).await.status, 404);
}

#[tokio::test]
async fn upload_limits_and_validation() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let cases = [
        (
            json!({"filename": "big.png", "content_type": "image/png", "size": 16 * 1024 * 1024 + 1}),
            413,
        ),
        (
            json!({"filename": "ok.png", "content_type": "image/png", "size": 16 * 1024 * 1024}),
            201,
        ),
        (
            json!({"filename": "big.pdf", "content_type": "application/pdf", "size": 100 * 1024 * 1024 + 1}),
            413,
        ),
        (
            json!({"filename": "doc.pdf", "content_type": "application/pdf", "size": 100 * 1024 * 1024}),
            201,
        ),
        (
            json!({"filename": "x", "content_type": "not a type", "size": 1}),
            400,
        ),
        (
            json!({"filename": "", "content_type": "image/png", "size": 1}),
            400,
        ),
        (
            json!({"filename": "x", "content_type": "image/png", "size": 0}),
            400,
        ),
        (
            json!({"filename": "x", "content_type": "image/png", "size": -1}),
            400,
        ),
    ];
    for (body, status) in cases {
        assert_eq!(
            alice.post("/v1/media", &body).await.status,
            status,
            "{body}"
        );
    }
    let group = alice.create_group("g").await;
    let ids: Vec<String> = (0..11).map(|i| format!("{}", 1000 + i)).collect();
    let r = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({"text": "x", "attachments": ids}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "bad_request"),
        "at most 10 attachments"
    );
}

#[tokio::test]
async fn local_blobs_pass_the_blobs_conformance_suite() {
    let node = TestNode::start().await;
    conformance::blobs_suite_over_http(node.chat.media().blobs().as_ref()).await;
}
