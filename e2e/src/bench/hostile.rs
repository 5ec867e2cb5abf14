//! `parley-bench hostile`: what clients without an account cost an embedded chat-node.
//!
//! It starts the node binary (`--node-bin`, default `target/debug/chat-node`) on a free
//! loopback port with a data directory of its own, then
//! 1. reads the node's resident memory (`VmRSS` of `/proc/<pid>/status`) at idle,
//! 2. fires `--bursts` bursts (default 3) of `--logins` (default 200) parallel logins of
//!    users that do not exist, printing the answers' status codes, the peak RSS during each
//!    burst and the RSS `--settle-secs` (default 5) after it; from 127.0.0.1, or with
//!    `--sources N` spread over N loopback addresses 127.1.0.1... (many attackers: per-address
//!    limits then hold back none of them, and only the node's global bounds remain),
//! 3. opens `--slow` (default 500) connections that send `GET / HTTP/1.1\r\n` and then one
//!    header byte every `--trickle-secs` (default 3) for `--slow-secs` (default 20), printing
//!    how many the node refused or closed and when, then closes the rest and prints the RSS
//!    after `--settle-secs`.
//!
//! Throughout, a prober polls `GET /healthz` every `--probe-ms` (default 250) from another
//! loopback source address (`--probe-from`, default 127.0.0.2), so per-address caps on the
//! attackers' 127.0.0.1 do not apply to it; a probe without a `200` within 5 s is a failure.
//! It prints figures; with `--check` it exits 1 when the RSS at the end is more than 50 MiB
//! above idle or a probe failed. `--node-env K=V` (repeatable) passes a setting to the node.

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
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::{ms, rss_kib};

/// The settings of `hostile` (see the module's doc).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The chat-node binary to start.
    #[arg(long, default_value = "target/debug/chat-node")]
    pub node_bin: PathBuf,
    /// A setting for the node, repeatable.
    #[arg(long = "node-env", value_name = "KEY=VALUE", value_parser = key_value)]
    pub node_env: Vec<(String, String)>,
    /// Parallel logins of unknown users per burst.
    #[arg(long, default_value_t = 200)]
    pub logins: usize,
    /// Loopback source addresses the logins come from (1 ..= 60000; 1: 127.0.0.1 alone).
    #[arg(long, default_value_t = 1, value_parser = clamped(1_usize, 60_000))]
    pub sources: usize,
    /// Login bursts (at least one runs).
    #[arg(long, default_value_t = 3)]
    pub bursts: usize,
    /// Slow-header connections.
    #[arg(long, default_value_t = 500)]
    pub slow: usize,
    /// How long the slow-header connections trickle, seconds.
    #[arg(long, default_value_t = 20)]
    pub slow_secs: u64,
    /// Seconds between two header bytes (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clamped(1, u64::MAX))]
    pub trickle_secs: u64,
    /// Seconds to wait before reading the RSS after each attack.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// Interval of the health probes, ms (at least 10).
    #[arg(long, default_value_t = 250, value_parser = clamped(10, u64::MAX))]
    pub probe_ms: u64,
    /// Source address of the health probes.
    #[arg(long, default_value = "127.0.0.2")]
    pub probe_from: IpAddr,
    /// Exit 1 when the RSS at the end is more than 50 MiB above idle or a probe failed.
    #[arg(long)]
    pub check: bool,
}

/// `KEY=VALUE`.
fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is no KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// A number, brought into `lo ..= hi`.
fn clamped<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + Ord + Copy + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    move |s: &str| {
        s.parse::<T>()
            .map(|n| n.clamp(lo, hi))
            .map_err(|e| e.to_string())
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

/// The chat-node under attack: its process, address and data directory.
struct Node {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    url: String,
    dir: PathBuf,
}

/// Starts the node binary on a free loopback port with a data directory of its own and
/// waits until it answers `/healthz` (for at most 60 s), then 2 s more.
async fn start_node(a: &Args) -> Node {
    let bin = a.node_bin.canonicalize().unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with cargo build -p chat-node",
            a.node_bin.display()
        )
    });
    let port = crate::cluster::free_port();
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
    Node {
        child: node,
        pid,
        addr,
        url,
        dir,
    }
}

/// What runs beside the attacks: the RSS sampler (every 50 ms) and the prober of
/// `/healthz` from `--probe-from`.
struct Monitor {
    rss: Arc<Rss>,
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<()>,
    /// The probes since the last [`Monitor::take_probes`].
    probes: Arc<Mutex<Probes>>,
    /// Every probe of the run.
    total_probes: Arc<Mutex<Probes>>,
    prober: JoinHandle<()>,
}

