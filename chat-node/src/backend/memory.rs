//! In-process pub/sub: a [`MemoryBus`] shared by any number of endpoints (one per node),
//! each with its own subscriptions, as nodes share a Redis server.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BackendError, Delivery, PubSub, Sink, Topic};

/// The shared bus.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    endpoints: Arc<Mutex<Vec<Weak<Endpoint>>>>,
}

struct Endpoint {
    subscriptions: Mutex<HashSet<Topic>>,
    sink: Sink,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

/// One node's connection to the bus.
#[derive(Debug, Clone)]
pub struct MemoryPubSub {
    bus: MemoryBus,
    endpoint: Arc<Endpoint>,
}

impl MemoryBus {
    /// A bus with no endpoint yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new endpoint whose deliveries go to `sink`.
    pub fn endpoint(&self, sink: Sink) -> MemoryPubSub {
        let endpoint = Arc::new(Endpoint {
            subscriptions: Mutex::new(HashSet::new()),
            sink,
        });
        let mut endpoints = self.endpoints.lock();
        endpoints.retain(|e| e.strong_count() > 0);
        endpoints.push(Arc::downgrade(&endpoint));
        MemoryPubSub {
            bus: self.clone(),
            endpoint,
        }
    }
}

#[async_trait]
impl PubSub for MemoryPubSub {
    async fn publish(&self, topic: Topic, payload: Bytes) -> Result<(), BackendError> {
        let targets: Vec<Arc<Endpoint>> = {
            let endpoints = self.bus.endpoints.lock();
            endpoints.iter().filter_map(Weak::upgrade).collect()
        };
        for endpoint in targets {
            let subscribed = endpoint.subscriptions.lock().contains(&topic);
            if subscribed {
                (endpoint.sink)(Delivery {
                    topic,
                    payload: payload.clone(),
                });
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: Topic) -> Result<(), BackendError> {
        self.endpoint.subscriptions.lock().insert(topic);
        Ok(())
    }

    async fn unsubscribe(&self, topic: Topic) -> Result<(), BackendError> {
        self.endpoint.subscriptions.lock().remove(&topic);
        Ok(())
    }
}
