//! `compare presence --members M`: M distinct users of one room connect (C handshakes in
//! flight) and stay; every frame a connection receives after its own handshake reply is
//! counted by kind (Parley: `presence`, `member_joined`, ...; Centrifugo sends nothing
//! unless join/leave is on, which dev/centrifugo leaves off, its default). Figures: frames
//! in total and per connection, and the server's CPU seconds from the first connect to
//! `--settle-s` after the last.

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
    let opened = open_rooms(&target, ctx, (1, a.members), false, &sink).await;
    tokio::time::sleep(Duration::from_secs(a.settle_s)).await;
    let cpu_s = ctx.server.cpu_s() - cpu0;
    let kinds = sink.others.lock().clone();
    let total = sink.others_total();
    let per_conn = total as f64 / opened.tasks.len().max(1) as f64;
    let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    ctx.rec.record(
        &format!("presence members={}", a.members),
        &format!(
            "{} members ({} failed): {total} frames, {per_conn:.1}/conn [{}], {cpu_s:.2} CPU-s",
            opened.tasks.len(),
            opened.errors.len(),
            by_kind.join(", ")
        ),
        json!({"frames": total, "frames_per_conn": per_conn, "cpu_s": cpu_s}),
        json!({"members": a.members, "connected": opened.tasks.len(), "failed": opened.errors.len(),
               "by_kind": kinds, "secs": opened.elapsed.as_secs_f64(), "closed": sink.closed.load(Relaxed),
               "first_errors": opened.errors.iter().take(3).collect::<Vec<_>>()}),
    )?;
    for t in opened.tasks {
        t.abort();
    }
    Ok(())
}
