//! `parley-bench compare` against a real embedded chat-node, briefly: the driver still speaks
//! Parley's protocol and counts every delivery, connection and presence frame. A smoke test only: it checks what was
//! delivered, never how fast (figures come from `dev/bench-compare`, docs/performance.md).

use std::process::Stdio;
use std::time::Duration;

use clap::Parser as _;
use parley_e2e::bench::{Cli, Command};
use parley_e2e::cluster::{chat_node_bin, free_port};

/// Runs `parley-bench` with `args` (after the program name) in this process.
async fn bench(args: &[&str]) {
    let mut argv = vec!["parley-bench"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("parley-bench arguments");
    let Some(Command::Compare(a)) = cli.command else {
        panic!("not a compare command: {args:?}")
    };
    parley_e2e::bench::compare::run(a)
        .await
        .expect("the scenario ran");
}

/// The records `out` holds, one JSON object a line.
fn records(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// Starts an embedded chat-node with every rate limit raised (the driver is one client
/// sending as fast as asked, its users from one address) and waits until it is ready.
async fn start_node(dir: &std::path::Path, addr: &str) -> tokio::process::Child {
    let node = tokio::process::Command::new(chat_node_bin())
        .env("PARLEY_LISTEN", addr)
        .env("PARLEY_DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "warn")
        .env("PARLEY_SEND_RATE", "100000")
        .env("PARLEY_SEND_BURST", "100000")
        .env("PARLEY_WS_FRAME_RATE", "100000")
        .env("PARLEY_WS_FRAME_BURST", "100000")
        .env("PARLEY_AUTH_ADDRESS_PER_MIN", "100000")
        .env("PARLEY_AUTH_ADDRESS_BURST", "100000")
        .env("PARLEY_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "100000")
        .env("PARLEY_WS_MAX_SESSIONS_PER_USER", "10000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let health = format!("http://{addr}/readyz");
    for _ in 0..150 {
        if reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the node did not become ready at {addr}");
}

#[tokio::test]
async fn the_compare_driver_delivers_everything_on_an_embedded_node() {
    let dir = std::env::temp_dir().join(format!("parley-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = start_node(&dir, &addr).await;
    let pid = node.id().unwrap().to_string();
    let out = dir.join("records.jsonl");
    let out_s = out.to_str().unwrap();
    let common = [
        "--system", "parley", "--addr", &addr, "--pid", &pid, "--out", out_s,
    ];

    let scenario = |name: &'static str, args: &[&'static str]| {
        let mut argv = vec!["compare", name];
        argv.extend_from_slice(&common);
        argv.extend_from_slice(args);
        argv
    };
    bench(&scenario(
        "one-to-one",
        &["--messages", "50", "--warmup", "5"],
    ))
    .await;
    bench(&scenario(
        "fanout",
        &[
            "--rooms",
            "2",
            "--members",
            "5",
            "--users-per-room",
            "2",
            "--rate",
            "40",
            "--secs",
            "1",
            "--warmup-s",
            "0.5",
        ],
    ))
    .await;
    bench(&scenario("connect", &["--conns", "20", "--users", "2"])).await;
    bench(&scenario(
        "presence",
        &["--members", "4", "--settle-s", "1"],
    ))
    .await;

    let recs = records(&out);
    assert_eq!(recs.len(), 4, "{recs:?}");
    let storm = &recs[2];
    assert_eq!(storm["detail"]["failed"], 0, "{storm}");
    assert_eq!(storm["detail"]["reconnect_failed"], 0, "{storm}");
    let presence = &recs[3];
    assert_eq!(presence["detail"]["connected"], 4, "{presence}");
    // Each member hears of those who connect after it: 3 + 2 + 1 + 0 at least.
    assert!(
        presence["metrics"]["frames"].as_u64().unwrap_or(0) >= 6,
        "{presence}"
    );
    let one = &recs[0];
    assert_eq!(one["system"], "parley");
    assert_eq!(one["detail"]["messages"], 50, "{one}");
    assert_eq!(one["detail"]["acked"], 50, "every send acknowledged: {one}");
    assert_eq!(
        one["detail"]["missing"], 0,
        "every message delivered: {one}"
    );
    let fan = &recs[1];
    assert_eq!(
        fan["metrics"]["missing"], 0,
        "every delivery arrived: {fan}"
    );
    assert!(
        fan["detail"]["deliveries"].as_u64().unwrap_or(0) > 0,
        "{fan}"
    );
    assert_eq!(
        fan["detail"]["deliveries"], fan["detail"]["expected"],
        "{fan}"
    );
    node.start_kill().unwrap();
    let _ = node.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
