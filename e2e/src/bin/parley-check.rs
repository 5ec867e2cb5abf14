//! `parley-check HISTORY.jsonl STORED.jsonl [--json]`: checks a workload's history against
//! the rows the shards stored (see `parley_e2e::history::check`) and prints the summary,
//! or the report as JSON with `--json`.
//!
//! Exit status: 0 when no anomaly was found, 1 when any was, 2 when an input cannot be
//! read or the history is malformed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use parley_e2e::history::{CheckOptions, check, read_history, read_stored};

/// Checks a history (JSON lines of operations) against the stored messages (JSON lines of
/// rows); exits 0 valid, 1 anomalies, 2 bad input.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The history the workload wrote: one operation per line.
    history: PathBuf,
    /// The messages the shards stored after the run: one row per line.
    stored: PathBuf,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
    /// Examples printed per anomaly kind.
    #[arg(long, default_value_t = CheckOptions::default().max_examples)]
    examples: usize,
    /// A member that leaves the channel at most this many ms after a send's ok need not
    /// receive that message (see `CheckOptions::leave_grace_ms`).
    #[arg(long, default_value_t = 0)]
    leave_grace_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let report = read_history(&args.history)
        .map_err(|e| e.to_string())
        .and_then(|history| {
            let stored = read_stored(&args.stored).map_err(|e| e.to_string())?;
            let opts = CheckOptions {
                max_examples: args.examples,
                leave_grace_ms: args.leave_grace_ms,
            };
            check(&history, &stored, opts).map_err(|e| e.to_string())
        });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("parley-check: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("parley-check: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        println!("{report}");
    }
    if report.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
