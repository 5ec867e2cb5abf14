//! What every scenario runs: opening many connections with a bound on those in flight, a
//! reader task per connection that counts into a shared [`Sink`], publisher tasks fed
//! through a queue, the measurement [`Window`], and the [`Recorder`] that prints one line
//! and appends one JSON object per run.
//!
//! ```text
//!   pacer --(req, stamp)--> publisher task --send--> server --message--> reader task
//!                                  ^-- ack (ack latency) --'               '-> Sink (deliveries, latency)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use super::stats::{Clock, Histogram};
use super::target::{Event, Plan, Target, Who, Ws, send_text, sources};
use super::wire::payload;

/// The send timestamps (ns) whose messages count: `[start, end)`. Empty until opened.
#[derive(Debug)]
pub struct Window {
    start: AtomicU64,
    end: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            start: AtomicU64::new(u64::MAX),
            end: AtomicU64::new(u64::MAX),
        }
    }
}

impl Window {
    /// Counts messages stamped from `at` on (ns), with no end yet.
    pub fn open(&self, at: u64) {
        self.end.store(u64::MAX, Relaxed);
        self.start.store(at, Relaxed);
    }

    /// Stops counting messages stamped from `at` on.
    pub fn close(&self, at: u64) {
        self.end.store(at, Relaxed);
    }

    /// Whether a message stamped `ns` counts.
    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.start.load(Relaxed) && ns < self.end.load(Relaxed)
    }
}

/// Counters every connection task adds to (atomics: the runtime has one thread, so they
/// are never contended).
#[derive(Debug, Default)]
pub struct Sink {
    pub window: Window,
    /// Deliveries of messages stamped inside the window (publishers' own echoes excluded).
    pub deliveries: AtomicU64,
    /// Publish → delivery, in the window, microseconds.
    pub deliver_latency: Histogram,
    /// Publish → ack, in the window, microseconds.
    pub ack_latency: Histogram,
    /// Publishes acknowledged, stamped inside the window, per room.
    pub acked: Vec<AtomicU64>,
    /// Publishes answered at all (ack or refusal), any time.
    pub answered: AtomicU64,
    /// Publishes refused.
    pub refused: AtomicU64,
    /// Publishes handed to a socket.
    pub sent: AtomicU64,
    /// Frames that were neither deliveries nor replies, by kind (after the handshake).
    pub others: Mutex<BTreeMap<String, u64>>,
    /// Connections the server closed or lost.
    pub closed: AtomicU64,
    /// Woken at every answer to a publish (one waiter: the one-to-one sender).
    pub answer: Notify,
}

impl Sink {
    /// A sink for `rooms` rooms.
    pub fn new(rooms: usize) -> Arc<Self> {
        Arc::new(Self {
            acked: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            ..Self::default()
        })
    }

    /// Publishes acknowledged in the window, all rooms.
    pub fn acked_total(&self) -> u64 {
        self.acked.iter().map(|a| a.load(Relaxed)).sum()
    }

    /// Frames counted in `others`, all kinds (not the `presence.` entries of batches).
    pub fn others_total(&self) -> u64 {
        self.others
            .lock()
            .iter()
            .filter(|(k, _)| !k.starts_with("presence."))
            .map(|(_, n)| n)
            .sum()
    }

    /// Zeroes the window's counts (between sweep steps, with nothing in flight).
    pub fn reset(&self) {
        self.deliveries.store(0, Relaxed);
        self.deliver_latency.reset();
        self.ack_latency.reset();
        for a in &self.acked {
            a.store(0, Relaxed);
        }
        self.others.lock().clear();
    }
}

/// What a reader does with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Counts deliveries of the window (and their latency) and other frames.
    Member,
    /// Publishes what the pacer queues and records acks; its own echoes are not counted.
    Publisher,
}

