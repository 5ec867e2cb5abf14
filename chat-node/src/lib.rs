//! Parley chat-node: the WebSocket + REST server.
//!
//! ```text
//! main.rs ── Config ── node::embedded(config) ── node::serve(listener, chat, shutdown)
//!                          │                          └── http::app(chat): axum Router
//!                          └── Chat: the protocol's operations over the backend ports
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod error;
pub mod health;
pub mod heartbeat;
pub mod http;
pub mod hub;
pub mod internal;
pub mod k8s;
pub mod metrics;
pub mod moderation;
pub mod node;
pub mod persister;
pub mod ratelimit;
pub mod secret;
pub mod snowflake;
pub mod text;
pub mod ws;

pub use node::app;

/// SIGTERM and SIGINT as one source, registered once: tokio reports only the signals that
/// arrive after a listener exists, so a process that waits for a second signal keeps this
/// one listener rather than making a new one after the first (a quick second signal would
/// be missed in between).
#[cfg(unix)]
#[derive(Debug)]
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl ShutdownSignals {
    /// Registers both listeners. Errors: the OS refused to install a handler.
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        tracing::info!("shutdown signal received");
    }
}

/// Ctrl-C where there are no Unix signals.
#[cfg(not(unix))]
#[derive(Debug)]
pub struct ShutdownSignals;

#[cfg(not(unix))]
impl ShutdownSignals {
    /// Nothing to register ahead of time.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    /// Waits for the next Ctrl-C.
    pub async fn recv(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    }
}
