//! The chat service: every operation of the protocol, shared by the REST handlers and the
//! WebSocket sessions. It talks to the backends only through their ports.
//!
//! ```text
//!   http/ (REST) ─┐                 ┌─ Stores (users, channels, members, messages, ...)
//!                 ├─► Chat ─────────┼─ Log (durable messages) ──► persister ──► Stores
//!   ws/ (session)─┘   │             ├─ PubSub ──► Hub ──► connections
//!                     └─ Sequencer  └─ Blobs (signed URLs)
//! ```

mod accounts;
pub mod auth_limits;
mod channels;
mod media;
mod members;
mod messages;
mod presence;
pub mod quotas;
pub mod sequencer;

pub use members::{ClusterEvent, MembershipCache};
pub use messages::SendInput;
pub use presence::PresenceStore;
pub use sequencer::Sequencer;

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parley_protocol::ws::ServerFrame;
use parley_protocol::{Id, Timestamp};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Tokens;
use crate::backend::{Blobs, Log, Stores, Topic, local::LocalBlobs};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::ApiError;
use crate::hub::{Header, Hub};
use crate::metrics::Metrics;
use crate::moderation::Moderator;
use crate::presence::Tracker;
use crate::ratelimit::RateLimiter;
use crate::snowflake::Snowflake;

/// How long download URLs handed out in messages stay valid.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(6 * 3600);
/// How long an upload URL stays valid.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(15 * 60);

/// The backends a node runs on.
#[derive(Debug, Clone)]
pub struct Backends {
    pub stores: Stores,
    pub log: Arc<dyn Log>,
    pub blobs: Arc<dyn Blobs>,
    /// Set when blobs are local files this node serves itself.
    pub local_blobs: Option<LocalBlobs>,
    /// `<prefix>.notifications` (distributed mode): one record per message for each member
    /// with no live connection.
    pub notifications: Option<Arc<dyn Log>>,
}

/// One node's chat service.
#[derive(Debug)]
pub struct Chat {
    pub config: Config,
    pub stores: Stores,
    pub log: Arc<dyn Log>,
    pub blobs: Arc<dyn Blobs>,
    pub local_blobs: Option<LocalBlobs>,
    pub notifications: Option<Arc<dyn Log>>,
    /// Ring membership (distributed mode); `None`: this node owns every channel.
    pub cluster: Option<Arc<Cluster>>,
    /// The last ring epoch for which the persisters were seen caught up.
    caught_up: tokio::sync::Mutex<u64>,
    pub hub: Arc<Hub>,
    pub ids: Snowflake,
    pub tokens: Tokens,
    pub moderator: Arc<Moderator>,
    pub sequencer: Sequencer,
    pub presence: Mutex<Tracker>,
    pub presence_store: PresenceStore,
    pub members_cache: Arc<MembershipCache>,
    pub send_limiter: Mutex<RateLimiter<Id>>,
    /// Password hashing and rate limits of `/v1/auth/*`.
    pub auth_limits: auth_limits::AuthGate,
    /// Per-user caps: groups, DMs with strangers, uploads ([`quotas`]).
    pub quotas: quotas::Quotas,
    pub metrics: Metrics,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// WebSocket sessions, awaited on shutdown.
    pub sessions: TaskTracker,
    /// Whether the node is draining, and the sessions it will close ([`crate::drain`]).
    pub drain: Arc<crate::drain::Drain>,
    /// Readiness checks of the backends.
    pub checks: Vec<Arc<dyn crate::health::Check>>,
    /// A hash of no password, so logins for unknown users cost as much as wrong passwords.
    dummy_hash: String,
    next_conn: AtomicU64,
}

/// Everything [`Chat::new`] needs.
#[derive(Debug)]
pub struct Parts {
    pub config: Config,
    pub backends: Backends,
    pub hub: Arc<Hub>,
    pub ids: Snowflake,
    pub tokens: Tokens,
    pub moderator: Arc<Moderator>,
    pub cluster: Option<Arc<Cluster>>,
    pub presence: PresenceStore,
    pub checks: Vec<Arc<dyn crate::health::Check>>,
    /// Shared with the pub/sub sink, which applies other nodes' invalidations.
    pub members_cache: Arc<MembershipCache>,
}

impl Chat {
    pub fn new(p: Parts) -> Self {
        let limits = &p.config.limits;
        let auth_limits = auth_limits::AuthGate::new(&p.config.auth_limits);
        let sequencer = Sequencer::new(&p.config.sequencer_memory);
        // Through a hash slot like every hash: its buffer is the first of the pool.
        let dummy_hash = auth_limits
            .hash_now(|m| crate::auth::hash_password_in("no account has this password", m));
        Self {
            send_limiter: Mutex::new(RateLimiter::new(limits.send_rate, limits.send_burst)),
            presence: Mutex::new(Tracker::new(p.config.heartbeat_interval)),
            auth_limits,
            quotas: quotas::Quotas::new(&p.config.quotas),
            presence_store: p.presence,
            members_cache: p.members_cache,
            checks: p.checks,
            config: p.config,
            stores: p.backends.stores,
            log: p.backends.log,
            blobs: p.backends.blobs,
            local_blobs: p.backends.local_blobs,
            notifications: p.backends.notifications,
            cluster: p.cluster,
            caught_up: tokio::sync::Mutex::new(0),
            hub: p.hub,
            ids: p.ids,
            tokens: p.tokens,
            moderator: p.moderator,
            sequencer,
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            drain: Arc::default(),
            dummy_hash,
            next_conn: AtomicU64::new(1),
        }
    }

    /// A fresh connection ID.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The user a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<Id, ApiError> {
        self.tokens
            .verify(token)
            .map_err(|e| ApiError::unauthorized(e.to_string()))
    }

    /// A new Snowflake ID, or `unavailable` when the clock went backwards too far.
    pub async fn new_id(&self) -> Result<Id, ApiError> {
        self.ids.next_id().await.map_err(|e| {
            tracing::error!("{e}");
            ApiError::unavailable(e.to_string())
        })
    }

    /// Serializes a server event once and publishes it on `topic`.
    pub async fn publish<T: Serialize>(
        &self,
        topic: Topic,
        header: &Header,
        t: &str,
        d: &T,
    ) -> Result<(), ApiError> {
        let frame = serde_json::to_vec(&ServerFrame { t, r#ref: None, d }).map_err(|e| {
            tracing::error!("serializing {t}: {e}");
            ApiError::new(parley_protocol::ErrorCode::Internal, "internal error")
        })?;
        self.hub
            .pubsub()
            .publish(topic, crate::hub::encode(header, &frame))
            .await
            .map_err(ApiError::from)
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

    pub fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Event names re-exported for the modules that publish them.
pub(crate) use parley_protocol::ws::event as ev;
