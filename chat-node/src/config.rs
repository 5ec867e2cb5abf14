//! Typed configuration: flags and `PARLEY_*` environment variables, parsed once at start-up.
//! A malformed or unknown value stops start-up with a message that names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::moderation::Policy;

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
        env = "PARLEY_MODE",
        value_name = "PARLEY_MODE",
        value_enum,
        default_value = "embedded"
    )]
    pub mode: Mode,
    /// Address the HTTP/WebSocket server listens on.
    #[arg(
        long,
        env = "PARLEY_LISTEN",
        value_name = "PARLEY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Directory for the embedded database, media and generated secrets.
    #[arg(
        long,
        env = "PARLEY_DATA_DIR",
        value_name = "PARLEY_DATA_DIR",
        default_value = "./parley-data"
    )]
    pub data_dir: PathBuf,

    /// Base URL clients reach this node at (used in signed media URLs).
    /// Default: `http://<the address it listens on>`.
    #[arg(long, env = "PARLEY_PUBLIC_URL", value_name = "PARLEY_PUBLIC_URL", value_parser = parse_url)]
    pub public_url: Option<String>,

    /// Secret that signs session tokens (HS256), at least 32 bytes. Embedded mode generates
    /// one on first start and keeps it in the data directory.
    #[arg(long, env = "PARLEY_JWT_SECRET", value_name = "PARLEY_JWT_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// How long a session token stays valid, in seconds.
    #[arg(long, env = "PARLEY_JWT_TTL_SECS", value_name = "PARLEY_JWT_TTL_SECS", default_value_t = 7 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub jwt_ttl_secs: u64,

    /// File with one abusive word or phrase per line; reloaded when it changes.
    #[arg(
        long,
        env = "PARLEY_MODERATION_WORDS_FILE",
        value_name = "PARLEY_MODERATION_WORDS_FILE"
    )]
    pub moderation_words_file: Option<PathBuf>,

    /// What to do with a message that contains a listed word.
    #[arg(
        long,
        env = "PARLEY_MODERATION_POLICY",
        value_name = "PARLEY_MODERATION_POLICY",
        value_enum,
        default_value = "mask"
    )]
    pub moderation_policy: Policy,

    /// Comma-separated origins allowed to open WebSockets (e.g. `https://chat.example.com`),
    /// besides the node's own origin. `*` allows any.
    #[arg(
        long,
        env = "PARLEY_ALLOWED_ORIGINS",
        value_name = "PARLEY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Interval at which clients must ping, in milliseconds.
    #[arg(long, env = "PARLEY_HEARTBEAT_INTERVAL_MS", value_name = "PARLEY_HEARTBEAT_INTERVAL_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(500..=600_000))]
    pub heartbeat_interval_ms: u64,

    /// Name of this node, reported in `ready`.
    #[arg(
        long,
        env = "PARLEY_NODE_NAME",
        value_name = "PARLEY_NODE_NAME",
        default_value = "embedded"
    )]
    pub node_name: String,

    /// Snowflake worker ID of this node (0..=1023).
    #[arg(long, env = "PARLEY_WORKER_ID", value_name = "PARLEY_WORKER_ID", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub worker_id: u16,

    /// Snowflake epoch, milliseconds since the Unix epoch (default 2024-01-01T00:00:00Z).
    #[arg(long, env = "PARLEY_SNOWFLAKE_EPOCH_MS", value_name = "PARLEY_SNOWFLAKE_EPOCH_MS", default_value_t = crate::snowflake::DEFAULT_EPOCH_MS)]
    pub snowflake_epoch_ms: i64,

    /// How long a clock that stepped back is waited for before sends are refused, in ms.
    #[arg(
        long,
        env = "PARLEY_MAX_CLOCK_WAIT_MS",
        value_name = "PARLEY_MAX_CLOCK_WAIT_MS",
        default_value_t = 2_000
    )]
    pub max_clock_wait_ms: u64,

    /// How long a stopping node spreads the closing of its WebSockets over, ms: each gets
    /// `reconnect` and close 4010 at a jittered point of this window, so a rollout never
    /// sends every client back at once. It must fit in the pod's termination grace period
    /// (with the preStop hook and a few seconds to spare). 0 closes them all at once (still
    /// with `reconnect` and 4010).
    #[arg(long, env = "PARLEY_DRAIN_MS", value_name = "PARLEY_DRAIN_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub drain_ms: u64,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub auth_limits: crate::chat::auth_limits::AuthLimits,

    #[command(flatten)]
    pub sequencer_memory: crate::chat::sequencer::SequencerMemory,

    #[command(flatten)]
    pub quotas: crate::chat::quotas::UserQuotas,

    #[command(flatten)]
    pub http: crate::http::server::HttpLimits,

    #[command(flatten)]
    pub ws: crate::ws::WsLimits,

    /// Which keys were read from `PARLEY_X_FILE` files, and from where (the shard map's file
    /// is watched for changes).
    #[arg(skip)]
    pub files: BTreeMap<String, PathBuf>,
}

