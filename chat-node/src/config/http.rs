//! Timeouts, connection caps and trusted proxies of the HTTP listeners
//! ([`crate::http::server`] applies them).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use parley_crd::env;

use super::parse::millis;

/// Timeouts and connection caps of every listener a node serves (the public one, the
/// node-to-node one and the persister's).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// How long a client has to send a complete request head (request line and headers),
    /// in milliseconds: from the accept on a new connection, from the first byte of the
    /// next request on a kept-alive one. The connection is closed when it passes.
    #[arg(long = "http-header-timeout-ms", env = env::HTTP_HEADER_TIMEOUT_MS, value_name = env::HTTP_HEADER_TIMEOUT_MS,
          default_value = "10000", value_parser = millis(100..=600_000))]
    pub http_header_timeout: Duration,

    /// How long a request body may take, in milliseconds, extended by one second for every
    /// `PARLEY_HTTP_BODY_MIN_RATE` bytes received (a large upload at a fair rate finishes;
    /// a body that trickles does not). Past it the body read fails and the connection is
    /// closed after the answer.
    #[arg(long = "http-body-timeout-ms", env = env::HTTP_BODY_TIMEOUT_MS, value_name = env::HTTP_BODY_TIMEOUT_MS,
          default_value = "30000", value_parser = millis(100..=3_600_000))]
    pub http_body_timeout: Duration,

    /// The body rate, in bytes per second, that earns a request body one more second
    /// beyond `PARLEY_HTTP_BODY_TIMEOUT_MS`.
    #[arg(long, env = env::HTTP_BODY_MIN_RATE, value_name = env::HTTP_BODY_MIN_RATE,
          default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_min_rate: u64,

    /// How long a connection may sit with nothing moving, in milliseconds: a kept-alive
    /// connection waiting for its next request, or a response (or WebSocket frame) the
    /// client does not read. The connection is closed when it passes. The default is above
    /// the idle timeouts reverse proxies keep their upstream connections for (ingress-nginx
    /// 60 s, Traefik 90 s), so that the proxy, not the node, ends an idle one: a node that
    /// closes a connection the proxy is reusing at that moment costs a client a 502.
    #[arg(long = "http-idle-timeout-ms", env = env::HTTP_IDLE_TIMEOUT_MS, value_name = env::HTTP_IDLE_TIMEOUT_MS,
          default_value = "120000", value_parser = millis(100..=3_600_000))]
    pub http_idle_timeout: Duration,

    /// Open connections (WebSockets included) one listener holds at most; more are closed
    /// as soon as they are accepted. Keep it under the process's open-file limit
    /// (`ulimit -n`): the node warns at start when it is not.
    #[arg(long, env = env::HTTP_MAX_CONNECTIONS, value_name = env::HTTP_MAX_CONNECTIONS,
          default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,

    /// Open connections (WebSockets included) from one TCP peer address at most (IPv6: one
    /// /64); more are closed as soon as they are accepted. Keyed on the TCP peer, before
    /// any header is read; peers in `PARLEY_TRUSTED_PROXIES` are exempt (they carry many
    /// clients).
    #[arg(long, env = env::HTTP_MAX_CONNECTIONS_PER_ADDRESS, value_name = env::HTTP_MAX_CONNECTIONS_PER_ADDRESS,
          default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections_per_address: u32,

    /// Comma-separated addresses or CIDR ranges of reverse proxies whose `X-Forwarded-For`
    /// is believed (e.g. `10.0.0.0/8,127.0.0.1`). Default: none, the TCP peer is the client.
    #[arg(long, env = env::TRUSTED_PROXIES, value_name = env::TRUSTED_PROXIES,
          value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
}

/// `10.0.0.0/8`, or a bare address (one host).
pub(crate) fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))
}
