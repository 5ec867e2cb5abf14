//! The operator's one error type.

/// What can go wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed (a reconcile stops there and is retried).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks a field the API server always sets (a name, a namespace).
    #[error("the object has no {0}")]
    Missing(&'static str),
    /// An object did not serialize to JSON.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    /// The operating system gave no random bytes for a generated Secret.
    #[error("reading random bytes from the operating system: {0}")]
    Random(rand::rand_core::OsError),
}

impl Error {
    /// Label of the `parley_operator_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Missing(_) => "missing",
            Error::Json(_) => "json",
            Error::Random(_) => "random",
        }
    }
}

/// A reconcile's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
