//! `compare channels --channels N --secs S --rate R`, Parley only: memory at scale. `--users`
//! users create N groups between them (setup, timed but not part of the figures), then the
//! driver writes into the groups in turn, one REST send each (`R` a second, open loop, at
//! most `--in-flight` at once), for `S` seconds, and samples the server's resident memory
//! every `--sample-s`. Figures: RSS when the writing starts, its highest, at the end, and
//! what it grew over the second half of the run: flat means the node's per-channel state
//! (sequencer, idempotency keys, hub) is bounded, not one entry per channel ever written.
//! Centrifugo has no channels to create or state to keep per channel without subscribers,
//! so there is nothing to compare it with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use parley_protocol::Id;
use serde_json::json;

use super::parley::Parley;
use super::stats::Memory;
use super::{Common, Ctx, System};
use crate::client::Api;

/// The settings of `channels`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Groups created and written.
    #[arg(long, default_value_t = 100_000)]
    pub channels: usize,
    /// Users who create them (each owns `channels / users`).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 600)]
    pub secs: u64,
    /// Sends a second (open loop), each into the next group in turn.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Sends in flight at most (a send past it is skipped and counted as behind).
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 10)]
    pub sample_s: u64,
}

/// A user's API handle (token set).
fn api_of(base: &str, token: String, id: Id) -> Api {
    let mut api = Api::new(base);
    api.token = Some(token);
    api.user_id = Some(id);
    api
}

/// Creates group `name`, retrying while the node sheds (429, 503).
async fn create(api: &Api, name: &str) -> anyhow::Result<Id> {
    for _ in 0..200 {
        let r = api.post("/v1/channels", &json!({"name": name})).await;
        match r.status {
            201 => {
                return r.body["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .context("create: no id");
            }
            429 | 503 => tokio::time::sleep(Duration::from_millis(100)).await,
            s => anyhow::bail!("create {name}: {s} {}", r.body),
        }
    }
    anyhow::bail!("create {name}: still refused after 200 tries")
}

/// What the sends came to.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    behind: AtomicU64,
}

/// The groups of a run: their owners' API handles, and (owner, group) per group.
struct Groups {
    users: Vec<Api>,
    channels: Vec<(usize, Id)>,
    setup_s: f64,
}

/// Registers `a.users` users and has them create `a.channels` groups between them.
async fn setup(base: &str, a: &Args) -> anyhow::Result<Groups> {
    let tag = crate::bench::run_tag();
    let users: Vec<Api> = futures_util::stream::iter(0..a.users)
        .map(|i| Parley::register(base.to_owned(), format!("b{tag}c{i}")))
        .buffered(8)
        .map_ok(|u| api_of(base, u.token, u.id))
        .try_collect()
        .await?;
    let setup = Instant::now();
    let (owners, tag) = (&users, &tag);
    let channels: Vec<(usize, Id)> = futures_util::stream::iter(0..a.channels)
        .map(|i| async move {
            let owner = i % owners.len();
            create(&owners[owner], &format!("c{tag}-{i}"))
                .await
                .map(|id| (owner, id))
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("{} groups created in {setup_s:.1} s", channels.len());
    Ok(Groups {
        users,
        channels,
        setup_s,
    })
}

/// What the writing came to.
struct Written {
    counts: Arc<Counts>,
    /// (seconds since the start, memory), from the start to the end.
    samples: Vec<(f64, Memory)>,
    /// Sends started (each into the next group in turn).
    turns: usize,
    secs: f64,
    cpu_s: f64,
}

/// Writes into `g`'s groups in turn at `a.rate` for `a.secs`, sampling the server's memory.
async fn write(ctx: &Ctx, a: &Args, g: &Groups) -> Written {
    let counts = Arc::new(Counts::default());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(a.in_flight.max(1)));
    let start = Instant::now();
    let cpu0 = ctx.server.cpu_s();
    let mut samples = vec![(0.0, ctx.server.memory())];
    let every = Duration::from_secs(a.sample_s.max(1));
    let mut next_sample = every;
    // Sends go out in ticks of 10 ms, as many as are due by then.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut sent, mut turns) = (0u64, 0usize);
    while start.elapsed() < Duration::from_secs(a.secs) {
        tick.tick().await;
        let elapsed = start.elapsed();
        let due = (elapsed.as_secs_f64() * a.rate as f64) as u64;
        while sent < due {
            sent += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                counts.behind.fetch_add(1, Relaxed);
                continue;
            };
            let (owner, channel) = g.channels[turns % g.channels.len()];
            turns += 1;
            let api = g.users[owner].clone();
            let counts = counts.clone();
            tokio::spawn(async move {
                let body = json!({"text": "x".repeat(100)});
                let r = api
                    .post(&format!("/v1/channels/{channel}/messages"), &body)
                    .await;
                let c = if r.status == 201 {
                    &counts.ok
                } else {
                    &counts.failed
                };
                c.fetch_add(1, Relaxed);
                drop(permit);
            });
        }
        if elapsed >= next_sample {
            samples.push((elapsed.as_secs_f64(), ctx.server.memory()));
            next_sample += every;
        }
    }
    let _ = in_flight.acquire_many(a.in_flight.max(1) as u32).await;
    let secs = start.elapsed().as_secs_f64();
    samples.push((secs, ctx.server.memory()));
    Written {
        counts,
        samples,
        turns,
        secs,
        cpu_s: ctx.server.cpu_s() - cpu0,
    }
}

