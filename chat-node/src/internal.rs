//! The node-to-node contract of a cluster: the internal HTTP API's paths, headers and bodies,
//! the client that calls it, and the events of the `cluster` pub/sub topic. Both sides use
//! this module: the sender through [`PeerClient`] (behind `chat::owners::ChannelOwners`), the
//! receiver in [`crate::http::internal`]. It depends on no other module of the node but the
//! backend's records, so neither side imports the other.
//!
//! ```text
//!   node A: chat ─► ChannelOwners (node::ClusterRing) ─► PeerClient ─── POST ────┐
//!   node B: http::internal (checks SECRET_HEADER) ─► chat (the channel's owner) ◄┘
//! ```
//!
//! - `POST /internal/v1/sequence` ([`SEQUENCE_PATH`]): a send prepared (validated, moderated)
//!   on the node the client is connected to, sequenced by the channel's owner;
//! - `POST /internal/v1/state` ([`STATE_PATH`]): the owner's last seq and recent (maybe not
//!   yet stored) messages of some channels, for read-your-writes history, sync and resume.

use std::time::Duration;

use axum::http::StatusCode;
use parley_crd::Member;
use parley_protocol::rest::ErrorResponse;
use parley_protocol::{ErrorCode, Id};
use serde::{Deserialize, Serialize};

use crate::backend::{AttachmentRecord, StoredMessage};
use crate::error::ApiError;
use crate::secret::Secret;

/// Header carrying the cluster secret (`PARLEY_CLUSTER_SECRET`).
pub const SECRET_HEADER: &str = "x-parley-cluster-secret";
/// Marks a send forwarded a second time (by a node that is no longer the channel's owner):
/// its receiver sequences it or refuses it, never forwards it again.
pub const HOP_HEADER: &str = "x-parley-forwarded";
/// Where a prepared send goes: body [`Prepared`], answer `parley_protocol::Message`.
pub const SEQUENCE_PATH: &str = "/internal/v1/sequence";
/// Where an owner's channel state is read: body [`StateRequest`], answer [`StateResponse`].
pub const STATE_PATH: &str = "/internal/v1/state";

/// A send that passed every check on the receiving node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    /// Who sends it (a member of `channel`).
    pub author: Id,
    /// Where it goes; its owner sequences it.
    pub channel: Id,
    /// Trimmed and, when `moderated`, masked.
    pub text: String,
    /// Whether moderation masked words of `text`.
    pub moderated: bool,
    /// The client's idempotency key (1..=128 bytes).
    pub client_msg_id: Option<String>,
    /// Uploaded attachments of the author, checked against the blob store.
    pub attachments: Vec<AttachmentRecord>,
    /// A message of `channel` this one answers.
    pub reply_to: Option<Id>,
}

/// Body of [`STATE_PATH`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRequest {
    /// Channels the called node owns.
    pub channels: Vec<Id>,
    /// Only recent messages with a larger id (none: all recent messages).
    pub after: Option<Id>,
}

/// One channel's state on its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelState {
    /// The channel.
    pub id: Id,
    /// Its last seq (0: no message yet).
    pub last_seq: u64,
    /// At least the ID of its last message (0: no message yet), so a reader asking for
    /// messages after an ID at or above it need not look in the store. Absent (`None`)
    /// from a node that predates it: the reader then asks the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<Id>,
    /// Messages the owner remembers (maybe not yet in the store), oldest first.
    pub recent: Vec<StoredMessage>,
}

/// Answer of [`STATE_PATH`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateResponse {
    /// One state per channel asked for.
    pub channels: Vec<ChannelState>,
}

/// Whether a send is forwarded for the first time or again ([`HOP_HEADER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// From the node the client is connected to.
    First,
    /// From a node that was asked as the owner and is not: never forwarded further.
    Again,
}

/// What goes on the `cluster` pub/sub topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterEvent {
    /// The members of this channel changed.
    MembersChanged(Id),
    /// A node gave its channels up (it deleted its lease): look at the ring again now.
    RingChanged,
}

/// Calls the internal API of other nodes, with the cluster secret.
#[derive(Debug, Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    secret: Secret,
}

impl PeerClient {
    /// A client presenting `secret`; each call may take 30 s at most.
    pub fn new(secret: Secret) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("a plain HTTP client builds"),
            secret,
        }
    }

    /// Calls `path` on `member`, relaying its error answers. Errors: `unavailable` when the
    /// member cannot be reached or answers badly, else the member's own error.
    pub async fn call<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        member: &Member,
        path: &str,
        body: &B,
        hop: Hop,
    ) -> Result<T, ApiError> {
        let mut req = self
            .http
            .post(format!("{}{path}", member.endpoint))
            .header(SECRET_HEADER, self.secret.expose());
        if hop == Hop::Again {
            req = req.header(HOP_HEADER, "1");
        }
        let res = req.json(body).send().await.map_err(|e| {
            ApiError::unavailable(format!("node {} is unreachable: {e}", member.name))
        })?;
        let status = res.status();
        if status.is_success() {
            return res.json().await.map_err(|e| {
                ApiError::unavailable(format!("node {} answered badly: {e}", member.name))
            });
        }
        match res.json::<ErrorResponse>().await {
            Ok(e) => Err(ApiError::new(e.error.code, e.error.message)),
            Err(_) if status == StatusCode::NOT_FOUND => Err(ApiError::unavailable(format!(
                "node {} is not a cluster node",
                member.name
            ))),
            Err(_) => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("node {} answered {status}", member.name),
            )),
        }
    }
}
