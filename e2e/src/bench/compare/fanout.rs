//! `compare fanout --rooms R --members M --rate X --secs S [--sweep]`: R rooms of M member
//! connections plus one publisher connection each (a member too, so both servers deliver
//! M + 1 copies; the publisher's own copy is not counted). Publishes at X messages per
//! second in total, open loop: a 1 ms tick queues every message due by then, round-robin
//! over the rooms, each stamped when queued (not when written: a server that stops
//! reading grows the publisher's queue, and the latencies show it). The first `--warmup-s` seconds are not counted; then
//! S seconds are; then the driver waits for the deliveries (up to `--drain-s`).
//!
//! Figures: deliveries, deliveries per second and per server CPU-second (CPU from the end
//! of the warm-up to the end of the drain), publish → delivery p50/p99/p999/max,
//! publish → ack p50/p99, missing deliveries (acknowledged in-window publishes × M minus
//! deliveries counted). `--sweep` multiplies the rate by `--step` after each step until p99
//! passes `--bound-ms` or deliveries fall behind (more than 1 % missing or a publish
//! refused), and reports the highest rate sustained; when the first rate is not sustained
//! already, it divides by `--step` until one is.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use super::runner::{Publish, Sink, ms, open_publisher, open_rooms};
use super::stats::Usage;
use super::target::{Plan, Target, Who};
use super::{Common, Ctx, check_conns};

/// The settings of `fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Member connections per room (besides its publisher).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Distinct users per room the members belong to (Parley registers each).
    #[arg(long, default_value_t = 10)]
    pub users_per_room: usize,
    /// Publishes per second, all rooms together (the sweep's first rate).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds measured (per step of a sweep).
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Seconds published before the measured ones (per step).
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Most seconds to wait for the deliveries after the last publish.
    #[arg(long, default_value_t = 5.0)]
    pub drain_s: f64,
    /// Step the rate up until the server no longer keeps up.
    #[arg(long)]
    pub sweep: bool,
    /// The sweep's bound on publish → delivery p99, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub bound_ms: f64,
    /// The sweep's factor from one rate to the next.
    #[arg(long, default_value_t = 1.25)]
    pub step: f64,
    /// The sweep's most steps.
    #[arg(long, default_value_t = 30)]
    pub max_steps: usize,
}

/// One step's figures.
#[derive(Debug, Clone, Copy)]
struct Step {
    rate: f64,
    deliveries: u64,
    expected: u64,
    cpu_s: f64,
    p99_ms: f64,
    refused: u64,
}

impl Step {
    fn missing(&self) -> u64 {
        self.expected.saturating_sub(self.deliveries)
    }

    /// Whether the server kept up: p99 within `bound_ms`, at most 1 % missing, nothing
    /// refused.
    fn sustained(&self, bound_ms: f64) -> bool {
        self.p99_ms <= bound_ms && self.missing() * 100 <= self.expected && self.refused == 0
    }
}

