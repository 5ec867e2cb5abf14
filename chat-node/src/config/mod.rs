//! Typed configuration: flags and `PARLEY_*` environment variables, parsed once at start-up.
//! A malformed or unknown value stops start-up with a message that names the key.
//!
//! ```text
//!   argv + PARLEY_* (+ PARLEY_X_FILE files) ──clap──► Config ──distributed()──► Distributed
//!                                                      │ one group per file below, each
//!                                                      └ read by the module it bounds
//! ```
//!
//! Every setting is defined here; the modules that apply them import their group, and
//! `config` imports none of them (no module cycle).
//!
//! - [`Config`] (this file): the node's own keys, with the groups flattened in.
//! - `cluster`: [`ClusterArgs`], distributed mode's keys as given, and [`Distributed`], the
//!   same checked and complete ([`Config::distributed`] names the first key to fix).
//! - `limits`: [`Limits`], the protocol's size and rate limits (chat, ws, http).
//! - `auth`: [`AuthLimits`] (`chat::auth_limits`); `quotas`: [`UserQuotas`]
//!   (`chat::quotas`); `memory`: [`SequencerMemory`] (`chat::sequencer`); `http`:
//!   [`HttpLimits`] (`http::server`); `ws`: [`WsLimits`] (`ws`).
//! - `files`: `PARLEY_X_FILE` ([`Config::from_args_and_files`], what `main` uses) and
//!   [`Config::from_vars`] (a map of variables alone, the process environment unread).
//! - `parse`: value parsers of durations (`_MS`/`_SECS` keys become [`Duration`]s), URLs
//!   (`url::Url`), secrets, the shard map and the ring.
//!
//! Every key's name is a constant of [`parley_crd::env`], shared with the operator. Values
//! that are credentials (session and cluster secrets, database and Redis URLs, S3 keys) are
//! [`Secret`]s: `{:?}` of a `Config` prints `[redacted]` for them.
//!
//! A new setting: its constant in `parley_crd::env`, then a field in [`Config`] or the
//! group it belongs to, with `env = env::NEW_KEY, value_name = env::NEW_KEY`, a typed value
//! and a default (`Duration`s through `millis(range)`/`secs(range)`, credentials as
//! [`Secret`]); then, if the operator sets it, a line in `operator/src/resources/config.rs`
//! (e2e/tests/operator_config.rs then checks that chat-node accepts what it renders).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use parley_crd::env;

use crate::moderation::Policy;
pub use crate::secret::Secret;

mod auth;
mod cluster;
mod files;
mod http;
mod limits;
mod memory;
mod parse;
mod quotas;
#[cfg(test)]
mod tests;
mod ws;

pub use auth::AuthLimits;
pub use cluster::{ClusterArgs, Distributed};
pub use http::HttpLimits;
#[cfg(test)]
pub(crate) use http::parse_net;
pub use limits::Limits;
pub use memory::SequencerMemory;
pub use parse::base_url;
pub use parse::parse_shards;
use parse::{millis, parse_http_url, parse_secret, secs};
pub use quotas::UserQuotas;
pub use ws::WsLimits;

/// What the process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Command {
    /// Serve clients (the default).
    #[default]
    Serve,
    /// Apply the database migrations and create the Kafka topics (distributed mode), then exit.
    Migrate,
    /// Move messages from the Kafka log into the PostgreSQL shards (distributed mode).
    Persist,
}

/// Which backends the node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// One process: SQLite, in-process pub/sub and log, local media files.
    #[default]
    Embedded,
    /// Redis, Kafka, sharded PostgreSQL and S3, several nodes.
    Distributed,
}

/// chat-node configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "chat-node",
    version,
    about = "Parley chat node",
    args_override_self = true
)]
pub struct Config {
    /// What to do: serve (default), migrate or persist.
    #[arg(value_enum, default_value = "serve")]
    pub command: Command,

