//! Per-session and per-user bounds of the WebSocket endpoint ([`crate::ws`] applies them).

use std::time::Duration;

use parley_crd::env;

use super::parse::millis;

/// Per-session and per-user bounds of the WebSocket endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct WsLimits {
    /// How long one write to a WebSocket may take, in milliseconds. A client that stops
    /// reading fills its socket's buffers; its next write then cannot progress, and when
    /// this passes the connection is dropped (no close handshake is possible any more) and
    /// forgotten. The client reconnects with `resume_after`.
    #[arg(long = "ws-write-timeout-ms", env = env::WS_WRITE_TIMEOUT_MS, value_name = env::WS_WRITE_TIMEOUT_MS,
          default_value = "10000", value_parser = millis(100..=600_000))]
    pub ws_write_timeout: Duration,

    /// WebSocket sessions one user may hold open on one node. The next `hello` is answered
    /// with `error` `rate_limited` and close 4008.
    #[arg(long, env = env::WS_MAX_SESSIONS_PER_USER, value_name = env::WS_MAX_SESSIONS_PER_USER,
          default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ws_max_sessions_per_user: u32,

    /// Messages a user's `hello`s with `resume_after` may replay per minute (sustained), on
    /// one node. A `hello` that finds the user's budget spent is answered with `error`
    /// `rate_limited` (saying when to retry) and close 4008.
    #[arg(long, env = env::WS_RESUME_PER_MINUTE, value_name = env::WS_RESUME_PER_MINUTE,
          default_value_t = 3_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_resume_per_minute: u32,

    /// Messages a user's resumes may replay in a burst (the budget when full).
    #[arg(long, env = env::WS_RESUME_BURST, value_name = env::WS_RESUME_BURST,
          default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_resume_burst: u32,

    /// `typing` ops per second one user may send, over all their sessions on one node;
    /// over it the op is answered `rate_limited` and nothing is delivered.
    #[arg(long, env = env::WS_TYPING_RATE, value_name = env::WS_TYPING_RATE,
          default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_typing_rate: u32,

    /// Burst of `typing` ops one user may send.
    #[arg(long, env = env::WS_TYPING_BURST, value_name = env::WS_TYPING_BURST,
          default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_typing_burst: u32,
}
