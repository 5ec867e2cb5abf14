//! Typed configuration: flags and `PARLEY_*` environment variables, parsed once at start-up.
//! A malformed or unknown value stops start-up with a message that names the key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::moderation::Policy;

/// chat-node configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "chat-node", version, about = "Parley chat node")]
pub struct Config {
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

    #[command(flatten)]
    pub limits: Limits,
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
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Parses flags from `args` and variables from the process environment.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Self as clap::Parser>::try_parse_from(args)
    }

    /// The defaults, with the data directory at `data_dir` (tests).
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut c = Self::from_args(["chat-node"]).expect("defaults parse");
        c.data_dir = data_dir;
        c.listen = "127.0.0.1:0".parse().expect("valid address");
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
