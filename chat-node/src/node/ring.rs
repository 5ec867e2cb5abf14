//! [`ClusterRing`]: channel ownership in a ring of nodes, for the chat service. The owners
//! come from [`Cluster`]'s view of the leases; sends and state reads for channels of other
//! nodes go over the internal HTTP API ([`PeerClient`]). It lives with the wiring: the chat
//! service knows only its traits, and the cluster module knows nothing of the chat.

use std::sync::Arc;

use async_trait::async_trait;
use parley_crd::Member;
use parley_protocol::{Id, Message};

use crate::chat::owners::{ChannelOwners, Membership, NotOwner, Owner, OwnerWork};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::health::RingReport;
use crate::internal::{
    Hop, PeerClient, Prepared, SEQUENCE_PATH, STATE_PATH, StateRequest, StateResponse,
};

/// A node of a ring: [`Cluster`] (leases, the ring) and the client of the other nodes.
#[derive(Debug, Clone)]
pub struct ClusterRing {
    cluster: Arc<Cluster>,
    peers: PeerClient,
}

impl ClusterRing {
    pub fn new(cluster: Arc<Cluster>, peers: PeerClient) -> Self {
        Self { cluster, peers }
    }
}

#[async_trait]
impl ChannelOwners for ClusterRing {
    fn owner_of(&self, channel: Id) -> Owner {
        match self.cluster.owner(channel) {
            Some(m) if !self.cluster.is_me(&m) => Owner::Other(m),
            _ => Owner::Me,
        }
    }

    async fn refresh(&self) {
        self.cluster.refresh().await;
    }

    fn claim(&self, channels: &[Id]) -> Result<u64, NotOwner> {
        if !self.cluster.may_own() {
            return Err(NotOwner::LeaseStale);
        }
        let epoch = self.cluster.epoch();
        for c in channels {
            match self.cluster.owner(*c) {
                Some(owner) if self.cluster.is_me(&owner) => {}
                Some(owner) => {
                    return Err(NotOwner::Moved {
                        channel: *c,
                        owner: owner.name,
                    });
                }
                None => return Err(NotOwner::EmptyRing),
            }
        }
        Ok(epoch)
    }

    async fn owner_work(&self) -> OwnerWork {
        OwnerWork::guarded(self.cluster.owner_work().await)
    }

    async fn forward(
        &self,
        owner: &Member,
        send: &Prepared,
        hop: Hop,
    ) -> Result<Message, ApiError> {
        self.peers.call(owner, SEQUENCE_PATH, send, hop).await
    }

    async fn state_on(
        &self,
        owner: &Member,
        req: &StateRequest,
    ) -> Result<StateResponse, ApiError> {
        self.peers.call(owner, STATE_PATH, req, Hop::First).await
    }
}

#[async_trait]
impl Membership for ClusterRing {
    async fn leave(&self) {
        self.cluster.leave().await;
        tracing::info!(
            epoch = self.cluster.epoch(),
            "this node's channels were handed over"
        );
    }

    async fn release(&self) {
        self.cluster.release().await;
    }

    fn report(&self) -> Option<RingReport> {
        let view = self.cluster.view();
        Some(RingReport {
            epoch: view.epoch,
            members: view.ring.members().iter().map(|m| m.name.clone()).collect(),
        })
    }
}
