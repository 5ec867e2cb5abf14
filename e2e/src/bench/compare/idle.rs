//! `compare idle --conns N`: N authenticated connections in one room (Parley: members of
//! one group, `--users` users with N / users sessions each; Centrifugo: each subscribed to
//! the room's channel), idle but for keepalives. Figures: the server's RSS (and anonymous
//! RSS, what it allocated itself) before and after, and KiB per connection.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::runner::{Sink, open_rooms, prepare_one_room};
use super::target::Target;
use super::{Common, Ctx, check_conns};

/// The settings of `idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open.
    #[arg(long)]
    pub conns: usize,
    /// Distinct users they belong to (Parley registers each: about 50 ms of server CPU).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Seconds to wait after the last connection before reading the memory.
    #[arg(long, default_value_t = 3)]
    pub settle_s: u64,
}

/// Runs `idle` against `target`.
pub async fn run<T: Target>(mut target: T, ctx: &Ctx, a: &Args) -> anyhow::Result<()> {
    check_conns(a.conns)?;
    let users = a.users.clamp(1, a.conns.max(1));
    prepare_one_room(&mut target, users).await?;
    let before = ctx.server.memory();
    let target = Arc::new(target);
    let sink = Sink::new(1);
    let opened = open_rooms(&target, ctx, (1, a.conns), false, &sink).await;
    tokio::time::sleep(Duration::from_secs(a.settle_s)).await;
    let after = ctx.server.memory();
    let n = opened.tasks.len().max(1) as f64;
    let per_conn = after.rss_kib.saturating_sub(before.rss_kib) as f64 / n;
    let anon_per_conn = after.anon_kib.saturating_sub(before.anon_kib) as f64 / n;
    ctx.rec.record(
        &format!("idle conns={}", a.conns),
        &format!(
            "{} conns ({} failed) in {:.1} s: RSS {} -> {} KiB, {per_conn:.1} KiB/conn (anon {anon_per_conn:.1})",
            opened.tasks.len(),
            opened.errors.len(),
            opened.elapsed.as_secs_f64(),
            before.rss_kib,
            after.rss_kib
        ),
        json!({"kib_per_conn": per_conn, "anon_kib_per_conn": anon_per_conn}),
        json!({"conns": opened.tasks.len(), "failed": opened.errors.len(), "users": users,
               "before": before, "after": after, "closed": sink.closed.load(std::sync::atomic::Ordering::Relaxed),
               "first_errors": opened.errors.iter().take(3).collect::<Vec<_>>()}),
    )?;
    for t in opened.tasks {
        t.abort();
    }
    Ok(())
}
