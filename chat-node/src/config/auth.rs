//! `/v1/auth/*` limits: concurrent password hashes and request rates
//! ([`crate::chat::auth_limits`] enforces them).

use std::time::Duration;

use parley_crd::env;

use super::parse::millis;

/// Limits on `/v1/auth/*`: concurrent password hashes and request rates.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthLimits {
    /// Password hashes (argon2id, 19 MiB each) computed at once. Default: the number of CPUs
    /// the node may use.
    #[arg(long, env = env::AUTH_HASH_CONCURRENCY, value_name = env::AUTH_HASH_CONCURRENCY,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub auth_hash_concurrency: Option<u32>,

    /// Requests that may wait for a hash slot; more are answered `unavailable` at once.
    #[arg(long, env = env::AUTH_HASH_QUEUE, value_name = env::AUTH_HASH_QUEUE, default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub auth_hash_queue: u32,

    /// How long a request waits for a hash slot before it is answered `unavailable`, given in
    /// milliseconds.
    #[arg(long = "auth-hash-wait-ms", env = env::AUTH_HASH_WAIT_MS, value_name = env::AUTH_HASH_WAIT_MS,
          default_value = "2000", value_parser = millis(0..=60_000))]
    pub auth_hash_wait: Duration,

    /// Sustained `/v1/auth/*` requests per client address, per minute.
    #[arg(long, env = env::AUTH_ADDRESS_PER_MIN, value_name = env::AUTH_ADDRESS_PER_MIN, default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_address_per_min: u32,

    /// Burst of `/v1/auth/*` requests per client address.
    #[arg(long, env = env::AUTH_ADDRESS_BURST, value_name = env::AUTH_ADDRESS_BURST, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_address_burst: u32,

    /// Sustained logins per username, per minute (whoever sends them).
    #[arg(long, env = env::AUTH_USERNAME_PER_MIN, value_name = env::AUTH_USERNAME_PER_MIN, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_username_per_min: u32,

    /// Burst of logins per username.
    #[arg(long, env = env::AUTH_USERNAME_BURST, value_name = env::AUTH_USERNAME_BURST, default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub auth_username_burst: u32,
}
