//! The node's life as its handlers see it ([`Lifecycle`]): whether it is shutting down or
//! draining, the WebSocket sessions it waits for at the end, the readiness of its backends
//! and its part in the ring.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::owners::Membership;
use crate::drain::Drain;
use crate::error::ApiError;
use crate::health::{Check, Report};

/// Shutdown, drain and readiness.
#[derive(Debug)]
pub struct Lifecycle {
    shutdown: CancellationToken,
    sessions: TaskTracker,
    drain: Arc<Drain>,
    checks: Vec<Arc<dyn Check>>,
    membership: Arc<dyn Membership>,
}

impl Lifecycle {
    /// A node that is up, with readiness `checks` of its backends.
    pub fn new(checks: Vec<Arc<dyn Check>>, membership: Arc<dyn Membership>) -> Self {
        Self {
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            drain: Arc::default(),
            checks,
            membership,
        }
    }

    /// Cancelled when the node shuts down (a second signal cancels it at once).
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The WebSocket sessions, awaited on shutdown.
    pub fn sessions(&self) -> &TaskTracker {
        &self.sessions
    }

    /// Whether the node is draining, and the sessions it will close ([`crate::drain`]).
    pub fn drain(&self) -> &Arc<Drain> {
        &self.drain
    }

    /// The node's part in the ring (drain, shutdown, `/readyz`).
    pub fn membership(&self) -> &Arc<dyn Membership> {
        &self.membership
    }

    /// `/readyz`: the backends' report (ready or not) with the ring as this node sees it.
    /// Errors: `unavailable` while the node shuts down or drains (it takes no new clients).
    pub async fn ready(&self) -> Result<Report, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::unavailable("the node is shutting down"));
        }
        if self.drain.is_draining() {
            return Err(ApiError::unavailable(
                "the node is draining: it takes no new clients",
            ));
        }
        let mut report = crate::health::run(&self.checks).await;
        report.ring = self.membership.report();
        Ok(report)
    }
}
