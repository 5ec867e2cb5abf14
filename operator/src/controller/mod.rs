//! The controllers: one per kind, sharing a [`Context`].

pub mod cluster;
pub mod shard;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::metrics::Metrics;

/// What every reconcile gets.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    /// This replica's name, as the Events it records say.
    pub instance: String,
    pub metrics: Arc<Metrics>,
    /// Held from reading every cluster's worker-ID range to recording a new one, so two
    /// clusters reconciled at once cannot both take the same free range.
    pub worker_ids: Arc<tokio::sync::Mutex<()>>,
    /// Failures in a row per object, for the error policy's back-off.
    pub backoff: Arc<Backoff>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: &str) -> Self {
        Self {
            client,
            instance: instance.into(),
            metrics,
            worker_ids: Arc::default(),
            backoff: Arc::default(),
        }
    }
}

/// An Event about `regarding`, as `kubectl describe` lists them. Each is a new Event:
/// kube-runtime's Recorder folds every Event of the same reason into the first one and keeps
/// its note, so a changed problem would have shown the old message.
pub async fn publish_event(
    ctx: &Context,
    regarding: ObjectReference,
    warning: bool,
    reason: &str,
    note: &str,
) -> Result<(), kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let namespace = regarding.namespace.clone().unwrap_or_default();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_deref().unwrap_or_default(),
                now.as_nanosecond()
            )),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        reason: Some(reason.into()),
        note: Some(note.into()),
        action: Some("Validate".into()),
        regarding: Some(regarding),
        reporting_controller: Some(crate::resources::MANAGER.into()),
        reporting_instance: Some(ctx.instance.clone()),
        ..Default::default()
    };
    Api::<Event>::namespaced(ctx.client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}

/// Exponential back-off of failing reconciles, per object: 5 s after the first failure,
/// doubling up to 5 minutes; a success starts it afresh.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(5);
    pub const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key`; how long to wait before trying again.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock();
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// Records a success of `key`.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock();
        failures.remove(key);
    }
}

/// The wait after `failures` failures in a row (at least one).
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    Backoff::FIRST
        .saturating_mul(1 << doublings)
        .min(Backoff::MAX)
}

/// The back-off key of an object: kind, namespace and name.
pub fn key<K: kube::Resource<DynamicType = ()>>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Now, as the RFC 3339 string conditions carry.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_a_success_resets_it() {
        let b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed("a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.failed("b").as_secs(), 5, "per object");
        b.succeeded("a");
        assert_eq!(b.failed("a").as_secs(), 5);
        for _ in 0..100 {
            b.failed("c");
        }
        assert_eq!(b.failed("c"), Backoff::MAX, "no overflow");
    }
}