/// The member connections [`open_members`] opened.
#[derive(Debug)]
pub struct Opened {
    /// Their reader tasks (abort them to drop the connections).
    pub tasks: Vec<JoinHandle<()>>,
    /// The handshakes that failed, with why.
    pub errors: Vec<String>,
    /// From the first connect to the last handshake's end.
    pub elapsed: Duration,
}

/// Prepares one room of `users` users and no publisher (idle, connect, presence), then
/// gives the server a second to settle.
pub async fn prepare_one_room<T: Target>(target: &mut T, users: usize) -> anyhow::Result<()> {
    target
        .prepare(Plan {
            rooms: 1,
            users_per_room: users,
            publishers: false,
            dm: false,
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Opens `members` member connections in each of `rooms` rooms ([`open_members`] with
/// `ctx`'s concurrency and clock).
pub async fn open_rooms<T: Target>(
    target: &Arc<T>,
    ctx: &Ctx,
    (rooms, members): (usize, usize),
    resume: bool,
    sink: &Arc<Sink>,
) -> Opened {
    let whos = (0..rooms)
        .flat_map(|room| (0..members).map(move |conn| Who::Member { room, conn }))
        .collect();
    open_members(
        target,
        whos,
        ctx.common.concurrency,
        resume,
        sink,
        ctx.clock,
    )
    .await
}

/// Opens a member connection for each of `whos`, at most `concurrency` handshakes in
/// flight, round-robin over [`sources`], and starts each one's reader at once (so that
/// nothing the server sends meanwhile waits in a socket).
pub async fn open_members<T: Target>(
    target: &Arc<T>,
    whos: Vec<Who>,
    concurrency: usize,
    resume: bool,
    sink: &Arc<Sink>,
    clock: Clock,
) -> Opened {
    let from: Vec<Ipv4Addr> = sources(whos.len());
    let t0 = Instant::now();
    let results: Vec<Result<JoinHandle<()>, String>> =
        futures_util::stream::iter(whos.into_iter().enumerate())
            .map(|(i, who)| {
                let target = target.clone();
                let sink = sink.clone();
                let source = from[i % from.len()];
                async move {
                    match target.open(who, source, resume).await {
                        Ok(ws) => Ok(spawn_conn(target, ws, Role::Member, sink, clock, None)),
                        Err(e) => Err(format!("{who:?}: {e:#}")),
                    }
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let elapsed = t0.elapsed();
    let (mut tasks, mut errors) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(t) => tasks.push(t),
            Err(e) => errors.push(e),
        }
    }
    Opened {
        tasks,
        errors,
        elapsed,
    }
}

/// Opens the connection of `who` as a publisher: the returned queue feeds its task.
pub async fn open_publisher<T: Target>(
    target: &Arc<T>,
    who: Who,
    sink: &Arc<Sink>,
    clock: Clock,
) -> anyhow::Result<(mpsc::UnboundedSender<Publish>, JoinHandle<()>)> {
    let ws = target.open(who, Ipv4Addr::LOCALHOST, false).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = spawn_conn(
        target.clone(),
        ws,
        Role::Publisher,
        sink.clone(),
        clock,
        Some(rx),
    );
    Ok((tx, task))
}

/// A publish the pacer queued: request number, room, intended send time (ns).
#[derive(Debug, Clone, Copy)]
pub struct Publish {
    pub req: u64,
    pub room: usize,
    pub stamp: u64,
}

/// Spawns the task that owns `ws`: it reads every frame (counting into `sink` by `role`),
/// answers server pings, sends the target's keepalive, and, when `publishes` is given,
/// sends what arrives there. It ends when the server closes the connection or when
/// aborted.
pub fn spawn_conn<T: Target>(
    target: Arc<T>,
    mut ws: Ws,
    role: Role,
    sink: Arc<Sink>,
    clock: Clock,
    mut publishes: Option<mpsc::UnboundedReceiver<Publish>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (period, ping) = target
            .keepalive()
            .unwrap_or((Duration::from_secs(3600), ""));
        // Spread the keepalives of many connections over the period.
        let offset = period.mul_f64(f64::from(rand::random::<u16>()) / 65_536.0);
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        let mut pending: HashMap<u64, (u64, usize)> = HashMap::new();
        let mut replies: Vec<&'static str> = Vec::new();
        loop {
            tokio::select! {
                m = ws.next() => {
                    let text = match m {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => {
                            sink.closed.fetch_add(1, Relaxed);
                            return;
                        }
                        Some(Ok(_)) => continue,
                    };
                    let now = clock.now_ns();
                    target.read(&text, &mut |e| on_event(e, role, &sink, &mut pending, &mut replies, now));
                    for r in replies.drain(..) {
                        if send_text(&mut ws, r.to_owned()).await.is_err() {
                            return;
                        }
                    }
                }
                p = async { publishes.as_mut()?.recv().await }, if publishes.is_some() => {
                    let Some(p) = p else { publishes = None; continue };
                    pending.insert(p.req, (p.stamp, p.room));
                    let frame = target.publish(p.room, p.req, &payload(p.stamp, p.room));
                    sink.sent.fetch_add(1, Relaxed);
                    if send_text(&mut ws, frame).await.is_err() {
                        sink.closed.fetch_add(1, Relaxed);
                        return;
                    }
                }
                _ = keepalive.tick(), if !ping.is_empty() => {
                    if send_text(&mut ws, ping.to_owned()).await.is_err() {
                        sink.closed.fetch_add(1, Relaxed);
                        return;
                    }
                }
            }
        }
    })
}

/// Counts one event of a connection with `role` received at `now` (ns).
fn on_event(
    e: Event<'_>,
    role: Role,
    sink: &Sink,
    pending: &mut HashMap<u64, (u64, usize)>,
    replies: &mut Vec<&'static str>,
    now: u64,
) {
    match e {
        Event::Delivery { stamp } => {
            if role == Role::Member && sink.window.contains(stamp) {
                sink.deliveries.fetch_add(1, Relaxed);
                sink.deliver_latency
                    .record(now.saturating_sub(stamp) / 1000);
            }
        }
        Event::Ack { req } => {
            if let Some((stamp, room)) = pending.remove(&req) {
                if sink.window.contains(stamp) {
                    sink.ack_latency.record(now.saturating_sub(stamp) / 1000);
                    sink.acked[room].fetch_add(1, Relaxed);
                }
                answered(sink);
            }
        }
        Event::Refused { req } => {
            if let Some(req) = req {
                pending.remove(&req);
            }
            sink.refused.fetch_add(1, Relaxed);
            answered(sink);
        }
        Event::Ping { reply } => replies.push(reply),
        Event::Other { kind } => {
            *sink.others.lock().entry(kind.to_owned()).or_default() += 1;
        }
    }
}

fn answered(sink: &Sink) {
    sink.answered.fetch_add(1, Relaxed);
    sink.answer.notify_one();
}

/// Where a run's figures go: one printed line, and one JSON object appended to `--out`.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub out: Option<PathBuf>,
    /// Fields every record of this run carries (system, scenario, round, time).
    pub base: Value,
}

impl Recorder {
    /// Prints `line` and appends `base` + `key` + `metrics` (the figures the report's table
    /// compares, numbers only) + `detail` (anything else: CDFs, counts) as one JSON line.
    pub fn record(
        &self,
        key: &str,
        line: &str,
        metrics: Value,
        detail: Value,
    ) -> anyhow::Result<()> {
        let system = self.base["system"].as_str().unwrap_or("?");
        println!("{system:<10} {key:<34} {line}");
        let Some(path) = &self.out else { return Ok(()) };
        let mut rec = self.base.clone();
        rec["key"] = json!(key);
        rec["metrics"] = metrics;
        rec["detail"] = detail;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{rec}")?;
        Ok(())
    }
}

/// Milliseconds with two decimals.
pub fn ms(v: f64) -> String {
    format!("{v:.2}")
}
