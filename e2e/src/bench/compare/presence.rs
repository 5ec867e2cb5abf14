//! `compare presence --members M`: M distinct users of one room connect (C handshakes in
//! flight) and stay; every frame a connection receives after its own handshake reply is
//! counted by kind (Parley: `presence`, `member_joined`, ...; Centrifugo sends nothing
//! unless join/leave is on, which dev/centrifugo leaves off, its default). Figures: frames
//! in total and per connection, the presence changes they told (`presence` frames, plus the
//! entries of `presence_batch` frames when `--presence-batch` asks for those), and the
//! server's CPU seconds from the first connect to `--settle-s` after the last, and its
//! resident memory then per connection.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::json;

use super::runner::{Sink, open_rooms, prepare_one_room};
use super::target::Target;
use super::{Common, Ctx, check_conns};

/// The settings of `presence`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Members of the room, each a user of its own with one connection.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Seconds to wait after the last connection before counting.
    #[arg(long, default_value_t = 3)]
    pub settle_s: u64,
}

/// Runs `presence` against `target`.
pub async fn run<T: Target>(mut target: T, ctx: &Ctx, a: &Args) -> anyhow::Result<()> {
    check_conns(a.members)?;
    prepare_one_room(&mut target, a.members.max(1)).await?;
    let target = Arc::new(target);
    let sink = Sink::new(1);
    let cpu0 = ctx.server.cpu_s();
    let before = ctx.server.memory();
    let opened = open_rooms(&target, ctx, (1, a.members), false, &sink).await;
    tokio::time::sleep(Duration::from_secs(a.settle_s)).await;
    let cpu_s = ctx.server.cpu_s() - cpu0;
    let after = ctx.server.memory();
    let kib_per_conn =
        after.rss_kib.saturating_sub(before.rss_kib) as f64 / opened.tasks.len().max(1) as f64;
    let kinds = sink.others.lock().clone();
    let total = sink.others_total();
    let per_conn = total as f64 / opened.tasks.len().max(1) as f64;
    // Presence changes told, whether one per frame or several in a presence_batch frame.
    let told = kinds.get("presence").copied().unwrap_or(0)
        + kinds.get("presence.batched").copied().unwrap_or(0);
    let key = if ctx.common.presence_batch {
        format!("presence members={} batched", a.members)
    } else {
        format!("presence members={}", a.members)
    };
    let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    ctx.rec.record(
        &key,
        &format!(
            "{} members ({} failed): {total} frames, {per_conn:.1}/conn, {told} changes told [{}], {cpu_s:.2} CPU-s, RSS {kib_per_conn:.1} KiB/conn",
            opened.tasks.len(),
            opened.errors.len(),
            by_kind.join(", ")
        ),
        json!({"frames": total, "frames_per_conn": per_conn, "told": told, "cpu_s": cpu_s,
               "kib_per_conn": kib_per_conn}),
        json!({"members": a.members, "connected": opened.tasks.len(), "failed": opened.errors.len(),
               "by_kind": kinds, "secs": opened.elapsed.as_secs_f64(), "closed": sink.closed.load(Relaxed),
               "first_errors": opened.errors.iter().take(3).collect::<Vec<_>>()}),
    )?;
    for t in opened.tasks {
        t.abort();
    }
    Ok(())
}
