//! Readiness checks of a node's backends (`/readyz`).

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::BackendError;

/// One backend's check.
#[async_trait]
pub trait Check: Send + Sync + std::fmt::Debug {
    /// The name the report gives it (`postgres directory`, `redis`, ...).
    fn name(&self) -> &str;
    /// Whether the node is useless without it (an unreachable message shard only makes its
    /// channels unavailable: the node stays ready and says so).
    fn critical(&self) -> bool;
    /// One probe; an error is its failure.
    async fn check(&self) -> Result<(), BackendError>;

    /// The checks to run in its place, when the set is only known at run time.
    fn expand(&self) -> Option<Vec<Arc<dyn Check>>> {
        None
    }
}

/// Checks made afresh at every run, from `f` (one per shard of a map that changes live).
pub fn dynamic<F>(f: F) -> Arc<dyn Check>
where
    F: Fn() -> Vec<Arc<dyn Check>> + Send + Sync + 'static,
{
    Arc::new(Dynamic(f))
}

struct Dynamic<F>(F);

impl<F> std::fmt::Debug for Dynamic<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dynamic")
    }
}

#[async_trait]
impl<F> Check for Dynamic<F>
where
    F: Fn() -> Vec<Arc<dyn Check>> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        "dynamic"
    }

    fn critical(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn expand(&self) -> Option<Vec<Arc<dyn Check>>> {
        Some((self.0)())
    }
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

/// A check named `name` that calls `f` (each run waits 3 s for it at most).
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
    /// Every critical check passed.
    pub ready: bool,
    /// `ready`, `degraded` (a non-critical check failed) or `unavailable`.
    pub status: &'static str,
    /// Each check's name and `ok` or `unavailable: <why>`.
    pub backends: std::collections::BTreeMap<String, String>,
    /// The ring this node sees (distributed mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingReport>,
}

/// The ring in a readiness report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RingReport {
    /// The view's epoch (it grows at every membership change).
    pub epoch: u64,
    /// The names of the live members.
    pub members: Vec<String>,
}

/// Runs every check (dynamic ones expanded) at once: ready when every critical one
/// passed.
pub async fn run(checks: &[Arc<dyn Check>]) -> Report {
    let checks: Vec<Arc<dyn Check>> = checks
        .iter()
        .flat_map(|c| c.expand().unwrap_or_else(|| vec![c.clone()]))
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[tokio::test]
    async fn dynamic_checks_follow_what_exists_at_each_run() {
        let names = Arc::new(Mutex::new(vec!["a"]));
        let n = names.clone();
        let checks = vec![
            check("directory", true, || async { Ok(()) }),
            dynamic(move || {
                n.lock()
                    .iter()
                    .map(|name| {
                        check(format!("shard {name}"), false, || async {
                            Err(BackendError::unavailable("shard", "down"))
                        })
                    })
                    .collect()
            }),
        ];
        let r = run(&checks).await;
        let keys: Vec<&str> = r.backends.keys().map(String::as_str).collect();
        assert_eq!(keys, ["directory", "shard a"]);
        assert_eq!((r.ready, r.status), (true, "degraded"));
        *names.lock() = vec!["b", "c"];
        let r = run(&checks).await;
        let keys: Vec<&str> = r.backends.keys().map(String::as_str).collect();
        assert_eq!(keys, ["directory", "shard b", "shard c"]);
    }
}