/// Distributed mode: where the services are and who the other nodes are. Checked by
/// [`Config::distributed`], which names the first missing key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// PostgreSQL URL of the directory database.
    #[arg(
        long,
        env = "PARLEY_DIRECTORY_URL",
        value_name = "PARLEY_DIRECTORY_URL",
        hide_env_values = true
    )]
    pub directory_url: Option<String>,

    /// Message shards, `;`-separated, each `name:slot-ranges:postgres-url`, where slot ranges
    /// are `+`-joined (`a:0-2047:postgres://...;b:2048-4095:postgres://...`). Together they
    /// must cover slots 0-4095 exactly once.
    #[arg(long, env = "PARLEY_SHARDS", value_name = "PARLEY_SHARDS", value_delimiter = ';', value_parser = parse_shard, hide_env_values = true)]
    pub shards: Vec<crate::backend::postgres::ShardSpec>,

    /// Connections per database pool.
    #[arg(long, env = "PARLEY_DB_POOL_SIZE", value_name = "PARLEY_DB_POOL_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,

    /// Redis URL (pub/sub, presence, node liveness).
    #[arg(
        long,
        env = "PARLEY_REDIS_URL",
        value_name = "PARLEY_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "PARLEY_KAFKA_BOOTSTRAP",
        value_name = "PARLEY_KAFKA_BOOTSTRAP"
    )]
    pub kafka_bootstrap: Option<String>,

    /// Prefix of the topics `<prefix>.messages` and `<prefix>.notifications`.
    #[arg(
        long,
        env = "PARLEY_KAFKA_TOPIC_PREFIX",
        value_name = "PARLEY_KAFKA_TOPIC_PREFIX",
        default_value = "parley"
    )]
    pub kafka_topic_prefix: String,

    /// Partitions of the topics `migrate` creates.
    #[arg(long, env = "PARLEY_KAFKA_PARTITIONS", value_name = "PARLEY_KAFKA_PARTITIONS", default_value_t = 12,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_partitions: i32,

    /// How long a send waits for Kafka's acknowledgement before it answers `unavailable`, ms.
    #[arg(long, env = "PARLEY_KAFKA_DELIVERY_TIMEOUT_MS", value_name = "PARLEY_KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1000..=300_000))]
    pub kafka_delivery_timeout_ms: u64,

    /// S3 endpoint (MinIO and other S3 servers); AWS when absent.
    #[arg(long, env = "PARLEY_S3_ENDPOINT", value_name = "PARLEY_S3_ENDPOINT", value_parser = parse_url)]
    pub s3_endpoint: Option<String>,

    #[arg(
        long,
        env = "PARLEY_S3_REGION",
        value_name = "PARLEY_S3_REGION",
        default_value = "us-east-1"
    )]
    pub s3_region: String,

    /// The media bucket.
    #[arg(long, env = "PARLEY_S3_BUCKET", value_name = "PARLEY_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    #[arg(
        long,
        env = "PARLEY_S3_ACCESS_KEY_ID",
        value_name = "PARLEY_S3_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub s3_access_key_id: Option<String>,

    #[arg(
        long,
        env = "PARLEY_S3_SECRET_ACCESS_KEY",
        value_name = "PARLEY_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<String>,

    /// Ring members, `,`-separated `name=internal-url` (`n1=http://10.0.0.1:9180,...`).
    #[arg(long, env = "PARLEY_NODES", value_name = "PARLEY_NODES", value_delimiter = ',', value_parser = parse_member)]
    pub nodes: Vec<parley_crd::Member>,

    /// In Kubernetes: the ChatCluster whose status lists the ring members (watched live,
    /// instead of `PARLEY_NODES`).
    #[arg(long, env = "PARLEY_CLUSTER_NAME", value_name = "PARLEY_CLUSTER_NAME")]
    pub cluster_name: Option<String>,

    /// Namespace of that ChatCluster.
    #[arg(
        long,
        env = "PARLEY_NAMESPACE",
        value_name = "PARLEY_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,

    /// Address of the node-to-node API (forwarded sends, channel state).
    #[arg(
        long,
        env = "PARLEY_INTERNAL_LISTEN",
        value_name = "PARLEY_INTERNAL_LISTEN"
    )]
    pub internal_listen: Option<SocketAddr>,

    /// Secret the nodes share for the node-to-node API, at least 32 bytes.
    #[arg(long, env = "PARLEY_CLUSTER_SECRET", value_name = "PARLEY_CLUSTER_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// How long a node's lease in Redis lives without renewal, ms. A dead node's channels
    /// move to the others after this; it must exceed 5/3 of the Kafka delivery timeout.
    #[arg(long, env = "PARLEY_NODE_LEASE_MS", value_name = "PARLEY_NODE_LEASE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1000..=600_000))]
    pub node_lease_ms: u64,

    /// Most messages a persister writes in one batch.
    #[arg(long, env = "PARLEY_PERSISTER_BATCH", value_name = "PARLEY_PERSISTER_BATCH", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub persister_batch: u32,

    /// How long a persister waits for a batch to fill, ms.
    #[arg(
        long,
        env = "PARLEY_PERSISTER_LINGER_MS",
        value_name = "PARLEY_PERSISTER_LINGER_MS",
        default_value_t = 20
    )]
    pub persister_linger_ms: u64,
}