impl Monitor {
    fn start(pid: u32, addr: SocketAddr, a: &Args) -> Self {
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
        Self {
            rss,
            stop,
            sampler,
            probes,
            total_probes,
            prober,
        }
    }

    /// The probes since the last call.
    fn take_probes(&self) -> Probes {
        std::mem::take(&mut *self.probes.lock())
    }

    /// Stops the sampler and the prober; answers every probe of the run.
    async fn stop(self) -> Probes {
        let Self {
            stop,
            sampler,
            total_probes,
            prober,
            ..
        } = self;
        stop.store(true, Ordering::Relaxed);
        let _ = prober.await;
        let _ = sampler.await;
        total_probes.lock().clone()
    }
}

/// Runs the scenario; false when `--check` was given and a bound was missed.
pub async fn run(a: Args) -> bool {
    let Node {
        child: mut node,
        pid,
        addr,
        url,
        dir,
    } = start_node(&a).await;
    let monitor = Monitor::start(pid, addr, &a);
    let rss = &monitor.rss;
    let idle = rss.now();
    rss.take_peak();
    monitor.take_probes();
    println!("  RSS at idle: {}", mib(idle));

    login_bursts(&a, &url, &monitor).await;
    let end = slow_headers(&a, addr, &monitor).await;
    let total = monitor.stop().await;
    report_probes("the whole run", &total);
    let grew = end.saturating_sub(idle);
    println!(
        "  RSS at the end {} = idle + {} (bound: idle + 50 MiB)",
        mib(end),
        mib(grew)
    );
    let _ = node.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    check(&a, grew, &total)
}

/// `--bursts` bursts of `--logins` parallel logins of unknown users, each followed by
/// `--settle-secs`; prints the answers, the RSS and the probes of each.
async fn login_bursts(a: &Args, url: &str, monitor: &Monitor) {
    let (rss, settle) = (&monitor.rss, Duration::from_secs(a.settle_secs));
    let tag = format!("{:x}", std::process::id());
    for burst in 1..=a.bursts.max(1) {
        rss.take_peak();
        let (counts, took) = login_burst(url, &format!("{tag}b{burst}"), a.logins, a.sources).await;
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
            &monitor.take_probes(),
        );
    }
}

/// `--slow` slow-header connections; prints how they ended, the probes and the RSS peak, and
/// answers the RSS `--settle-secs` after they closed.
async fn slow_headers(a: &Args, addr: SocketAddr, monitor: &Monitor) -> u64 {
    let (rss, settle) = (&monitor.rss, Duration::from_secs(a.settle_secs));
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
    report_probes("the slow headers", &monitor.take_probes());
    tokio::time::sleep(settle).await;
    let end = rss.now();
    println!(
        "  RSS peak during the slow headers {}, {} s after they closed {}",
        mib(peak),
        a.settle_secs,
        mib(end)
    );
    end
}

/// With `--check`: false (after saying why) when the RSS grew more than 50 MiB or a probe
/// failed.
fn check(a: &Args, grew: u64, total: &Probes) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("hostile").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn defaults_and_bounds() {
        let a = parse(&[]);
        assert_eq!(a.node_bin, PathBuf::from("target/debug/chat-node"));
        assert_eq!((a.logins, a.sources, a.bursts, a.slow), (200, 1, 3, 500));
        assert_eq!((a.slow_secs, a.trickle_secs, a.settle_secs), (20, 3, 5));
        assert_eq!(a.probe_ms, 250);
        assert_eq!(a.probe_from, IpAddr::from([127, 0, 0, 2]));
        assert!(!a.check);
        let a = parse(&[
            "--sources",
            "0",
            "--trickle-secs",
            "0",
            "--probe-ms",
            "1",
            "--node-env",
            "A=b=c",
            "--node-env",
            "B=",
            "--check",
        ]);
        assert_eq!((a.sources, a.trickle_secs, a.probe_ms), (1, 1, 10));
        assert_eq!(
            a.node_env,
            [("A".into(), "b=c".into()), ("B".into(), String::new())]
        );
        assert!(a.check);
        assert_eq!(parse(&["--sources", "100000"]).sources, 60_000);
        assert!(Cli::try_parse_from(["hostile", "--node-env", "no-equals"]).is_err());
    }

    #[test]
    fn attackers_come_from_loopback_addresses() {
        assert_eq!(source(5, 1), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(source(0, 200), IpAddr::from([127, 1, 0, 1]));
        assert_eq!(source(255, 300), IpAddr::from([127, 1, 1, 0]));
        assert_eq!(source(200, 200), IpAddr::from([127, 1, 0, 1]));
    }
}
