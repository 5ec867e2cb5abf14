//! Who sequences each channel, and how a send or a state read reaches them.
//!
//! Every channel has one owner at a time, the node that gives its messages their seqs.
//! [`ChannelOwners`] is all the chat service knows of it: [`SingleNode`] is the embedded node,
//! owner of every channel; `node::ClusterRing` is a node of a ring (leases in Redis, the
//! internal HTTP API to the others). [`Membership`] is the node's part in the ring over its
//! life (drain, shutdown, readiness).
//!
//! ```text
//!   Messages::send ─► owner_of(channel) ─┬─ Me ──────► Sequencing (claim, owner_work, append)
//!                                        └─ Other(m) ─► forward(m, prepared) ─► m's Sequencing
//! ```
//!
//! `claim` (a fresh lease and this node's ring view) is a fast refusal; what keeps a
//! channel's seqs unique when views or leases are wrong (a paused node) is the fencing of
//! owner terms ([`super::fencing`]), which [`Ownership`] carries beside the two traits.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parley_crd::Member;
use parley_protocol::{Id, Message};

use super::fencing::{Fencing, Unfenced};
use crate::error::ApiError;
use crate::health::RingReport;
use crate::internal::{Hop, Prepared, StateRequest, StateResponse};

/// Who sequences a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// This node.
    Me,
    /// Another node of the ring.
    Other(Member),
}

impl Owner {
    /// The owner's name; `None` for this node.
    pub fn name(&self) -> Option<&str> {
        match self {
            Owner::Me => None,
            Owner::Other(m) => Some(&m.name),
        }
    }
}

/// Why this node may not sequence a channel now ([`ChannelOwners::claim`]); each is
/// `unavailable` to the client, who tries again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotOwner {
    /// The node's lease is too old to act on (Redis cannot be reached, or it drains).
    #[error("this node cannot renew its cluster lease; try again shortly")]
    LeaseStale,
    /// Another node owns the channel in the current ring.
    #[error("channel {channel} moved to node {owner}; try again")]
    Moved {
        /// The channel asked for.
        channel: Id,
        /// The name of the node that owns it now.
        owner: String,
    },
    /// No node is in the ring yet: nobody may sequence, or two nodes would both hand out
    /// the same seqs.
    #[error("no chat-node is in the ring yet; try again shortly")]
    EmptyRing,
}

impl From<NotOwner> for ApiError {
    fn from(e: NotOwner) -> Self {
        ApiError::unavailable(e.to_string())
    }
}

/// Held while this node does owner work (a send being sequenced); a node giving its
/// channels up waits until none is held.
#[must_use = "owner work lasts as long as the guard"]
pub struct OwnerWork(#[allow(dead_code, reason = "held, never read")] Option<Box<dyn Send + Sync>>);

impl OwnerWork {
    /// Work nobody waits for (a single node never gives its channels up).
    pub fn unguarded() -> Self {
        Self(None)
    }

    /// Work that lasts as long as `guard` is held.
    pub fn guarded(guard: impl Send + Sync + 'static) -> Self {
        Self(Some(Box::new(guard)))
    }
}

impl fmt::Debug for OwnerWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OwnerWork").field(&self.0.is_some()).finish()
    }
}

/// Channel ownership as the chat service sees it.
#[async_trait]
pub trait ChannelOwners: Send + Sync + fmt::Debug {
    /// The owner of `channel` in this node's current view.
    fn owner_of(&self, channel: Id) -> Owner;

    /// Reads ownership again now (this node and another disagree: a change is under way).
    async fn refresh(&self);

    /// Checks that this node owns every one of `channels` and may act on it now; returns the
    /// ownership epoch (it grows at every change of owners; a single node's is always 0).
    fn claim(&self, channels: &[Id]) -> Result<u64, NotOwner>;

    /// Starts owner work; see [`OwnerWork`].
    async fn owner_work(&self) -> OwnerWork;

    /// Has `owner` sequence `send`. Errors: `owner`'s refusal, or `unavailable`.
    async fn forward(&self, owner: &Member, send: &Prepared, hop: Hop)
    -> Result<Message, ApiError>;

    /// Reads channel state on `owner`. Errors: `owner`'s refusal, or `unavailable`.
    async fn state_on(&self, owner: &Member, req: &StateRequest)
    -> Result<StateResponse, ApiError>;
}