    /// embedded (default) or distributed.
    #[arg(
        long,
        env = env::MODE,
        value_name = env::MODE,
        value_enum,
        default_value = "embedded"
    )]
    pub mode: Mode,
    /// Address the HTTP/WebSocket server listens on.
    #[arg(
        long,
        env = env::LISTEN,
        value_name = env::LISTEN,
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Directory for the embedded database, media and generated secrets.
    #[arg(
        long,
        env = env::DATA_DIR,
        value_name = env::DATA_DIR,
        default_value = "./parley-data"
    )]
    pub data_dir: PathBuf,

    /// Base URL clients reach this node at (used in signed media URLs).
    /// Default: `http://<the address it listens on>`.
    /// [`Config::public_base_url`] is its text as URLs are built on it.
    #[arg(long, env = env::PUBLIC_URL, value_name = env::PUBLIC_URL, value_parser = parse_http_url)]
    pub public_url: Option<url::Url>,

    /// Secret that signs session tokens (HS256), at least 32 bytes. Embedded mode generates
    /// one on first start and keeps it in the data directory.
    #[arg(long, env = env::JWT_SECRET, value_name = env::JWT_SECRET, value_parser = parse_secret, hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// How long a session token stays valid, given in seconds (7 days by default).
    #[arg(long = "jwt-ttl-secs", env = env::JWT_TTL_SECS, value_name = env::JWT_TTL_SECS,
          default_value = "604800", value_parser = secs(60..=31_536_000))]
    pub jwt_ttl: Duration,

    /// File with one abusive word or phrase per line; reloaded when it changes.
    #[arg(
        long,
        env = env::MODERATION_WORDS_FILE,
        value_name = env::MODERATION_WORDS_FILE
    )]
    pub moderation_words_file: Option<PathBuf>,

    /// What to do with a message that contains a listed word.
    #[arg(
        long,
        env = env::MODERATION_POLICY,
        value_name = env::MODERATION_POLICY,
        value_enum,
        default_value = "mask"
    )]
    pub moderation_policy: Policy,

    /// Comma-separated origins allowed to open WebSockets (e.g. `https://chat.example.com`),
    /// besides the node's own origin. `*` allows any.
    #[arg(
        long,
        env = env::ALLOWED_ORIGINS,
        value_name = env::ALLOWED_ORIGINS,
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Interval at which clients must ping, given in milliseconds.
    #[arg(long = "heartbeat-interval-ms", env = env::HEARTBEAT_INTERVAL_MS, value_name = env::HEARTBEAT_INTERVAL_MS,
          default_value = "15000", value_parser = millis(500..=600_000))]
    pub heartbeat_interval: Duration,

    /// Name of this node, reported in `ready`.
    #[arg(
        long,
        env = env::NODE_NAME,
        value_name = env::NODE_NAME,
        default_value = "embedded"
    )]
    pub node_name: String,

    /// Snowflake worker ID of this node (0..=1023).
    #[arg(long, env = env::WORKER_ID, value_name = env::WORKER_ID, default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub worker_id: u16,

    /// Snowflake epoch, milliseconds since the Unix epoch (default 2024-01-01T00:00:00Z).
    #[arg(long, env = env::SNOWFLAKE_EPOCH_MS, value_name = env::SNOWFLAKE_EPOCH_MS, default_value_t = crate::snowflake::DEFAULT_EPOCH_MS)]
    pub snowflake_epoch_ms: i64,

    /// How long an ID further ahead of the clock than `--max-id-lead-ms` is waited for before
    /// it is refused (sends answer `unavailable`), given in milliseconds.
    #[arg(long = "max-clock-wait-ms", env = env::MAX_CLOCK_WAIT_MS, value_name = env::MAX_CLOCK_WAIT_MS,
          default_value = "2000", value_parser = millis(..))]
    pub max_clock_wait: Duration,

    /// How far ahead of this node's clock its Snowflake IDs may run, given in milliseconds:
    /// after the clock stepped back, or to stay above a channel's last ID made by a node
    /// whose clock was ahead (snowflake.rs, "borrowing").
    #[arg(long = "max-id-lead-ms", env = env::MAX_ID_LEAD_MS, value_name = env::MAX_ID_LEAD_MS,
          default_value = "300000", value_parser = millis(..))]
    pub max_id_lead: Duration,

    /// How long a stopping node spreads the closing of its WebSockets over, given in
    /// milliseconds: each gets
    /// `reconnect` and close 4010 at a jittered point of this window, so a rollout never
    /// sends every client back at once. It must fit in the pod's termination grace period
    /// (with the preStop hook and a few seconds to spare). 0 closes them all at once (still
    /// with `reconnect` and 4010).
    #[arg(long = "drain-ms", env = env::DRAIN_MS, value_name = env::DRAIN_MS,
          default_value = "10000", value_parser = millis(0..=600_000))]
    pub drain_window: Duration,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub auth_limits: AuthLimits,

    #[command(flatten)]
    pub sequencer_memory: SequencerMemory,

    #[command(flatten)]
    pub quotas: UserQuotas,

    #[command(flatten)]
    pub http: HttpLimits,

    #[command(flatten)]
    pub ws: WsLimits,

    /// Which keys were read from `PARLEY_X_FILE` files, and from where (the shard map's file
    /// is watched for changes).
    #[arg(skip)]
    pub files: BTreeMap<String, PathBuf>,
}

/// A configuration that cannot run, naming the key to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The `PARLEY_*` key to fix.
    pub key: String,
    /// What is wrong with it, for a person.
    pub problem: String,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// clap's own answer (a malformed value naming its key, or `--help`).
    #[error(transparent)]
    Arguments(clap::Error),
    /// A value clap accepted that cannot run (a missing key in distributed mode, a file
    /// that cannot be read, an unknown key given to [`Config::from_vars`]).
    #[error(transparent)]
    Config(ConfigError),
}

impl Config {
    /// Parses flags from `args` and variables from the process environment.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Self as clap::Parser>::try_parse_from(args)
    }

    /// `PARLEY_PUBLIC_URL` without a trailing `/` (`https://chat.example.com`), the base of
    /// the URLs the node hands out; `None` when it is not set.
    pub fn public_base_url(&self) -> Option<&str> {
        self.public_url.as_ref().map(base_url)
    }

    /// The defaults, with the data directory at `data_dir` (tests).
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut c = Self::from_args(["chat-node"]).expect("defaults parse");
        c.data_dir = data_dir;
        c.listen = "127.0.0.1:0".parse().expect("valid address");
        // Tests that stop a node need not wait out a drain window; drain tests set one.
        c.drain_window = Duration::ZERO;
        c
    }
}
