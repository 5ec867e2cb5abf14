//! `compare one-to-one --messages N [--interval-ms X]`: two users in a direct conversation
//! (Parley: a DM; Centrifugo: the user-limited channel `dm#a,b`), one connection each. The
//! first sends N messages (after `--warmup` uncounted ones): back to back (interval 0: the
//! next one once the previous is acknowledged) or one every X ms. Figures: send → ack and
//! send → delivery (at the other user) p50/p99, messages per second, and the server's CPU
//! microseconds per message.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use super::runner::{Publish, Sink, ms, open_members, open_publisher};
use super::target::{Plan, Target, Who};
use super::{Common, Ctx};

/// The settings of `one-to-one`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Messages measured.
    #[arg(long, default_value_t = 5000)]
    pub messages: u64,
    /// Milliseconds between sends; 0: each send waits for the previous one's ack.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Messages sent first and not counted.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
}

/// Sends `count` messages from request `*req` on, back to back or paced.
async fn send(
    ctx: &Ctx,
    sink: &Sink,
    tx: &UnboundedSender<Publish>,
    a: &Args,
    count: u64,
    req: &mut u64,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(a.interval_ms.max(1)));
    for _ in 0..count {
        if a.interval_ms > 0 {
            tick.tick().await;
        }
        let answered = sink.answered.load(Relaxed);
        let _ = tx.send(Publish {
            req: *req,
            room: 0,
            stamp: ctx.clock.now_ns(),
        });
        *req += 1;
        if a.interval_ms == 0 {
            let wait = tokio::time::timeout(Duration::from_secs(10), async {
                while sink.answered.load(Relaxed) <= answered {
                    sink.answer.notified().await;
                }
            });
            if wait.await.is_err() {
                return;
            }
        }
    }
}

/// Waits up to 10 s until `done` holds.
async fn wait_for(done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `one-to-one` against `target`.
pub async fn run<T: Target>(mut target: T, ctx: &Ctx, a: &Args) -> anyhow::Result<()> {
    target
        .prepare(Plan {
            rooms: 1,
            users_per_room: 2,
            publishers: false,
            dm: true,
        })
        .await?;
    let target = Arc::new(target);
    let sink = Sink::new(1);
    let receiver = open_members(
        &target,
        vec![Who::Member { room: 0, conn: 1 }],
        1,
        false,
        &sink,
        ctx.clock,
    )
    .await;
    anyhow::ensure!(
        receiver.errors.is_empty(),
        "receiver: {:?}",
        receiver.errors
    );
    let (tx, sender) =
        open_publisher(&target, Who::Member { room: 0, conn: 0 }, &sink, ctx.clock).await?;
    let mut req = 1000;
    send(ctx, &sink, &tx, a, a.warmup, &mut req).await;
    wait_for(|| sink.answered.load(Relaxed) >= a.warmup).await;

    let cpu0 = ctx.server.cpu_s();
    let t0 = Instant::now();
    sink.window.open(ctx.clock.now_ns());
    send(ctx, &sink, &tx, a, a.messages, &mut req).await;
    wait_for(|| sink.answered.load(Relaxed) >= a.warmup + a.messages).await;
    let elapsed = t0.elapsed().as_secs_f64();
    wait_for(|| sink.deliveries.load(Relaxed) >= a.messages).await;
    let cpu_s = ctx.server.cpu_s() - cpu0;

    let (d, k) = (&sink.deliver_latency, &sink.ack_latency);
    let rate = k.count() as f64 / elapsed.max(1e-9);
    let cpu_us = cpu_s * 1e6 / a.messages.max(1) as f64;
    let missing = a.messages.saturating_sub(sink.deliveries.load(Relaxed));
    ctx.rec.record(
        &format!("one-to-one interval={}ms", a.interval_ms),
        &format!(
            "{} msgs at {rate:.0} msg/s; ack p50 {} p99 {} ms; deliver p50 {} p99 {} ms; {cpu_us:.1} CPU-us/msg; {missing} missing, {} refused",
            k.count(),
            ms(k.quantile_ms(0.5)),
            ms(k.quantile_ms(0.99)),
            ms(d.quantile_ms(0.5)),
            ms(d.quantile_ms(0.99)),
            sink.refused.load(Relaxed)
        ),
        json!({"msgs_per_s": rate, "ack_p50_ms": k.quantile_ms(0.5), "ack_p99_ms": k.quantile_ms(0.99),
               "deliver_p50_ms": d.quantile_ms(0.5), "deliver_p99_ms": d.quantile_ms(0.99),
               "cpu_us_per_msg": cpu_us}),
        json!({"messages": a.messages, "interval_ms": a.interval_ms, "acked": k.count(),
               "delivered": sink.deliveries.load(Relaxed), "missing": missing,
               "refused": sink.refused.load(Relaxed), "cpu_s": cpu_s, "secs": elapsed,
               "cdf_deliver_ms": d.cdf(), "cdf_ack_ms": k.cdf()}),
    )?;
    sender.abort();
    for t in receiver.tasks {
        t.abort();
    }
    Ok(())
}
