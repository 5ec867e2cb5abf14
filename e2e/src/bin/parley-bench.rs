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
//!
//! ```text
//! cargo run -p parley-e2e --bin parley-bench -- hostile --node-bin target/debug/chat-node [--check]
//! ```
//!
//! `hostile` starts an embedded chat-node of its own and measures what clients without an
//! account cost it: see [`hostile`].

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

fn args(mut it: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        senders: 10,
        listeners: 100,
        messages: 50,
        pid: None,
    };
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
    let mut argv = std::env::args().skip(1).peekable();
    match argv.peek().map(String::as_str) {
        Some("hostile") => {
            argv.next();
            let ok = hostile::run(hostile::Args::parse(argv)).await;
            std::process::exit(if ok { 0 } else { 1 });
        }
        Some("load") => {
            argv.next();
            load(args(argv)).await;
        }
        _ => load(args(argv)).await,
    }
}

/// The default subcommand (`load`): senders and listeners in one group.
async fn load(a: Args) {
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

/// `parley-bench hostile`: what clients without an account cost an embedded chat-node.
///
/// It starts the node binary (`--node-bin`, default `target/debug/chat-node`) on a free
/// loopback port with a data directory of its own, then
/// 1. reads the node's resident memory (`VmRSS` of `/proc/<pid>/status`) at idle,
/// 2. fires `--bursts` bursts (default 3) of `--logins` (default 200) parallel logins of
///    users that do not exist, printing the answers' status codes, the peak RSS during each
///    burst and the RSS `--settle-secs` (default 5) after it; from 127.0.0.1, or with
///    `--sources N` spread over N loopback addresses 127.1.0.1... (many attackers: per-address
///    limits then hold back none of them, and only the node's global bounds remain),
/// 3. opens `--slow` (default 500) connections that send `GET / HTTP/1.1\r\n` and then one
///    header byte every `--trickle-secs` (default 3) for `--slow-secs` (default 20), printing
///    how many the node refused or closed and when, then closes the rest and prints the RSS
///    after `--settle-secs`.
///
/// Throughout, a prober polls `GET /healthz` every `--probe-ms` (default 250) from another
/// loopback source address (`--probe-from`, default 127.0.0.2), so per-address caps on the
/// attackers' 127.0.0.1 do not apply to it; a probe without a `200` within 5 s is a failure.
/// It prints figures; with `--check` it exits 1 when the RSS at the end is more than 50 MiB
/// above idle or a probe failed. `--node-env K=V` (repeatable) passes a setting to the node.
mod hostile {
    use parking_lot::Mutex;
    use std::collections::BTreeMap;
    use std::net::{IpAddr, SocketAddr};
    use std::path::PathBuf;
    use std::process::Stdio;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpSocket, TcpStream};

    use super::{ms, rss_kib};

    /// The settings of `hostile` (see the module's doc).
    #[derive(Debug)]
    pub(super) struct Args {
        node_bin: PathBuf,
        node_env: Vec<(String, String)>,
        logins: usize,
        sources: usize,
        bursts: usize,
        slow: usize,
        slow_secs: u64,
        trickle_secs: u64,
        settle_secs: u64,
        probe_ms: u64,
        probe_from: IpAddr,
        check: bool,
    }

    impl Args {
        pub(super) fn parse(mut it: impl Iterator<Item = String>) -> Self {
            let mut a = Self {
                node_bin: PathBuf::from("target/debug/chat-node"),
                node_env: Vec::new(),
                logins: 200,
                sources: 1,
                bursts: 3,
                slow: 500,
                slow_secs: 20,
                trickle_secs: 3,
                settle_secs: 5,
                probe_ms: 250,
                probe_from: IpAddr::from([127, 0, 0, 2]),
                check: false,
            };
            while let Some(flag) = it.next() {
                if flag == "--check" {
                    a.check = true;
                    continue;
                }
                let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
                let n = || -> u64 { v.parse().unwrap_or_else(|_| panic!("{flag} N")) };
                match flag.as_str() {
                    "--node-bin" => a.node_bin = PathBuf::from(&v),
                    "--node-env" => {
                        let (k, val) = v.split_once('=').expect("--node-env KEY=VALUE");
                        a.node_env.push((k.to_owned(), val.to_owned()));
                    }
                    "--logins" => a.logins = n() as usize,
                    "--sources" => a.sources = (n() as usize).clamp(1, 60_000),
                    "--bursts" => a.bursts = n() as usize,
                    "--slow" => a.slow = n() as usize,
                    "--slow-secs" => a.slow_secs = n(),
                    "--trickle-secs" => a.trickle_secs = n().max(1),
                    "--settle-secs" => a.settle_secs = n(),
                    "--probe-ms" => a.probe_ms = n().max(10),
                    "--probe-from" => a.probe_from = v.parse().expect("--probe-from ADDRESS"),
                    other => panic!(
                        "unknown flag {other} (see parley-bench's source for hostile's flags)"
                    ),
                }
            }
            a
        }
    }

    fn mib(kib: u64) -> String {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    }

    /// The node's RSS, sampled every 50 ms; `peak` is the highest since the last `take_peak`.
    struct Rss {
        pid: u32,
        peak: AtomicU64,
    }

    impl Rss {
        fn now(&self) -> u64 {
            let v = rss_kib(self.pid).unwrap_or(0);
            self.peak.fetch_max(v, Ordering::Relaxed);
            v
        }
        fn take_peak(&self) -> u64 {
            let now = rss_kib(self.pid).unwrap_or(0);
            self.peak.swap(now, Ordering::Relaxed).max(now)
        }
    }

    /// Health probes since the last `take`.
    #[derive(Debug, Default, Clone)]
    struct Probes {
        ok: u64,
        failed: u64,
        worst: Duration,
        first_failure: Option<String>,
    }

    async fn probe(from: IpAddr, to: SocketAddr) -> Result<(), String> {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(from, 0))
            .map_err(|e| format!("bind {from}: {e}"))?;
        let mut s = socket
            .connect(to)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let head = String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned();
        if head.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("answer {head:?}"))
        }
    }

    /// The source address of the `i`th of `sources` attackers: 127.0.0.1 alone, or
    /// 127.1.0.1, 127.1.0.2, ... (loopback: every 127.x.y.z is this machine).
    fn source(i: usize, sources: usize) -> IpAddr {
        if sources <= 1 {
            return IpAddr::from([127, 0, 0, 1]);
        }
        let k = i % sources + 1;
        IpAddr::from([127, 1, (k >> 8) as u8, (k & 0xff) as u8])
    }

    async fn login_burst(
        url: &str,
        tag: &str,
        n: usize,
        sources: usize,
    ) -> (BTreeMap<String, usize>, Duration) {
        let clients: Vec<reqwest::Client> = (0..sources.min(n).max(1))
            .map(|i| {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .pool_max_idle_per_host(0)
                    .local_address(source(i, sources))
                    .build()
                    .unwrap()
            })
            .collect();
        let started = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let client = clients[i % clients.len()].clone();
                let url = format!("{url}/v1/auth/login");
                let body = serde_json::json!({
                    "username": format!("ghost{tag}x{i}"),
                    "password": "not-the-password",
                });
                tokio::spawn(async move {
                    match client.post(url).json(&body).send().await {
                        Ok(r) => r.status().as_u16().to_string(),
                        Err(e) if e.is_timeout() => "timeout".to_owned(),
                        Err(e) if e.is_connect() => "refused".to_owned(),
                        Err(_) => "error".to_owned(),
                    }
                })
            })
            .collect();
        let mut counts = BTreeMap::new();
        for t in tasks {
            *counts.entry(t.await.unwrap()).or_insert(0) += 1;
        }
        (counts, started.elapsed())
    }

    /// One slow-header connection: how it ended and after how long.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Slow {
        Refused,
        ClosedByServer,
        OpenAtEnd,
    }

    async fn slow_header(to: SocketAddr, hold: Duration, trickle: Duration) -> (Slow, Duration) {
        let started = Instant::now();
        let Ok(mut s) = TcpStream::connect(to).await else {
            return (Slow::Refused, started.elapsed());
        };
        if s.write_all(b"GET / HTTP/1.1\r\n").await.is_err() {
            return (Slow::ClosedByServer, started.elapsed());
        }
        let deadline = tokio::time::Instant::now() + hold;
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    // The node answered (e.g. 408) and closed, or reset the connection.
                    Ok(0) | Err(_) => return (Slow::ClosedByServer, started.elapsed()),
                    Ok(_) => {}
                },
                () = tokio::time::sleep(trickle) => {
                    if tokio::time::Instant::now() >= deadline {
                        return (Slow::OpenAtEnd, started.elapsed());
                    }
                    if s.write_all(b"X").await.is_err() {
                        return (Slow::ClosedByServer, started.elapsed());
                    }
                }
            }
        }
    }

    fn report_probes(what: &str, p: &Probes) {
        println!(
            "  /healthz from the other address during {what}: {} answered, {} failed, worst {}{}",
            p.ok,
            p.failed,
            ms(p.worst),
            p.first_failure
                .as_ref()
                .map(|f| format!(" (first failure: {f})"))
                .unwrap_or_default()
        );
    }

    /// Runs the scenario; false when `--check` was given and a bound was missed.
    pub(super) async fn run(a: Args) -> bool {
        let bin = a.node_bin.canonicalize().unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it with cargo build -p chat-node",
                a.node_bin.display()
            )
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("http://{addr}");
        let dir = std::env::temp_dir().join(format!("parley-bench-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env("PARLEY_MODE", "embedded")
            .env("PARLEY_LISTEN", addr.to_string())
            .env("PARLEY_DATA_DIR", dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in &a.node_env {
            cmd.env(k, v);
        }
        let mut node = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let pid = node.id().unwrap();
        let start = Instant::now();
        while probe(IpAddr::from([127, 0, 0, 1]), addr).await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the node did not answer /healthz within 60 s; its log: {}",
                dir.join("node.log").display()
            );
            if let Ok(Some(status)) = node.try_wait() {
                panic!(
                    "the node exited ({status}); its log: {}",
                    dir.join("node.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "parley-bench hostile: {} (pid {pid}) on {url}",
            bin.display()
        );
        // Let the node finish starting (background tasks, first allocations) before idle.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let rss = Arc::new(Rss {
            pid,
            peak: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (rss, stop) = (rss.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    rss.now();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let probes = Arc::new(Mutex::new(Probes::default()));
        let total_probes = Arc::new(Mutex::new(Probes::default()));
        let prober = {
            let (probes, total, stop) = (probes.clone(), total_probes.clone(), stop.clone());
            let (from, every) = (a.probe_from, Duration::from_millis(a.probe_ms));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let r = match tokio::time::timeout(Duration::from_secs(5), probe(from, addr))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err("no answer within 5 s".to_owned()),
                    };
                    let took = t0.elapsed();
                    for p in [&probes, &total] {
                        let mut p = p.lock();
                        p.worst = p.worst.max(took);
                        match &r {
                            Ok(()) => p.ok += 1,
                            Err(e) => {
                                p.failed += 1;
                                p.first_failure.get_or_insert_with(|| e.clone());
                            }
                        }
                    }
                    tokio::time::sleep(every.saturating_sub(took)).await;
                }
            })
        };
        let take_probes = || std::mem::take(&mut *probes.lock());
        let settle = Duration::from_secs(a.settle_secs);

        let idle = rss.now();
        rss.take_peak();
        take_probes();
        println!("  RSS at idle: {}", mib(idle));

        let tag = format!("{:x}", std::process::id());
        for burst in 1..=a.bursts.max(1) {
            rss.take_peak();
            let (counts, took) =
                login_burst(&url, &format!("{tag}b{burst}"), a.logins, a.sources).await;
            let peak = rss.take_peak();
            tokio::time::sleep(settle).await;
            let after = rss.now();
            println!(
                "  login burst {burst}: {} parallel logins of unknown users from {} address(es) in {:.2} s, answers {counts:?}; RSS peak {}, {} s after {}",
                a.logins,
                a.sources,
                took.as_secs_f64(),
                mib(peak),
                a.settle_secs,
                mib(after)
            );
            report_probes(
                &format!("login burst {burst} and its settling"),
                &take_probes(),
            );
        }

        rss.take_peak();
        let hold = Duration::from_secs(a.slow_secs);
        let trickle = Duration::from_secs(a.trickle_secs);
        let slow: Vec<_> = (0..a.slow)
            .map(|_| tokio::spawn(slow_header(addr, hold, trickle)))
            .collect();
        let mut ends: BTreeMap<Slow, Vec<Duration>> = BTreeMap::new();
        for t in slow {
            let (end, after) = t.await.unwrap();
            ends.entry(end).or_default().push(after);
        }
        let peak = rss.take_peak();
        println!(
            "  slow headers: {} connections sending a header byte every {} s for {} s",
            a.slow, a.trickle_secs, a.slow_secs
        );
        for (end, mut times) in ends {
            times.sort();
            println!(
                "    {end:?}: {} (after {} .. {}, median {})",
                times.len(),
                ms(times[0]),
                ms(times[times.len() - 1]),
                ms(times[times.len() / 2])
            );
        }
        report_probes("the slow headers", &take_probes());
        tokio::time::sleep(settle).await;
        let end = rss.now();
        println!(
            "  RSS peak during the slow headers {}, {} s after they closed {}",
            mib(peak),
            a.settle_secs,
            mib(end)
        );
        stop.store(true, Ordering::Relaxed);
        let _ = prober.await;
        let _ = sampler.await;
        let total = total_probes.lock().clone();
        report_probes("the whole run", &total);
        let grew = end.saturating_sub(idle);
        println!(
            "  RSS at the end {} = idle + {} (bound: idle + 50 MiB)",
            mib(end),
            mib(grew)
        );
        let _ = node.kill().await;
        let _ = std::fs::remove_dir_all(&dir);
        if !a.check {
            return true;
        }
        let mut ok = true;
        if grew > 50 * 1024 {
            println!("  CHECK FAILED: RSS at the end is more than 50 MiB above idle");
            ok = false;
        }
        if total.failed > 0 {
            println!("  CHECK FAILED: {} health probes failed", total.failed);
            ok = false;
        }
        if ok {
            println!("  check passed");
        }
        ok
    }
}
