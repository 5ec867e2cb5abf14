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
pub mod events;
mod media;
mod members;
mod messages;
pub mod notify;
pub mod owners;
pub mod presence;
pub mod quotas;
pub mod sequencer;

pub use members::MembershipCache;
pub use messages::SendInput;
pub use presence::PresenceService;
pub use sequencer::Sequencer;

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::{Id, Timestamp};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Tokens;
use crate::backend::presence_store::PresenceStore;
use crate::backend::{Blobs, Log, Stores, Topic, local::LocalBlobs};
use crate::config::Config;
use crate::error::ApiError;
use crate::hub::{Header, Hub};
use crate::metrics::Metrics;
use crate::moderation::Moderator;
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
    /// Who sequences each channel ([`owners::SingleNode`] on an embedded node).
    owners: Arc<dyn owners::ChannelOwners>,
    /// The node's part in the ring over its life (drain, shutdown, `/readyz`).
    pub membership: Arc<dyn owners::Membership>,
    /// The last ring epoch for which the persisters were seen caught up.
    caught_up: tokio::sync::Mutex<u64>,
    pub hub: Arc<Hub>,
    pub ids: Snowflake,
    pub tokens: Tokens,
    pub moderator: Arc<Moderator>,
    pub sequencer: Sequencer,
    /// Heartbeats and statuses.
    presence: Arc<PresenceService>,
    /// Notification records for offline members (distributed mode).
    notifier: Option<notify::OfflineNotifier>,
    /// Publishes events to the channels' and users' topics.
    events: events::Events,
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
    /// Channel ownership: [`owners::Ownership::single_node`] or a ring's.
    pub ownership: owners::Ownership,
    /// Where users' statuses live.
    pub presence: Arc<dyn PresenceStore>,
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
        let events = events::Events::new(p.hub.pubsub().clone());
        let stores = &p.backends.stores;
        let presence = Arc::new(PresenceService::new(presence::PresenceParts {
            store: p.presence,
            hub: p.hub.clone(),
            events: events.clone(),
            channels: stores.channels.clone(),
            members: stores.members.clone(),
            interval: p.config.heartbeat_interval,
            max_ids: p.config.quotas.presence_max_ids,
        }));
        let notifier = p
            .backends
            .notifications
            .map(|log| notify::OfflineNotifier::new(log, stores.members.clone(), presence.clone()));
        Self {
            send_limiter: Mutex::new(RateLimiter::new(limits.send_rate, limits.send_burst)),
            presence,
            notifier,
            events,
            auth_limits,
            quotas: quotas::Quotas::new(&p.config.quotas),
            members_cache: p.members_cache,
            checks: p.checks,
            config: p.config,
            stores: p.backends.stores,
            log: p.backends.log,
            blobs: p.backends.blobs,
            local_blobs: p.backends.local_blobs,
            owners: p.ownership.owners,
            membership: p.ownership.membership,
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
        }
    }

    /// A fresh connection ID.
    pub fn next_conn_id(&self) -> u64 {
        self.hub.next_conn_id()
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

    /// Serializes a server event once and publishes it on `topic` ([`events::Events`]).
    pub async fn publish<T: Serialize>(
        &self,
        topic: Topic,
        header: &Header,
        t: &str,
        d: &T,
    ) -> Result<(), ApiError> {
        self.events.publish(topic, header, t, d).await
    }

    /// Publishes an event that is a courtesy (typing, read, presence): failures are logged.
    pub async fn publish_best_effort<T: Serialize>(
        &self,
        topic: Topic,
        header: &Header,
        t: &str,
        d: &T,
    ) {
        self.events.publish_best_effort(topic, header, t, d).await;
    }

    /// Heartbeats and statuses.
    pub fn presence(&self) -> &Arc<PresenceService> {
        &self.presence
    }

    /// A hello of connection `conn` of `user` ([`PresenceService::connected`]).
    pub async fn presence_connected(&self, user: Id, conn: crate::hub::ConnId) {
        self.presence.connected(user, conn).await;
    }

    /// A ping of connection `conn` of `user` ([`PresenceService::ping`]).
    pub async fn presence_ping(&self, user: Id, conn: crate::hub::ConnId) {
        self.presence.ping(user, conn).await;
    }

    /// Connection `conn` of `user` closed ([`PresenceService::disconnected`]).
    pub async fn presence_disconnected(&self, user: Id, conn: crate::hub::ConnId) {
        self.presence.disconnected(user, conn).await;
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Event names re-exported for the modules that publish them.
pub(crate) use parley_protocol::ws::event as ev;