/// The distributed settings, all present.
#[derive(Debug, Clone)]
pub struct Distributed {
    pub directory_url: String,
    pub shards: Vec<crate::backend::postgres::ShardSpec>,
    pub redis_url: String,
    pub kafka: crate::backend::kafka::KafkaSettings,
    pub s3: crate::backend::s3::S3Settings,
    pub nodes: Vec<parley_crd::Member>,
    pub internal_listen: SocketAddr,
    pub cluster_secret: String,
    pub leases: crate::cluster::Leases,
    pub topic_prefix: String,
    pub pool_size: u32,
    pub batching: crate::persister::Batching,
}

/// A configuration that cannot run, naming the key to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// clap's own answer (a malformed value naming its key, or `--help`).
    #[error(transparent)]
    Arguments(clap::Error),
    #[error(transparent)]
    Config(ConfigError),
}

fn required<T: Clone>(v: &Option<T>, key: &'static str) -> Result<T, ConfigError> {
    v.clone().ok_or(ConfigError {
        key: key.to_owned(),
        problem: "required in distributed mode".into(),
    })
}

/// Protocol limits (PROTOCOL.md's defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Longest message text, in Unicode scalar values after trimming.
    #[arg(long, env = "PARLEY_MAX_TEXT_CHARS", value_name = "PARLEY_MAX_TEXT_CHARS", default_value_t = 4000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_text_chars: u32,

    /// Largest WebSocket frame, in bytes.
    #[arg(long, env = "PARLEY_MAX_FRAME_BYTES", value_name = "PARLEY_MAX_FRAME_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_frame_bytes: u32,

    /// Attachments per message.
    #[arg(
        long,
        env = "PARLEY_MAX_ATTACHMENTS",
        value_name = "PARLEY_MAX_ATTACHMENTS",
        default_value_t = 10
    )]
    pub max_attachments: u32,

    /// Largest image/video/audio upload, in bytes.
    #[arg(long, env = "PARLEY_MAX_MEDIA_BYTES", value_name = "PARLEY_MAX_MEDIA_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_media_bytes: u64,

    /// Largest upload of any other type, in bytes.
    #[arg(long, env = "PARLEY_MAX_DOCUMENT_BYTES", value_name = "PARLEY_MAX_DOCUMENT_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_document_bytes: u64,

    /// Frames per second one WebSocket may send (any op).
    #[arg(long, env = "PARLEY_WS_FRAME_RATE", value_name = "PARLEY_WS_FRAME_RATE", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_frame_rate: u32,

    /// Burst of frames one WebSocket may send.
    #[arg(long, env = "PARLEY_WS_FRAME_BURST", value_name = "PARLEY_WS_FRAME_BURST", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_frame_burst: u32,

    /// Sustained sends per user per second.
    #[arg(long, env = "PARLEY_SEND_RATE", value_name = "PARLEY_SEND_RATE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub send_rate: u32,

    /// Burst of sends per user.
    #[arg(long, env = "PARLEY_SEND_BURST", value_name = "PARLEY_SEND_BURST", default_value_t = 40,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub send_burst: u32,
}

