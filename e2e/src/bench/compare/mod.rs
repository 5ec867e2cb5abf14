//! `parley-bench compare`: the same driver against an embedded Parley node and against
//! Centrifugo v6 (memory engine), each spoken to in its own protocol (issue 14). Each run
//! prints one line of figures and appends one JSON object to `--out FILE.jsonl`;
//! `compare report FILE.jsonl` prints the medians per system and their ratio.
//!
//! ```text
//!   parley-bench compare <scenario> --system parley|centrifugo --addr HOST:PORT --pid PID
//!                                   [--out FILE.jsonl] [--round K] [--concurrency C] [--secret S]
//!     idle        --conns N               idle connections: server RSS per connection
//!     connect     --conns N               a connect storm, then a reconnect (resume) storm
//!     presence    --members M             what joining one room sends to its members
//!     fanout      --rooms R --members M --rate X --secs S [--sweep]
//!     one-to-one  --messages N [--interval-ms X]
//!   parley-bench compare report FILE.jsonl
//! ```
//!
//! The driver is meant to run on one core (`taskset -c 1`; the binary gives `compare` a
//! current-thread runtime) with the server on the other (`taskset -c 0`): dev/bench-compare
//! runs the whole comparison. A delivery is recognised by substring (the payload's
//! `t=<ns>;`), never parsed as JSON, and counted in atomics, so that one driver core keeps
//! up with several hundred thousand deliveries a second.
//!
//! [`target::Target`] is what a server must offer; [`parley::Parley`] and
//! [`centrifugo::Centrifugo`] implement it; [`runner`] opens connections and counts.

pub mod centrifugo;
pub mod channels;
pub mod connect;
pub mod fanout;
pub mod idle;
pub mod one_to_one;
pub mod parley;
pub mod presence;
pub mod report;
pub mod runner;
pub mod stats;
pub mod target;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::json;

use runner::Recorder;
use stats::{Clock, Server};

/// `compare`'s scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// One scenario against one server, or the report over a JSONL file.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Scenario {
    /// N idle authenticated connections in one room: the server's RSS per connection.
    Idle(idle::Args),
    /// N connections as fast as possible, then all of them again (Parley: with resume_after).
    Connect(connect::Args),
    /// M members of one room connect: the frames each receives besides its handshake.
    Presence(presence::Args),
    /// R rooms of M members and a publisher each, at a total publish rate (open loop).
    Fanout(fanout::Args),
    /// Two users in a DM: send → ack and send → delivery.
    OneToOne(one_to_one::Args),
    /// Parley only: N groups written in turn for S seconds, the server's RSS sampled.
    Channels(channels::Args),
    /// Medians per system and key over a JSONL file, and the ratio Parley / Centrifugo.
    Report(report::Args),
}

/// The server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Parley,
    Centrifugo,
}

/// The settings every scenario shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The server under test.
    #[arg(long, value_enum)]
    pub system: System,
    /// Its address (plain HTTP and WebSocket), e.g. 127.0.0.1:8095.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Its process ID: resident memory and CPU time are read from `/proc/<pid>`.
    #[arg(long)]
    pub pid: u32,
    /// A JSONL file to append this run's record to.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The round number, copied into the record (dev/bench-compare runs 3).
    #[arg(long, default_value_t = 0)]
    pub round: u32,
    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// Centrifugo's `client.token.hmac_secret_key` (dev/centrifugo status prints it).
    #[arg(
        long,
        env = "PARLEY_BENCH_CENTRIFUGO_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub secret: String,
    /// Parley only: each connection's hello asks for `presence_batch` frames (several
    /// users' presence in one frame) instead of a `presence` frame per change.
    #[arg(long)]
    pub presence_batch: bool,
}

/// What a scenario runs with: its settings, the server's /proc readings, the driver's
/// clock and where its figures go.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub common: Common,
    pub server: Server,
    /// This process, to show whether the driver itself was the bottleneck.
    pub driver: Server,
    pub clock: Clock,
    pub rec: Recorder,
}

impl Ctx {
    fn new(common: &Common, scenario: &str) -> Self {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let system = match common.system {
            System::Parley => "parley",
            System::Centrifugo => "centrifugo",
        };
        Self {
            common: common.clone(),
            server: Server::new(common.pid),
            driver: Server::new(std::process::id()),
            clock: Clock::start(),
            rec: Recorder {
                out: common.out.clone(),
                base: json!({"system": system, "scenario": scenario, "round": common.round, "unix_s": at}),
            },
        }
    }
}

/// Refuses `conns` connections when this process may not open that many files (the
/// machine's hard limit is 20000 per process, so about 10,000 is the most a reconnect
/// storm can hold alongside the previous one's closing sockets).
pub fn check_conns(conns: usize) -> anyhow::Result<()> {
    if let Some(limit) = stats::open_files_limit() {
        anyhow::ensure!(
            (conns as u64) + 200 <= limit,
            "{conns} connections need more than {limit} open files, this process's limit \
             (`ulimit -n`; this machine's hard limit is 20000 per process, so 10k connections \
             is the most here)"
        );
    }
    Ok(())
}

/// Runs the scenario `a` names with the target of its `--system`.
macro_rules! with_target {
    ($common:expr, $t:ident => $body:expr) => {
        match $common.system {
            System::Parley => {
                let $t = parley::Parley::new($common.addr, $common.presence_batch);
                $body
            }
            System::Centrifugo => {
                anyhow::ensure!(
                    !$common.secret.is_empty(),
                    "--secret (or PARLEY_BENCH_CENTRIFUGO_SECRET) is needed for Centrifugo"
                );
                let $t = centrifugo::Centrifugo::new($common.addr, $common.secret.clone());
                $body
            }
        }
    };
}

/// Runs one scenario (or the report).
pub async fn run(a: Args) -> anyhow::Result<()> {
    match a.scenario {
        Scenario::Idle(a) => {
            let ctx = Ctx::new(&a.common, "idle");
            with_target!(a.common, t => idle::run(t, &ctx, &a).await)
        }
        Scenario::Connect(a) => {
            let ctx = Ctx::new(&a.common, "connect");
            with_target!(a.common, t => connect::run(t, &ctx, &a).await)
        }
        Scenario::Presence(a) => {
            let ctx = Ctx::new(&a.common, "presence");
            with_target!(a.common, t => presence::run(t, &ctx, &a).await)
        }
        Scenario::Fanout(a) => {
            let ctx = Ctx::new(&a.common, if a.sweep { "fanout-sweep" } else { "fanout" });
            with_target!(a.common, t => fanout::run(t, &ctx, &a).await)
        }
        Scenario::OneToOne(a) => {
            let ctx = Ctx::new(&a.common, "one-to-one");
            with_target!(a.common, t => one_to_one::run(t, &ctx, &a).await)
        }
        Scenario::Channels(a) => {
            let ctx = Ctx::new(&a.common, "channels");
            channels::run(&ctx, &a).await
        }
        Scenario::Report(a) => report::run(&a),
    }
}
