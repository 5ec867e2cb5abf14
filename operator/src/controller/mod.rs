//! The controllers: one per kind, sharing a [`Context`].

pub mod cluster;
pub mod shard;

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::metrics::Metrics;

/// What every reconcile gets.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Held from reading every cluster's worker-ID range to recording a new one, so two
    /// clusters reconciled at once cannot both take the same free range.
    pub worker_ids: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: &str) -> Self {
        let reporter = Reporter {
            controller: crate::resources::MANAGER.into(),
            instance: Some(instance.into()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            worker_ids: Arc::default(),
        }
    }
}

/// Now, as the RFC 3339 string conditions carry.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}
