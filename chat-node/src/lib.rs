//! Parley chat-node: the WebSocket + REST server.
//!
//! The modules form layers; each imports only modules below it, so there is no cycle
//! (`use crate::` in `chat/` names no `http`, `ws`, `cluster` or `node`, and so on down):
//!
//! ```text
//!   main.rs
//!    node      build (embedded | distributed), serve, drain, migrate, persist; the wiring:
//!              node::ClusterRing = cluster::Cluster + internal::PeerClient behind chat's traits
//!    ws        WebSocket sessions: hello, ops, the live loop
//!    http      REST, the internal API (http::internal), health, blobs, the server; AppState
//!    chat      the protocol's operations, one type per concern (Chat composes them); it
//!              defines the traits it needs: owners::ChannelOwners, owners::Membership
//!    config    typed settings (with cluster::Leases)
//!    cluster   leases in Redis and the ring this node sees
//!    hub       this node's sockets: Hub::connect wires pub/sub deliveries to them
//!    internal  the node-to-node contract: paths, bodies, ClusterEvent, the client
//!    backend   ports (the store traits in Stores, Log, PubSub, Blobs, PresenceStore) and
//!              their implementations
//!    leaves    heartbeat, drain, health, auth, error, metrics, moderation, persister, ...
//! ```
//!
//! A message's way from a socket to its shard:
//!
//! ```text
//!   ws::session ─► ws::ops ─► chat::Messages::send (rate, text, member, moderation, files)
//!     ─► ChannelOwners::owner_of(channel)
//!          ├─ Me ───► chat::Sequencing::sequence ─► Handover::hold (owner term) ─► Log::append
//!          │            ─► Fencing::confirm ─► Events::publish ─► PubSub ─► each node's
//!          │            Hub::dispatch ─► sockets
//!          └─ Other ─► internal::PeerClient ─POST─► owner's http::internal ─► its Sequencing
//!   persister: Log (SQLite table | Kafka topic) ─► fence filter ─► MessageStore (SQLite | the
//!              PostgreSQL shard)
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
