//! `parley-bench load` (the default program): load against a running chat-node.
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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parley_protocol::Id;
use serde_json::json;
use tokio::task::JoinHandle;

use super::{ms, percentile, rss_kib, run_tag};
use crate::client::{Api, Next, Ws, id_of};

/// The settings of `load`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Base URL of the chat-node.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Users that send, each over its own WebSocket.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Users that only listen, each over its own WebSocket.
    #[arg(long, default_value_t = 100)]
    pub listeners: usize,
    /// Messages each sender sends, one at a time.
    #[arg(long, default_value_t = 50)]
    pub messages: usize,
    /// The server's process ID, to read its resident memory (`/proc/<pid>/status`).
    #[arg(long)]
    pub pid: Option<u32>,
}

/// What the senders and listeners measured.
struct Figures {
    /// From the first send to the last `ok`.
    send_elapsed: Duration,
    /// Send → `ok` of each message, sorted.
    send_latency: Vec<Duration>,
    /// Send → `message` event of each delivery, sorted.
    fanout: Vec<Duration>,
    /// Deliveries that never came.
    missing: usize,
}

/// Runs the load and prints the figures.
pub async fn run(a: Args) {
    let tag = run_tag();
    let rss_before = a.pid.and_then(rss_kib);
    let (group, users) = join_group(&a, &tag).await;
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
    let listening = listen(sockets, total);
    let sending = send(senders, group, a.messages);
    let figures = collect(sending, listening, total, started).await;
    report(&a, &figures, rss_before, rss_connected);
}

/// Registers an owner and `senders + listeners` users, all in one new group.
async fn join_group(a: &Args, tag: &str) -> (Id, Vec<Api>) {
    let owner = Api::register(&a.url, &format!("bench{tag}o")).await;
    let group = owner.create_group(&format!("bench-{tag}")).await;
    let mut users = Vec::new();
    for i in 0..(a.senders + a.listeners) {
        let u = Api::register(&a.url, &format!("bench{tag}u{i}")).await;
        u.join(group).await;
        users.push(u);
    }
    (group, users)
}

/// Each listener records what arrives (text, when) until it has `total` messages or hears
/// nothing for 30 s.
fn listen(sockets: Vec<Ws>, total: usize) -> Vec<JoinHandle<Vec<(String, Instant)>>> {
    sockets
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
        .collect()
}

/// Each sender sends `messages` messages over its own socket, one at a time, recording
/// (text, sent at, send → `ok`).
fn send(
    senders: &[Api],
    group: Id,
    messages: usize,
) -> Vec<JoinHandle<Vec<(String, Instant, Duration)>>> {
    senders
        .iter()
        .cloned()
        .enumerate()
        .map(|(k, s)| {
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
        .collect()
}

/// Awaits the senders, then the listeners, and matches each delivery to its send.
async fn collect(
    sending: Vec<JoinHandle<Vec<(String, Instant, Duration)>>>,
    listening: Vec<JoinHandle<Vec<(String, Instant)>>>,
    total: usize,
    started: Instant,
) -> Figures {
    let mut sent_at = HashMap::new();
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
    Figures {
        send_elapsed,
        send_latency,
        fanout,
        missing,
    }
}

/// Prints the figures (and the server's RSS when `--pid` was given).
fn report(a: &Args, f: &Figures, rss_before: Option<u64>, rss_connected: Option<u64>) {
    let Figures {
        send_elapsed,
        send_latency,
        fanout,
        missing,
    } = f;
    let total = a.senders * a.messages;
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
        ms(percentile(send_latency, 0.5)),
        ms(percentile(send_latency, 0.9)),
        ms(percentile(send_latency, 0.99)),
        ms(percentile(send_latency, 1.0))
    );
    println!(
        "  fan-out latency (send -> event):  p50 {}  p90 {}  p99 {}  max {}  ({} deliveries, {} missing)",
        ms(percentile(fanout, 0.5)),
        ms(percentile(fanout, 0.9)),
        ms(percentile(fanout, 0.99)),
        ms(percentile(fanout, 1.0)),
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