/// Runs `fanout` (or its sweep) against `target`.
pub async fn run<T: Target>(mut target: T, ctx: &Ctx, a: &Args) -> anyhow::Result<()> {
    let conns = a.rooms * (a.members + 1);
    check_conns(conns)?;
    anyhow::ensure!(
        a.rooms > 0 && a.members > 0 && a.rate > 0.0,
        "rooms, members and rate must be positive"
    );
    target
        .prepare(Plan {
            rooms: a.rooms,
            users_per_room: a.users_per_room.clamp(1, a.members),
            publishers: true,
            dm: false,
        })
        .await?;
    let target = Arc::new(target);
    let sink = Sink::new(a.rooms);
    let opened = open_rooms(&target, ctx, (a.rooms, a.members), false, &sink).await;
    anyhow::ensure!(
        opened.errors.is_empty(),
        "{} connections failed: {:?}",
        opened.errors.len(),
        opened.errors.first()
    );
    let mut publishers = Vec::new();
    for room in 0..a.rooms {
        publishers.push(open_publisher(&target, Who::Publisher { room }, &sink, ctx.clock).await?);
    }
    let queues: Vec<UnboundedSender<Publish>> =
        publishers.iter().map(|(tx, _)| tx.clone()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let best = steps(ctx, a, &sink, &queues).await;
    if a.sweep {
        let (max_rate, dps, per_cpu) = best.map_or((0.0, 0.0, 0.0), |b| {
            (
                b.rate,
                b.deliveries as f64 / a.secs,
                per_cpu_s(b.deliveries, b.cpu_s),
            )
        });
        ctx.rec.record(
            &format!("fanout-sweep {}x{}", a.rooms, a.members),
            &format!("highest rate sustained {max_rate:.0} msg/s = {dps:.0} deliveries/s ({per_cpu:.0} per CPU-s), p99 bound {} ms", a.bound_ms),
            json!({"max_rate": max_rate, "max_deliveries_per_s": dps}),
            json!({"final": true, "rooms": a.rooms, "members": a.members, "bound_ms": a.bound_ms}),
        )?;
    }
    for (_, t) in publishers {
        t.abort();
    }
    for t in opened.tasks {
        t.abort();
    }
    Ok(())
}

/// Runs one step at `--rate`, or with `--sweep` the steps up (or down) from it; returns the
/// fastest step sustained.
async fn steps(
    ctx: &Ctx,
    a: &Args,
    sink: &Arc<Sink>,
    queues: &[UnboundedSender<Publish>],
) -> Option<Step> {
    let mut rate = a.rate;
    let mut next_req = 1000;
    let mut best: Option<Step> = None;
    // A sweep goes up from `--rate` while the server keeps up; when it does not keep up at
    // `--rate` already, it goes down until it does.
    let mut down = false;
    for i in 0..if a.sweep { a.max_steps } else { 1 } {
        if i > 0 {
            // What a failed step left queued drains first (deliveries to the window only
            // count this step's messages, but the server's backlog would slow it).
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        sink.reset();
        let step = step(ctx, a, sink, queues, rate, &mut next_req).await;
        let ok = step.sustained(a.bound_ms);
        if ok {
            best = Some(step);
        }
        if i == 0 && !ok {
            down = true;
        }
        // Up: until a step fails; down: until one succeeds.
        let finished = if down { ok } else { !ok };
        if !a.sweep || finished || sink.closed.load(Relaxed) > 0 {
            break;
        }
        rate = if down { rate / a.step } else { rate * a.step };
    }
    best
}

/// Publishes at `rate` for the warm-up and the measured seconds, waits for the
/// deliveries, records the step and returns its figures.
async fn step(
    ctx: &Ctx,
    a: &Args,
    sink: &Arc<Sink>,
    queues: &[UnboundedSender<Publish>],
    rate: f64,
    next_req: &mut u64,
) -> Step {
    let start_ns = ctx.clock.now_ns() + 1_000_000;
    let warm_ns = (a.warmup_s * 1e9) as u64;
    let measured_ns = (a.secs * 1e9) as u64;
    sink.window.open(start_ns + warm_ns);
    sink.window.close(start_ns + warm_ns + measured_ns);
    let total = (rate * (a.warmup_s + a.secs)).floor() as u64;
    let answered0 = sink.answered.load(Relaxed);
    let (usage0, driver0, wall0) = pace(
        ctx,
        queues,
        rate,
        start_ns,
        start_ns + warm_ns,
        total,
        next_req,
    )
    .await;
    let drain_until = Instant::now() + Duration::from_secs_f64(a.drain_s);
    loop {
        let expected = sink.acked_total() * a.members as u64;
        let done = sink.answered.load(Relaxed) - answered0 >= total
            && sink.deliveries.load(Relaxed) >= expected;
        if done || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let usage = ctx.server.usage() - usage0;
    let cpu_s = usage.cpu_s();
    let driver_cpu_s = ctx.driver.cpu_s() - driver0;
    let cpu_wall_s = wall0.elapsed().as_secs_f64();
    let deliveries = sink.deliveries.load(Relaxed);
    let expected = sink.acked_total() * a.members as u64;
    let (d, k) = (&sink.deliver_latency, &sink.ack_latency);
    let s = Step {
        rate,
        deliveries,
        expected,
        cpu_s,
        p99_ms: d.quantile_ms(0.99),
        refused: sink.refused.load(Relaxed),
    };
    let per_cpu = per_cpu_s(deliveries, cpu_s);
    let dps = deliveries as f64 / a.secs;
    let key = if a.sweep {
        "fanout-sweep-step"
    } else {
        "fanout"
    };
    let _ = ctx.rec.record(
        &format!("{key} {}x{} rate={rate:.0}", a.rooms, a.members),
        &format!(
            "{deliveries} deliveries ({dps:.0}/s, {per_cpu:.0}/CPU-s, {} missing, {} refused); deliver p50 {} p99 {} p999 {} max {} ms; ack p50 {} p99 {} ms; server {:.0} % busy ({}), driver {:.0} %",
            s.missing(),
            s.refused,
            ms(d.quantile_ms(0.5)),
            ms(d.quantile_ms(0.99)),
            ms(d.quantile_ms(0.999)),
            ms(d.quantile_ms(1.0)),
            ms(k.quantile_ms(0.5)),
            ms(k.quantile_ms(0.99)),
            100.0 * cpu_s / cpu_wall_s.max(1e-9),
            usage.describe(deliveries, "delivery"),
            100.0 * driver_cpu_s / cpu_wall_s.max(1e-9),
        ),
        json!({"deliveries_per_s": dps, "deliveries_per_cpu_s": per_cpu,
               "deliver_p50_ms": d.quantile_ms(0.5), "deliver_p99_ms": d.quantile_ms(0.99),
               "deliver_p999_ms": d.quantile_ms(0.999), "deliver_max_ms": d.quantile_ms(1.0),
               "ack_p50_ms": k.quantile_ms(0.5), "ack_p99_ms": k.quantile_ms(0.99),
               "missing": s.missing()}),
        json!({"rooms": a.rooms, "members": a.members, "rate": rate, "secs": a.secs,
               "deliveries": deliveries, "expected": expected, "cpu_s": cpu_s, "refused": s.refused,
               "cpu_wall_s": cpu_wall_s, "driver_cpu_s": driver_cpu_s,
               "server_user_s": usage.user_s, "server_system_s": usage.system_s, "server_write_syscalls": usage.write_syscalls,
               "closed": sink.closed.load(Relaxed), "sustained": s.sustained(a.bound_ms),
               "cdf_deliver_ms": d.cdf(), "cdf_ack_ms": k.cdf()}),
    );
    s
}

/// Queues `total` publishes at `rate` from `start_ns` on, round-robin over the rooms'
/// queues, each stamped when queued. Returns the server's usage and the driver's CPU
/// seconds read when the warm-up ended (at `measure_ns`), and when that was.
async fn pace(
    ctx: &Ctx,
    queues: &[UnboundedSender<Publish>],
    rate: f64,
    start_ns: u64,
    measure_ns: u64,
    total: u64,
    next_req: &mut u64,
) -> (Usage, f64, Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut cpu0 = None;
    while sent < total {
        tick.tick().await;
        let now = ctx.clock.now_ns();
        if cpu0.is_none() && now >= measure_ns {
            cpu0 = Some((ctx.server.usage(), ctx.driver.cpu_s(), Instant::now()));
        }
        // Every message whose time has come (message k at start + k / rate), stamped now:
        // the tick's own lateness (under 1 ms) is the driver's, not the server's; a server
        // that does not read its socket still shows, as the publisher's queue grows.
        while sent < total && start_ns + (sent as f64 * 1e9 / rate) as u64 <= now {
            let stamp = now;
            let room = (sent as usize) % queues.len();
            let _ = queues[room].send(Publish {
                req: *next_req,
                room,
                stamp,
            });
            *next_req += 1;
            sent += 1;
        }
    }
    cpu0.unwrap_or_else(|| (ctx.server.usage(), ctx.driver.cpu_s(), Instant::now()))
}

/// `count` per server CPU-second; 0 when no CPU time was measured (the kernel counts it in
/// ticks of 10 ms).
fn per_cpu_s(count: u64, cpu_s: f64) -> f64 {
    if cpu_s > 0.0 {
        count as f64 / cpu_s
    } else {
        0.0
    }
}
