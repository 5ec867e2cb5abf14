//! Drives a real chat-node on an ephemeral port.

use chat_node::{AppState, config::Config, run};
use clap::Parser as _;

async fn start() -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = Config::try_parse_from(["chat-node"]).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        run(listener, AppState::new(config), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (base, tx, handle)
}

#[tokio::test]
async fn healthz_answers_ok_and_unknown_routes_get_json_404() {
    let (base, stop, handle) = start().await;
    let http = reqwest::Client::new();

    let res = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let res = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    stop.send(()).unwrap();
    handle.await.unwrap();
}
