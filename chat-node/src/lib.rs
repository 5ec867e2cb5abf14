//! Parley chat-node: the WebSocket + REST server.
//!
//! ```text
//! main.rs ── Config::parse ── AppState::new ── run(listener, state, shutdown)
//!                                                  └── app(state): axum Router
//! ```
#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
mod http;
pub mod moderation;
pub mod snowflake;

use std::future::Future;
use std::sync::Arc;

pub use http::app;

/// Everything a request handler needs, passed explicitly (no globals).
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: config::Config,
}

impl AppState {
    pub fn new(config: config::Config) -> Self {
        Self {
            inner: Arc::new(Inner { config }),
        }
    }

    /// The configuration the node was started with.
    pub fn config(&self) -> &config::Config {
        &self.inner.config
    }
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

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
