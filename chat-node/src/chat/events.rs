//! [`Events`]: how the chat service tells clients something happened. An event is serialized
//! once as a server frame, prefixed with its routing [`Header`], and published on a pub/sub
//! topic; every node subscribed to it hands the same bytes to its connections
//! ([`crate::hub`]).
//!
//! ```text
//!   Events::publish(topic, header, t, d) ─► PubSub ─► each node's Hub::dispatch ─► sockets
//!   Events::cluster(ClusterEvent)        ─► PubSub `cluster` ─► membership caches, ring
//! ```

use std::sync::Arc;

use bytes::Bytes;

use parley_protocol::ws::ServerFrame;
use serde::Serialize;

use crate::backend::{PubSub, Topic};
use crate::error::ApiError;
use crate::hub::{self, Header};
use crate::internal::ClusterEvent;

/// Publishes events on the node's pub/sub.
#[derive(Debug, Clone)]
pub struct Events {
    pubsub: Arc<dyn PubSub>,
}

impl Events {
    /// Events published on `pubsub`.
    pub fn new(pubsub: Arc<dyn PubSub>) -> Self {
        Self { pubsub }
    }

    /// Serializes the server event `t` with data `d` once and publishes it on `topic`.
    /// Errors: `internal` when `d` does not serialize, the pub/sub's error when it fails.
    pub async fn publish<T: Serialize>(
        &self,
        topic: Topic,
        header: &Header,
        t: &str,
        d: &T,
    ) -> Result<(), ApiError> {
        let payload = Self::encode(header, t, d)?;
        self.pubsub
            .publish(topic, payload)
            .await
            .map_err(ApiError::from)
    }

    /// The bytes [`Events::publish`] would publish for the server event `t` with data `d`:
    /// the frame prefixed with `header` ([`hub::encode`]). Errors: `internal` when `d` does
    /// not serialize.
    pub fn encode<T: Serialize>(header: &Header, t: &str, d: &T) -> Result<Bytes, ApiError> {
        let frame = serde_json::to_vec(&ServerFrame { t, r#ref: None, d }).map_err(|e| {
            tracing::error!("serializing {t}: {e}");
            ApiError::new(parley_protocol::ErrorCode::Internal, "internal error")
        })?;
        Ok(hub::encode(header, &frame))
    }

    /// The pub/sub events are published on.
    pub fn pubsub(&self) -> &dyn PubSub {
        self.pubsub.as_ref()
    }

    /// Publishes an event that is a courtesy (typing, read, presence): failures are logged.
    pub async fn publish_best_effort<T: Serialize>(
        &self,
        topic: Topic,
        header: &Header,
        t: &str,
        d: &T,
    ) {
        if let Err(e) = self.publish(topic, header, t, d).await {
            tracing::warn!(%topic, event = t, "publish failed: {e}");
        }
    }

    /// Tells every node (this one included) of `event` on the `cluster` topic. Errors: the
    /// pub/sub's.
    pub async fn cluster(&self, event: &ClusterEvent) -> Result<(), crate::backend::BackendError> {
        let payload = serde_json::to_vec(event).unwrap_or_default();
        self.pubsub.publish(Topic::Cluster, payload.into()).await
    }
}
