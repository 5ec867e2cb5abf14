//! `parley-bench`: load against a running chat-node, printing figures (never asserting).
//!
//! ```text
//! cargo run --release -p parley-e2e --bin parley-bench -- --url http://127.0.0.1:8080 \
//!     --senders 20 --listeners 200 --messages 50
//! ```
//!
//! It registers `senders + listeners` users in one group, connects every listener over a
//! WebSocket, then each sender sends `messages` messages over its own WebSocket, one at a
//! time (waiting for each `ok`). It reports send latency (send → ok) and fan-out latency
//! (send → the `message` event at a listener) percentiles, throughput, and, with `--pid`,
//! the server's resident memory before and after the connections.

use std::time::{Duration, Instant};

use parley_e2e::client::{Api, Next, id_of};
use serde_json::json;

struct Args {
    url: String,
    senders: usize,
    listeners: usize,
    messages: usize,
    pid: Option<u32>,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        senders: 10,
        listeners: 100,
        messages: 50,
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => a.url = v,
            "--senders" => a.senders = v.parse().expect("--senders N"),
            "--listeners" => a.listeners = v.parse().expect("--listeners N"),
            "--messages" => a.messages = v.parse().expect("--messages N"),
            "--pid" => a.pid = Some(v.parse().expect("--pid PID")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 0xffff_ffff
    );
    let rss_before = a.pid.and_then(rss_kib);
    let owner = Api::register(&a.url, &format!("bench{tag}o")).await;
    let group = owner.create_group(&format!("bench-{tag}")).await;
    let mut users = Vec::new();
    for i in 0..(a.senders + a.listeners) {
        let u = Api::register(&a.url, &format!("bench{tag}u{i}")).await;
        u.join(group).await;
        users.push(u);
    }
    let (senders, listeners) = users.split_at(a.senders);
    // Registration hashes passwords (argon2 takes 19 MiB each): measure memory after it.
    let rss_before = a.pid.and_then(rss_kib).or(rss_before);
    let mut sockets = Vec::new();
    for l in listeners {
        sockets.push(l.connect(None).await.0);
    }
    let rss_connected = a.pid.and_then(rss_kib);
    let total = a.senders * a.messages;

    // Listeners record when each message id arrives.
    let started = Instant::now();
    let listening: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut arrivals = Vec::with_capacity(total);
                while arrivals.len() < total {
                    match ws.next_within(Duration::from_secs(30)).await {
                        Some(Next::Frame(t)) => {
                            let f: serde_json::Value = serde_json::from_str(&t).unwrap();
                            if f["t"] == "message" {
                                arrivals.push((
                                    f["d"]["text"].as_str().unwrap_or_default().to_owned(),
                                    Instant::now(),
                                ));
                            }
                        }
                        _ => break,
                    }
                }
                arrivals
            })
        })
        .collect();

    let sending: Vec<_> = senders
        .iter()
        .cloned()
        .enumerate()
        .map(|(k, s)| {
            let messages = a.messages;
            tokio::spawn(async move {
                let (mut ws, _) = s.connect(None).await;
                let mut sent = Vec::with_capacity(messages);
                for i in 0..messages {
                    let text = format!("s{k}m{i}");
                    let t0 = Instant::now();
                    ws.op("send", &text, json!({"channel_id": group.to_string(), "text": text, "client_msg_id": text})).await;
                    let ok = ws.reply(&text).await;
                    assert_eq!(ok.t, "ok", "{ok:?}");
                    let _ = id_of(&ok.d["message"]["id"]);
                    sent.push((text, t0, t0.elapsed()));
                }
                sent
            })
        })
        .collect();
    let mut sent_at = std::collections::HashMap::new();
    let mut send_latency = Vec::with_capacity(total);
    for t in sending {
        for (text, t0, latency) in t.await.unwrap() {
            sent_at.insert(text, t0);
            send_latency.push(latency);
        }
    }
    let send_elapsed = started.elapsed();
    let mut fanout = Vec::new();
    let mut missing = 0;
    for t in listening {
        let arrivals = t.await.unwrap();
        missing += total - arrivals.len();
        for (text, at) in arrivals {
            if let Some(t0) = sent_at.get(&text) {
                fanout.push(at.duration_since(*t0));
            }
        }
    }
    send_latency.sort();
    fanout.sort();
    println!("parley-bench against {}", a.url);
    println!(
        "  {} senders x {} messages, {} listeners in one group",
        a.senders, a.messages, a.listeners
    );
    println!(
        "  sends: {total} in {:.2} s = {:.0} msg/s",
        send_elapsed.as_secs_f64(),
        total as f64 / send_elapsed.as_secs_f64()
    );
    println!(
        "  send latency (send -> ok):        p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&send_latency, 0.5)),
        ms(percentile(&send_latency, 0.9)),
        ms(percentile(&send_latency, 0.99)),
        ms(percentile(&send_latency, 1.0))
    );
    println!(
        "  fan-out latency (send -> event):  p50 {}  p90 {}  p99 {}  max {}  ({} deliveries, {} missing)",
        ms(percentile(&fanout, 0.5)),
        ms(percentile(&fanout, 0.9)),
        ms(percentile(&fanout, 0.99)),
        ms(percentile(&fanout, 1.0)),
        fanout.len(),
        missing
    );
    if let (Some(before), Some(connected)) = (rss_before, rss_connected) {
        let after = a.pid.and_then(rss_kib).unwrap_or(connected);
        let per = (connected.saturating_sub(before)) as f64 / a.listeners.max(1) as f64;
        println!(
            "  server RSS: {before} KiB before the sockets, {connected} KiB with {} more (~{per:.1} KiB each), {after} KiB after the load",
            a.listeners
        );
    }
}
