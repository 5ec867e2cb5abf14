//! Readiness checks of a node's backends (`/readyz`).

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::BackendError;

/// One backend's check.
#[async_trait]
pub trait Check: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    /// Whether the node is useless without it (an unreachable message shard only makes its
    /// channels unavailable: the node stays ready and says so).
    fn critical(&self) -> bool;
    async fn check(&self) -> Result<(), BackendError>;
}

/// A check from a closure.
pub struct FnCheck<F> {
    name: String,
    critical: bool,
    f: F,
}

impl<F> std::fmt::Debug for FnCheck<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnCheck").field("name", &self.name).finish()
    }
}

#[async_trait]
impl<F, Fut> Check for FnCheck<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<(), BackendError>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> Result<(), BackendError> {
        (self.f)().await
    }
}

pub fn check<F, Fut>(name: impl Into<String>, critical: bool, f: F) -> Arc<dyn Check>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BackendError>> + Send + 'static,
{
    Arc::new(FnCheck {
        name: name.into(),
        critical,
        f,
    })
}

/// The outcome of every check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub ready: bool,
    pub status: &'static str,
    pub backends: std::collections::BTreeMap<String, String>,
    /// The ring this node sees (distributed mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RingReport {
    pub epoch: u64,
    pub members: Vec<String>,
}

pub async fn run(checks: &[Arc<dyn Check>]) -> Report {
    let results = futures_util::future::join_all(checks.iter().map(|c| async move {
        let r = tokio::time::timeout(std::time::Duration::from_secs(3), c.check()).await;
        (
            c.clone(),
            r.unwrap_or_else(|_| Err(BackendError::unavailable("check", "timed out after 3 s"))),
        )
    }))
    .await;
    let mut backends = std::collections::BTreeMap::new();
    let mut ready = true;
    let mut degraded = false;
    for (c, r) in results {
        match r {
            Ok(()) => {
                backends.insert(c.name().to_owned(), "ok".to_owned());
            }
            Err(e) => {
                if c.critical() {
                    ready = false;
                } else {
                    degraded = true;
                }
                backends.insert(c.name().to_owned(), format!("unavailable: {e}"));
            }
        }
    }
    let status = match (ready, degraded) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    Report {
        ready,
        status,
        backends,
        ring: None,
    }
}
