//! Typed configuration: flags and `PARLEY_*` environment variables, parsed once at start-up.

use std::net::SocketAddr;

/// chat-node configuration. Malformed values stop start-up with a message naming the key.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "chat-node", version, about = "Parley chat node")]
pub struct Config {
    /// Address the HTTP/WebSocket server listens on.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn default_listen_is_loopback_8080() {
        let config = Config::try_parse_from(["chat-node"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn malformed_listen_names_the_key() {
        let err = Config::try_parse_from(["chat-node", "--listen", "not-an-address"]).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
    }
}
