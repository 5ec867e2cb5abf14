//! The controllers: one per kind, sharing a [`Context`] (controller-rs's shape: a
//! `reconcile` and an `error_policy` per kind, one error type with a metric label).
//!
//! ```text
//!   kube-runtime Controller ──► cluster::reconcile(ChatCluster, Context) ──► Action
//!     watches: ChatClusters; owned StatefulSets, Deployments, Jobs;       │ Err
//!              ChatShards and chat-node Pods (mapped to their cluster)    ▼
//!   kube-runtime Controller ──► shard::reconcile(ChatShard, Context)   error_policy:
//!     watches: ChatShards; migration Jobs (mapped to the shards they     metric + Backoff
//!              name)
//! ```
//!
//! Both reconcile through a [`target::Target`] (the object, its namespace, the names of what
//! it owns, the client). `fixtures` (tests only) is a scripted API server behind a real
//! `kube::Client`, so a reconcile runs in milliseconds against the requests it should make.

mod backoff;
pub mod cluster;
pub mod shard;
pub mod target;

#[cfg(test)]
pub mod fixtures;

use std::sync::Arc;

pub use backoff::Backoff;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::metrics::Metrics;
use crate::status::ConditionEvent;

/// What every reconcile gets.
#[derive(Clone)]
pub struct Context {
    /// The API server's client.
    pub client: Client,
    /// This replica's name, as the Events it records say.
    pub instance: String,
    /// The counters `/metrics` serves.
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
    /// A context for the replica `instance`, with a fresh back-off and worker-ID lock.
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
    event: &ConditionEvent,
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
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(event.reason.clone()),
        note: Some(event.note.clone()),
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