impl Config {
    /// The distributed settings; the error names the first missing or invalid key.
    pub fn distributed(&self) -> Result<Distributed, ConfigError> {
        let c = &self.cluster;
        let directory_url = required(&c.directory_url, "PARLEY_DIRECTORY_URL")?;
        if c.shards.is_empty() {
            return Err(ConfigError {
                key: "PARLEY_SHARDS".into(),
                problem: "required in distributed mode".into(),
            });
        }
        let map = parley_crd::ShardMap::build(
            c.shards
                .iter()
                .map(|s| (s.name.clone(), s.slots.clone()))
                .collect(),
            Clone::clone,
        );
        if let Err(e) = map {
            return Err(ConfigError {
                key: "PARLEY_SHARDS".into(),
                problem: e.to_string(),
            });
        }
        let redis_url = required(&c.redis_url, "PARLEY_REDIS_URL")?;
        let bootstrap = required(&c.kafka_bootstrap, "PARLEY_KAFKA_BOOTSTRAP")?;
        let bucket = required(&c.s3_bucket, "PARLEY_S3_BUCKET")?;
        let access_key_id = required(&c.s3_access_key_id, "PARLEY_S3_ACCESS_KEY_ID")?;
        let secret_access_key = required(&c.s3_secret_access_key, "PARLEY_S3_SECRET_ACCESS_KEY")?;
        if self.command == Command::Serve {
            required(&self.jwt_secret, "PARLEY_JWT_SECRET")?;
        }
        let internal_listen = c
            .internal_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let cluster_secret = if self.command == Command::Serve {
            required(&c.cluster_secret, "PARLEY_CLUSTER_SECRET")?
        } else {
            c.cluster_secret.clone().unwrap_or_default()
        };
        if self.command == Command::Serve {
            required(&c.internal_listen, "PARLEY_INTERNAL_LISTEN")?;
            if c.cluster_name.is_none() && !c.nodes.iter().any(|m| m.name == self.node_name) {
                return Err(ConfigError {
                    key: "PARLEY_NODES".into(),
                    problem: format!(
                        "does not list this node, PARLEY_NODE_NAME={}",
                        self.node_name
                    ),
                });
            }
        }
        let leases = crate::cluster::Leases {
            lease: Duration::from_millis(c.node_lease_ms),
            delivery_timeout: Duration::from_millis(c.kafka_delivery_timeout_ms),
        };
        if leases.owner_window() <= leases.renew_every() {
            return Err(ConfigError {
                key: "PARLEY_NODE_LEASE_MS".into(),
                problem: format!(
                    "{} ms leaves no time to own channels with PARLEY_KAFKA_DELIVERY_TIMEOUT_MS={}; use more than {} ms",
                    c.node_lease_ms,
                    c.kafka_delivery_timeout_ms,
                    c.kafka_delivery_timeout_ms * 5 / 3
                ),
            });
        }
        Ok(Distributed {
            leases,
            topic_prefix: c.kafka_topic_prefix.clone(),
            pool_size: c.db_pool_size,
            batching: crate::persister::Batching {
                max_messages: c.persister_batch as usize,
                max_wait: Duration::from_millis(c.persister_linger_ms),
            },
            directory_url,
            shards: c.shards.clone(),
            redis_url,
            kafka: crate::backend::kafka::KafkaSettings {
                bootstrap_servers: bootstrap,
                delivery_timeout: Duration::from_millis(c.kafka_delivery_timeout_ms),
            },
            s3: crate::backend::s3::S3Settings {
                path_style: c.s3_endpoint.is_some(),
                endpoint: c.s3_endpoint.clone(),
                region: c.s3_region.clone(),
                bucket,
                access_key_id,
                secret_access_key,
            },
            nodes: c.nodes.clone(),
            internal_listen,
            cluster_secret,
        })
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The window a stopping node closes its WebSockets over (`PARLEY_DRAIN_MS`).
    pub fn drain_window(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }

    /// Parses flags from `args` and variables from the process environment.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Self as clap::Parser>::try_parse_from(args)
    }

