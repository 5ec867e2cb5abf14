//! `parley-chaos`: the soak. One cluster of real chat-nodes over `dev/services`, the fault
//! scenarios' workload for `--minutes`, faults drawn at random from the registry
//! (`parley_e2e::nemesis::FAULTS`) one at a time, then the history checker's summary
//! (operations, faults injected by kind, anomalies by kind). `dev/chaos` builds and runs it.
//!
//! ```text
//! dev/chaos --minutes 10 [--seed 42] [--faults pause,kill] [--tail 20]
//! ```
//!
//! Exit status: 0 when the checker found no anomaly and at least
//! [`MIN_RECOVERED`](parley_e2e::workload::scenario::MIN_RECOVERED) sends were acknowledged
//! after the last heal, 1 otherwise, 2 when the run itself failed (services missing, a fault that could not be injected, ...).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use parley_e2e::cluster::Options;
use parley_e2e::nemesis::{FAULTS, Fault, fault};
use parley_e2e::workload::Workload;
use parley_e2e::workload::scenario::{Soak, run_soak};

/// A soak under random faults, judged by the history checker.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// How long the workload runs, in minutes (fractions allowed).
    #[arg(long)]
    minutes: f64,
    /// Seeds every random draw (faults, targets, the workload's choices); a random seed
    /// when absent, printed either way so that a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// The fault kinds to draw from, comma-separated (default: every registered kind).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Client processes of the workload.
    #[arg(long, default_value_t = Workload::default().processes)]
    processes: usize,
    /// Shortest and longest time a fault is held, in seconds.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"], default_values_t = [4.0, 10.0])]
    hold: Vec<f64>,
    /// Shortest and longest quiet time between faults, in seconds.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"], default_values_t = [4.0, 12.0])]
    gap: Vec<f64>,
    /// Seconds of load after the last heal, before the checker (no fault starts that would
    /// leave less).
    #[arg(long, default_value_t = 20.0)]
    tail: f64,
}

/// The registered kinds named in `names` (all of them for none). Errors: an unknown kind.
fn chosen(names: &[String]) -> Result<Vec<&'static Fault>, String> {
    if names.is_empty() {
        return Ok(FAULTS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            fault(n).ok_or_else(|| {
                let known: Vec<&str> = FAULTS.iter().map(|f| f.kind).collect();
                format!("no fault kind {n:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

fn secs(pair: &[f64]) -> (Duration, Duration) {
    (
        Duration::from_secs_f64(pair[0].max(0.0)),
        Duration::from_secs_f64(pair[1].max(pair[0]).max(0.0)),
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let faults = match chosen(&args.faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("parley-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let kinds: Vec<&str> = faults.iter().map(|f| f.kind).collect();
    println!(
        "seed {seed}, {} min, faults {} (again: dev/chaos --minutes {} --seed {seed})",
        args.minutes,
        kinds.join(","),
        args.minutes
    );
    let soak = Soak {
        cluster: Options {
            heartbeat_interval_ms: 2000,
            ..Options::default()
        },
        workload: Workload {
            processes: args.processes,
            seed,
            ..Workload::default()
        },
        duration: Duration::from_secs_f64(args.minutes.max(0.0) * 60.0),
        faults,
        seed,
        hold: secs(&args.hold),
        gap: secs(&args.gap),
        tail: Duration::from_secs_f64(args.tail.max(0.0)),
    };
    let services = match parley_e2e::Services::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("parley-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    match run_soak(&services, soak).await {
        Ok(outcome) => {
            println!("{outcome}");
            if outcome.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("parley-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