/// The node's part in the ring over its life.
#[async_trait]
pub trait Membership: Send + Sync + fmt::Debug {
    /// Drains: gives the channels up for good and tells the other nodes; returns once they
    /// can take the channels over.
    async fn leave(&self);

    /// Gives the channels up at the end of a shutdown, if [`Membership::leave`] did not.
    async fn release(&self);

    /// The ring as this node sees it, for `/readyz`; `None` outside a ring.
    fn report(&self) -> Option<RingReport>;
}

/// A node's place among the owners: both traits, usually implemented by one object, and
/// the fencing of its terms.
#[derive(Debug, Clone)]
pub struct Ownership {
    /// Who sequences each channel, for sending and reading.
    pub owners: Arc<dyn ChannelOwners>,
    /// The node's part in the ring, for its lifecycle.
    pub membership: Arc<dyn Membership>,
    /// Which owner term of each channel is in force ([`super::fencing`]).
    pub fencing: Arc<dyn Fencing>,
}

impl Ownership {
    /// The embedded node's: [`SingleNode`], [`Unfenced`].
    pub fn single_node() -> Self {
        Self::of(SingleNode, Arc::new(Unfenced))
    }

    /// Both roles played by `ring`, its terms kept by `fencing`.
    pub fn of<R: ChannelOwners + Membership + 'static>(ring: R, fencing: Arc<dyn Fencing>) -> Self {
        let ring = Arc::new(ring);
        Self {
            owners: ring.clone(),
            membership: ring,
            fencing,
        }
    }
}

/// The embedded node: it owns every channel, has no peers and never hands anything over.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleNode;

#[async_trait]
impl ChannelOwners for SingleNode {
    fn owner_of(&self, _channel: Id) -> Owner {
        Owner::Me
    }

    async fn refresh(&self) {}

    fn claim(&self, _channels: &[Id]) -> Result<u64, NotOwner> {
        Ok(0)
    }

    async fn owner_work(&self) -> OwnerWork {
        OwnerWork::unguarded()
    }

    async fn forward(
        &self,
        owner: &Member,
        _send: &Prepared,
        _hop: Hop,
    ) -> Result<Message, ApiError> {
        Err(no_peers(owner))
    }

    async fn state_on(
        &self,
        owner: &Member,
        _req: &StateRequest,
    ) -> Result<StateResponse, ApiError> {
        Err(no_peers(owner))
    }
}

fn no_peers(owner: &Member) -> ApiError {
    ApiError::unavailable(format!(
        "node {} is unreachable: this node is not in a cluster",
        owner.name
    ))
}

#[async_trait]
impl Membership for SingleNode {
    async fn leave(&self) {}

    async fn release(&self) {}

    fn report(&self) -> Option<RingReport> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        Member {
            name: "node-1".into(),
            endpoint: "http://127.0.0.1:1".into(),
        }
    }

    #[tokio::test]
    async fn a_single_node_owns_every_channel_in_epoch_zero() {
        let owners = SingleNode;
        for c in [Id(0), Id(1), Id(u64::MAX)] {
            assert_eq!(owners.owner_of(c), Owner::Me);
        }
        assert_eq!(owners.claim(&[Id(1), Id(2)]), Ok(0));
        owners.refresh().await;
        assert_eq!(owners.claim(&[]), Ok(0), "refreshing changes nothing");
        assert!(owners.report().is_none());
    }

    #[tokio::test]
    async fn a_single_node_has_no_peer_to_forward_to() {
        let send = Prepared {
            author: Id(1),
            channel: Id(2),
            text: "hi".into(),
            moderated: false,
            client_msg_id: None,
            attachments: Vec::new(),
            reply_to: None,
        };
        let err = SingleNode
            .forward(&member(), &send, Hop::First)
            .await
            .unwrap_err();
        assert_eq!(err.code, parley_protocol::ErrorCode::Unavailable);
        let req = StateRequest {
            channels: vec![Id(2)],
            after: None,
        };
        assert!(SingleNode.state_on(&member(), &req).await.is_err());
        // Nothing to wait for: owner work is not guarded.
        assert!(format!("{:?}", SingleNode.owner_work().await).contains("false"));
    }

    #[test]
    fn refusals_read_as_before() {
        assert_eq!(
            ApiError::from(NotOwner::Moved {
                channel: Id(7),
                owner: "node-2".into()
            })
            .message,
            "channel 7 moved to node node-2; try again"
        );
        assert_eq!(
            ApiError::from(NotOwner::EmptyRing).code,
            parley_protocol::ErrorCode::Unavailable
        );
    }
}
