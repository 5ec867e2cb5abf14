//! `parley-bench`: programs that load a chat-node and print figures (never asserting; the
//! test suite holds no timed assertion). The binary `src/bin/parley-bench.rs` parses [`Cli`]
//! and calls [`main`].
//!
//! ```text
//!   parley-bench [load] --url URL --senders N --listeners N --messages N [--pid PID]
//!       load::run      senders and listeners in one group: latency, throughput, RSS
//!   parley-bench hostile --node-bin PATH [--check] ...
//!       hostile::run   an embedded node of its own under clients without an account:
//!                      login bursts, slow headers, RSS and a health prober
//!   parley-bench compare <idle|connect|presence|fanout|one-to-one|report> ...
//!       compare::run   the same driver against Parley and Centrifugo, one core
//!                      (dev/bench-compare runs the whole comparison)
//! ```

pub mod compare;
pub mod hostile;
pub mod load;

use std::process::ExitCode;
use std::time::Duration;

/// The command line: `load` (also without a subcommand) or `hostile`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "parley-bench",
    about = "Load against a chat-node, printing figures (never asserting)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `load`'s settings when no subcommand is named.
    #[command(flatten)]
    pub load: load::Args,
}

/// The programs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Senders and listeners in one group against a running chat-node (the default).
    Load(load::Args),
    /// What clients without an account cost an embedded chat-node of its own.
    Hostile(hostile::Args),
    /// Parley against Centrifugo, scenario by scenario (issue 14).
    Compare(compare::Args),
}

impl Cli {
    /// Whether the program wants a runtime of one thread: `compare`, whose driver must
    /// stay on the one core it is pinned to.
    pub fn single_threaded(&self) -> bool {
        matches!(self.command, Some(Command::Compare(_)))
    }
}

/// Runs the program `cli` names. Exit status 1 when `hostile --check` found a bound missed.
pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Some(Command::Hostile(a)) => {
            let ok = hostile::run(a).await;
            ExitCode::from(if ok { 0 } else { 1 })
        }
        Some(Command::Compare(a)) => match compare::run(a).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("parley-bench compare: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Load(a)) => {
            load::run(a).await;
            ExitCode::SUCCESS
        }
        None => {
            load::run(cli.load).await;
            ExitCode::SUCCESS
        }
    }
}

/// The resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmRSS:")
}

/// The value in KiB of the field `name` (with its colon, `VmRSS:`) of a `/proc/<pid>/status`
/// text.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A tag unique to this run (hexadecimal milliseconds since the epoch, 40 bits), to name
/// the users and groups a bench makes so runs against one node do not collide.
fn run_tag() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            % 0xff_ffff_ffff
    )
}

/// The nearest-rank `p` quantile (0.0 ..= 1.0) of `sorted`; zero when it is empty.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `d` in milliseconds, two decimals (`1.50 ms`).
fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let d: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Duration::from_millis(6));
        assert_eq!(percentile(&d, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&d, 1.0), Duration::from_millis(10));
        assert_eq!(percentile(&[], 0.9), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(1500)), "1.50 ms");
    }

    #[test]
    fn load_is_the_default_program() {
        let cli =
            Cli::try_parse_from(["parley-bench", "--url", "http://x:1", "--senders", "2"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.load.url, "http://x:1");
        assert_eq!(cli.load.senders, 2);
        assert_eq!(cli.load.listeners, 100);
        assert_eq!(cli.load.messages, 50);
        let cli = Cli::try_parse_from(["parley-bench", "load", "--pid", "7"]).unwrap();
        let Some(Command::Load(a)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!((a.url.as_str(), a.pid), ("http://127.0.0.1:8080", Some(7)));
        assert!(Cli::try_parse_from(["parley-bench", "--nonsense", "1"]).is_err());
    }
}
