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
pub mod http;
pub mod hub;
pub mod internal;
pub mod k8s;
pub mod metrics;
pub mod moderation;
pub mod node;
pub mod persister;
pub mod presence;
pub mod ratelimit;
pub mod snowflake;
pub mod ws;

pub use http::app;

/// What every handler gets: the node's chat service (no globals).
pub type AppState = std::sync::Arc<chat::Chat>;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