    /// Like [`Config::from_args`], and every `PARLEY_X` may instead be given as the path of
    /// a file holding it, in `PARLEY_X_FILE` (how Kubernetes mounts Secrets).
    pub fn from_args_and_files<I, T>(
        args: I,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StartError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut argv: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let command = <Self as clap::CommandFactory>::command();
        let mut from_files = Vec::new();
        let mut files = BTreeMap::new();
        for arg in command.get_arguments() {
            let (Some(key), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let key = key.to_string_lossy().into_owned();
            let Some(path) = env(&format!("{key}_FILE")) else {
                continue;
            };
            if env(&key).is_some() {
                let problem = format!("set {key} or {key}_FILE, not both");
                return Err(StartError::Config(ConfigError { key, problem }));
            }
            let value = match std::fs::read_to_string(&path) {
                Ok(v) => v,
                Err(e) => {
                    let problem = format!("cannot read {key}_FILE={path}: {e}");
                    return Err(StartError::Config(ConfigError { key, problem }));
                }
            };
            from_files.push(format!("--{long}={}", value.trim_end_matches(['\n', '\r'])));
            files.insert(key, PathBuf::from(path));
        }
        // Right after the program name, so flags given explicitly still win.
        let at = argv.len().min(1);
        argv.splice(at..at, from_files.into_iter().map(Into::into));
        let mut config = Self::from_args(argv).map_err(StartError::Arguments)?;
        config.files = files;
        Ok(config)
    }

    /// The defaults, with the data directory at `data_dir` (tests).
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut c = Self::from_args(["chat-node"]).expect("defaults parse");
        c.data_dir = data_dir;
        c.listen = "127.0.0.1:0".parse().expect("valid address");
        // Tests that stop a node need not wait out a drain window; drain tests set one.
        c.drain_ms = 0;
        c
    }
}

fn parse_url(s: &str) -> Result<String, String> {
    if (s.starts_with("http://") || s.starts_with("https://")) && s.len() > 8 {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err("expected an http:// or https:// URL".into())
    }
}

/// Parses a `PARLEY_SHARDS` value (`name:slots:url;...`).
pub fn parse_shards(value: &str) -> Result<Vec<crate::backend::postgres::ShardSpec>, String> {
    value
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(parse_shard)
        .collect()
}