/// Runs `channels` (Parley only).
pub async fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        ctx.common.system == System::Parley,
        "channels runs against Parley only (Centrifugo keeps no per-channel state to measure)"
    );
    anyhow::ensure!(
        a.users > 0 && a.channels > 0 && a.rate > 0,
        "users, channels and rate must be positive"
    );
    let g = setup(&format!("http://{}", ctx.common.addr), a).await?;
    let w = write(ctx, a, &g).await;
    let rss_at = |i: usize| w.samples[i].1.rss_kib;
    let first = rss_at(0);
    let last = rss_at(w.samples.len() - 1);
    let max = w.samples.iter().map(|s| s.1.rss_kib).max().unwrap_or(0);
    let half = w
        .samples
        .iter()
        .position(|s| s.0 >= w.secs / 2.0)
        .unwrap_or(0);
    let growth_second_half = last as i64 - rss_at(half) as i64;
    let (ok, failed, behind) = (
        w.counts.ok.load(Relaxed),
        w.counts.failed.load(Relaxed),
        w.counts.behind.load(Relaxed),
    );
    let written = w.turns.min(g.channels.len());
    let samples: Vec<serde_json::Value> = w
        .samples
        .iter()
        .map(|(t, m)| json!({"t": t, "rss_kib": m.rss_kib, "anon_kib": m.anon_kib}))
        .collect();
    ctx.rec.record(
        &format!("channels n={}", a.channels),
        &format!(
            "{} groups ({written} written), {ok} sends in {:.0} s ({:.0}/s; {failed} failed, {behind} behind), \
             {:.1} CPU-s; RSS {first} KiB at start, {max} highest, {last} at end, {growth_second_half:+} over the second half",
            g.channels.len(),
            w.secs,
            ok as f64 / w.secs,
            w.cpu_s,
        ),
        json!({"rss_start_kib": first, "rss_max_kib": max, "rss_end_kib": last,
               "rss_growth_second_half_kib": growth_second_half, "sends_per_s": ok as f64 / w.secs}),
        json!({"channels": g.channels.len(), "written": written, "users": a.users, "rate": a.rate,
               "sends": ok, "failed": failed, "behind": behind, "setup_s": g.setup_s,
               "cpu_s": w.cpu_s, "samples": samples}),
    )?;
    Ok(())
}
