//! `compare connect --conns N [--concurrency C]`: N clients connect as fast as possible (C
//! handshakes in flight), authenticated and in one room; then every connection is dropped
//! and all reconnect (Parley: `hello` with `resume_after` = the last message id;
//! Centrifugo: connect and subscribe again). Figures per storm: connections per second and
//! the server's CPU seconds, from the first connect to 1 s after the last handshake.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::runner::{Opened, Sink, open_rooms, prepare_one_room};
use super::target::Target;
use super::{Common, Ctx, check_conns};

/// The settings of `connect`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections per storm.
    #[arg(long)]
    pub conns: usize,
    /// Distinct users they belong to (Parley registers each: about 50 ms of server CPU).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
}

/// One storm's figures.
struct Storm {
    opened: Opened,
    cpu_s: f64,
}

impl Storm {
    fn rate(&self) -> f64 {
        self.opened.tasks.len() as f64 / self.opened.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn storm<T: Target>(
    target: &Arc<T>,
    ctx: &Ctx,
    a: &Args,
    resume: bool,
    sink: &Arc<Sink>,
) -> Storm {
    let cpu0 = ctx.server.cpu_s();
    let opened = open_rooms(target, ctx, (1, a.conns), resume, sink).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Storm {
        opened,
        cpu_s: ctx.server.cpu_s() - cpu0,
    }
}

/// Runs `connect` against `target`.
pub async fn run<T: Target>(mut target: T, ctx: &Ctx, a: &Args) -> anyhow::Result<()> {
    // Two storms' sockets may overlap while the first's close.
    check_conns(a.conns)?;
    let users = a.users.clamp(1, a.conns.max(1));
    prepare_one_room(&mut target, users).await?;
    let target = Arc::new(target);
    let sink = Sink::new(1);
    let first = storm(&target, ctx, a, false, &sink).await;
    for t in &first.opened.tasks {
        t.abort();
    }
    // Let the server see the closes before the second storm.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = storm(&target, ctx, a, true, &sink).await;
    let errors: Vec<&String> = first
        .opened
        .errors
        .iter()
        .chain(&second.opened.errors)
        .take(3)
        .collect();
    ctx.rec.record(
        &format!("connect conns={}", a.conns),
        &format!(
            "connect {:.0} conns/s, {:.2} CPU-s ({} failed); reconnect {:.0} conns/s, {:.2} CPU-s ({} failed)",
            first.rate(),
            first.cpu_s,
            first.opened.errors.len(),
            second.rate(),
            second.cpu_s,
            second.opened.errors.len()
        ),
        json!({"conns_per_s": first.rate(), "cpu_s": first.cpu_s,
               "reconnect_conns_per_s": second.rate(), "reconnect_cpu_s": second.cpu_s}),
        json!({"conns": a.conns, "users": users, "concurrency": ctx.common.concurrency,
               "failed": first.opened.errors.len(), "reconnect_failed": second.opened.errors.len(),
               "secs": first.opened.elapsed.as_secs_f64(), "reconnect_secs": second.opened.elapsed.as_secs_f64(),
               "other_frames": *sink.others.lock(), "first_errors": errors}),
    )?;
    for t in second.opened.tasks {
        t.abort();
    }
    Ok(())
}