fn parse_shard(s: &str) -> Result<crate::backend::postgres::ShardSpec, String> {
    let mut parts = s.trim().splitn(3, ':');
    let (Some(name), Some(ranges), Some(url)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected name:slot-ranges:postgres-url".into());
    };
    if name.is_empty() || !url.starts_with("postgres") {
        return Err("expected name:slot-ranges:postgres-url".into());
    }
    let slots = ranges
        .split('+')
        .map(|r| {
            r.parse::<parley_crd::SlotRange>()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::backend::postgres::ShardSpec {
        name: name.to_owned(),
        slots,
        url: url.to_owned(),
    })
}

fn parse_member(s: &str) -> Result<parley_crd::Member, String> {
    let (name, endpoint) = s
        .trim()
        .split_once('=')
        .ok_or("expected name=http://host:port")?;
    let endpoint = parse_url(endpoint)?;
    if name.is_empty() {
        return Err("expected name=http://host:port".into());
    }
    Ok(parley_crd::Member {
        name: name.to_owned(),
        endpoint,
    })
}

fn parse_secret(s: &str) -> Result<String, String> {
    if s.len() >= 32 {
        Ok(s.to_owned())
    } else {
        Err("the secret must be at least 32 bytes".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_protocol() {
        let c = Config::from_args(["chat-node"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./parley-data"));
        assert_eq!(c.moderation_policy, Policy::Mask);
        assert_eq!(c.heartbeat_interval_ms, 15_000);
        assert_eq!(c.limits.max_text_chars, 4000);
        assert_eq!(c.limits.max_frame_bytes, 64 * 1024);
        assert_eq!((c.limits.send_rate, c.limits.send_burst), (20, 40));
    }

    #[test]
    fn malformed_values_name_the_key() {
        for (flag, value, key) in [
            ("--listen", "not-an-address", "PARLEY_LISTEN"),
            ("--moderation-policy", "shout", "PARLEY_MODERATION_POLICY"),
            (
                "--heartbeat-interval-ms",
                "12abc",
                "PARLEY_HEARTBEAT_INTERVAL_MS",
            ),
            (
                "--heartbeat-interval-ms",
                "10",
                "PARLEY_HEARTBEAT_INTERVAL_MS",
            ),
            ("--jwt-secret", "short", "PARLEY_JWT_SECRET"),
            ("--worker-id", "1024", "PARLEY_WORKER_ID"),
            ("--public-url", "ftp://x", "PARLEY_PUBLIC_URL"),
        ] {
            let err = Config::from_args(["chat-node", flag, value])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{flag}={value}: {err}");
        }
    }

    #[test]
    fn distributed_mode_names_the_first_missing_key() {
        let base = ["chat-node", "--mode", "distributed"];
        let c = Config::from_args(base).unwrap();
        assert_eq!(c.distributed().unwrap_err().key, "PARLEY_DIRECTORY_URL");
        let c = Config::from_args(base.iter().copied().chain([
            "--directory-url",
            "postgres://d",
            "--shards",
            "a:0-2047:postgres://a",
        ]))
        .unwrap();
        let err = c.distributed().unwrap_err();
        assert_eq!(err.key, "PARLEY_SHARDS");
        assert!(err.problem.contains("2048-4095"), "{err}");
        let full = [
            "--directory-url",
            "postgres://d",
            "--shards",
            "a:0-2047:postgres://a;b:2048-4095:postgres://b?x=1",
            "--redis-url",
            "redis://r",
            "--kafka-bootstrap",
            "k:9092",
            "--s3-bucket",
            "m",
            "--s3-access-key-id",
            "k",
            "--s3-secret-access-key",
            "s",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--cluster-secret",
            "0123456789abcdef0123456789abcdef",
            "--internal-listen",
            "127.0.0.1:9180",
            "--node-name",
            "n1",
            "--nodes",
            "n1=http://127.0.0.1:9180,n2=http://127.0.0.1:9181",
        ];
        let c = Config::from_args(base.iter().copied().chain(full)).unwrap();
        let d = c.distributed().unwrap();
        assert_eq!(d.shards[1].url, "postgres://b?x=1");
        assert_eq!(d.nodes.len(), 2);
        let mut other = full.to_vec();
        let at = other.iter().position(|a| *a == "n1").unwrap();
        other[at] = "n9";
        let c = Config::from_args(base.iter().copied().chain(other)).unwrap();
        assert_eq!(c.distributed().unwrap_err().key, "PARLEY_NODES");
        let err =
            Config::from_args(["chat-node", "--shards", "a:0-99999:postgres://x"]).unwrap_err();
        assert!(err.to_string().contains("PARLEY_SHARDS"), "{err}");
        let c = Config::from_args(["chat-node", "migrate"]).unwrap();
        assert_eq!(c.command, Command::Migrate);
    }

    #[test]
    fn values_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("parley-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("jwt");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
        let path = secret.display().to_string();
        let env = |k: &str| (k == "PARLEY_JWT_SECRET_FILE").then(|| path.clone());
        let c = Config::from_args_and_files(["chat-node"], env).unwrap();
        assert_eq!(
            c.jwt_secret.as_deref(),
            Some("0123456789abcdef0123456789abcdef"),
            "trailing newline dropped"
        );

        let both = |k: &str| match k {
            "PARLEY_JWT_SECRET_FILE" => Some(path.clone()),
            "PARLEY_JWT_SECRET" => Some("x".repeat(40)),
            _ => None,
        };
        let Err(StartError::Config(err)) = Config::from_args_and_files(["chat-node"], both) else {
            panic!("both a value and a file were accepted")
        };
        assert_eq!(err.key, "PARLEY_JWT_SECRET");
        let missing =
            |k: &str| (k == "PARLEY_DIRECTORY_URL_FILE").then(|| "/nonexistent/url".to_owned());
        let Err(StartError::Config(err)) = Config::from_args_and_files(["chat-node"], missing)
        else {
            panic!("a missing file was accepted")
        };
        assert_eq!(err.key, "PARLEY_DIRECTORY_URL");
        assert!(err.problem.contains("/nonexistent/url"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn shard_maps_parse_from_one_value() {
        let specs = parse_shards(
            "a:0-1023+2048-3071:postgres://a/db;b:1024-2047+3072-4095:postgres://b/db?x=1;",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].slots.len(), 2);
        assert_eq!(specs[1].url, "postgres://b/db?x=1");
        assert!(parse_shards("a:0-99999:postgres://a").is_err());
    }

    #[test]
    fn origins_are_a_comma_separated_list() {
        let c = Config::from_args([
            "chat-node",
            "--allowed-origins",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
    }
}
