//! The chat service: every operation of the protocol, shared by the REST handlers and the
//! WebSocket sessions, one type per concern. [`Chat`] composes them; callers reach a
//! concern through its accessor (`chat.messages().send(..)`, `chat.history().page(..)`).
//! Each talks to the backends only through their ports.
//!
//! ```text
//!   http/ (REST), ws/ ──► Chat ─┬─ accounts()   Accounts        users, tokens, sign-in limits
//!                               ├─ channels()   Channels        groups, DMs, join/leave
//!                               ├─ members()    Members         member sets (cached), checks
//!                               ├─ messages()   Messages        send: check, moderate, route
//!                               ├─ sequencing() Sequencing      owner: dedupe, seq, log, publish
//!                               │                └ Handover     owner terms (fencing), take-overs
//!                               ├─ history()    History         pages, sync, resume, cursors
//!                               ├─ receipts()   Receipts        read markers, typing
//!                               ├─ presence()   PresenceService heartbeats, statuses
//!                               ├─ media()      Media           uploads, signed URLs
//!                               └─ lifecycle()  Lifecycle       shutdown, drain, readiness
//!   shared: Events (publish on the pub/sub), ChannelOwners (who sequences a channel),
//!           Sequencer (recent messages, idempotency keys), Hub (this node's sockets)
//! ```

mod accounts;
pub mod auth_limits;
mod channels;
pub mod events;
pub mod fencing;
mod handover;
mod history;
mod lifecycle;
mod media;
mod members;
pub mod notify;
pub mod owners;
pub mod presence;
pub mod quotas;
mod receipts;
mod send;
pub mod sequencer;
mod sequencing;

pub use accounts::Accounts;
pub use channels::Channels;
pub use handover::Handover;
pub use history::History;
pub use lifecycle::Lifecycle;
pub use media::{DOWNLOAD_URL_TTL, Media, UPLOAD_URL_TTL};
pub use members::{Members, MembershipCache};
pub use presence::PresenceService;
pub use receipts::Receipts;
pub use send::{Messages, SendInput};
pub use sequencer::Sequencer;
pub use sequencing::Sequencing;

use std::sync::Arc;

use parley_protocol::Id;

use crate::auth::Tokens;
use crate::backend::presence_store::PresenceStore;
use crate::backend::{Blobs, Log, MessageStore, Stores, local::LocalBlobs};
use crate::config::{Config, Mode};
use crate::error::ApiError;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::moderation::Moderator;
use crate::snowflake::Snowflake;

/// The backends a node runs on.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Users, channels, members, messages, read markers, attachments.
    pub stores: Stores,
    /// The durable log sends are appended to (`<prefix>.messages`, or SQLite's table).
    pub log: Arc<dyn Log>,
    /// Where attachments' bytes are kept.
    pub blobs: Arc<dyn Blobs>,
    /// Set when blobs are local files this node serves itself.
    pub local_blobs: Option<LocalBlobs>,
    /// `<prefix>.notifications` (distributed mode): one record per message for each member
    /// with no live connection.
    pub notifications: Option<Arc<dyn Log>>,
}

/// Everything [`Chat::new`] needs.
#[derive(Debug)]
pub struct Parts {
    /// The node's settings.
    pub config: Config,
    pub backends: Backends,
    /// This node's sockets, over the node's pub/sub.
    pub hub: Arc<Hub>,
    /// The node's Snowflake generator (its worker ID).
    pub ids: Snowflake,
    /// Signs and checks session tokens.
    pub tokens: Tokens,
    pub moderator: Arc<Moderator>,
    /// Channel ownership: [`owners::Ownership::single_node`] or a ring's.
    pub ownership: owners::Ownership,
    /// Where users' statuses live.
    pub presence: Arc<dyn PresenceStore>,
    /// Readiness checks of the backends (`/readyz`).
    pub checks: Vec<Arc<dyn crate::health::Check>>,
    /// Shared with the hub's cluster inbox, which applies other nodes' invalidations.
    pub members_cache: Arc<MembershipCache>,
}

/// New Snowflake IDs for the concerns that create things.
#[derive(Debug, Clone)]
pub struct Ids(Arc<Snowflake>);

impl Ids {
    /// IDs from `ids`, shared by every concern.
    pub fn new(ids: Snowflake) -> Self {
        Self(Arc::new(ids))
    }

    /// A new ID. Errors: `unavailable` when the clock went backwards too far.
    pub async fn next(&self) -> Result<Id, ApiError> {
        self.next_after(Id(0)).await
    }

    /// A new ID above `floor` (a channel's last message ID): per channel, ID order is seq
    /// order whatever the clocks of its owners ([`crate::snowflake`]). Errors: `unavailable`
    /// when the ID would run further ahead of this node's clock than the bound allows (the
    /// clock went backwards, or `floor` came from a clock that far ahead).
    pub async fn next_after(&self, floor: Id) -> Result<Id, ApiError> {
        self.0.next_after(floor).await.map_err(|e| {
            tracing::error!("{e}");
            ApiError::unavailable(e.to_string())
        })
    }
}

/// The log an embedded node appends to and the store its own persister moves it into.
#[derive(Debug, Clone)]
pub struct OwnLog {
    /// The SQLite log sends are appended to.
    pub log: Arc<dyn Log>,
    /// The store the persister writes them into.
    pub store: Arc<dyn MessageStore>,
}

/// One node's chat service.
#[derive(Debug)]
pub struct Chat {
    config: Config,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    moderator: Arc<Moderator>,
    accounts: Accounts,
    channels: Channels,
    members: Arc<Members>,
    messages: Messages,
    sequencing: Arc<Sequencing>,
    history: Arc<History>,
    receipts: Receipts,
    presence: Arc<PresenceService>,
    media: Arc<Media>,
    lifecycle: Lifecycle,
    own_log: Option<OwnLog>,
}

/// What the concerns share while [`Chat::new`] builds them.
struct Common {
    ids: Ids,
    events: events::Events,
    stores: Stores,
    metrics: Arc<Metrics>,
    owners: Arc<dyn owners::ChannelOwners>,
    fencing: Arc<dyn fencing::Fencing>,
    members: Arc<Members>,
    media: Arc<Media>,
}

/// The message concerns, built together ([`Chat::messaging`]).
struct Messaging {
    sequencing: Arc<Sequencing>,
    history: Arc<History>,
    messages: Messages,
    receipts: Receipts,
}

impl Chat {
    /// Builds every concern over the backends and services in `p`.
    pub fn new(p: Parts) -> Self {
        let ids = Ids::new(p.ids);
        let events = events::Events::new(p.hub.pubsub().clone());
        let stores = p.backends.stores.clone();
        p.hub.check_memberships_with(stores.members.clone());
        let quotas = Arc::new(quotas::Quotas::new(&p.config.quotas));
        let members = Arc::new(Members::new(
            stores.members.clone(),
            stores.channels.clone(),
            p.members_cache,
            events.clone(),
        ));
        let presence = Arc::new(PresenceService::new(presence::PresenceParts {
            store: p.presence,
            hub: p.hub.clone(),
            events: events.clone(),
            channels: stores.channels.clone(),
            members: stores.members.clone(),
            interval: p.config.heartbeat_interval,
            max_ids: p.config.quotas.presence_max_ids,
        }));
        let media = Arc::new(Media::new(media::MediaParts {
            store: stores.media.clone(),
            blobs: p.backends.blobs.clone(),
            local_blobs: p.backends.local_blobs.clone(),
            quotas: quotas.clone(),
            ids: ids.clone(),
            limits: p.config.limits.clone(),
        }));
        let accounts = Accounts::new(
            stores.users.clone(),
            p.tokens,
            auth_limits::AuthGate::new(&p.config.auth_limits),
            ids.clone(),
        );
        let channels = Channels::new(channels::ChannelParts {
            channels: stores.channels.clone(),
            member_store: stores.members.clone(),
            users: stores.users.clone(),
            members: members.clone(),
            hub: p.hub.clone(),
            events: events.clone(),
            quotas,
            ids: ids.clone(),
            presence: presence.clone(),
        });
        let common = Common {
            ids,
            events,
            stores,
            metrics: Arc::new(Metrics::new()),
            owners: p.ownership.owners,
            fencing: p.ownership.fencing,
            members,
            media,
        };
        let messaging = Self::messaging(&common, &p.config, &p.backends, &p.moderator, &presence);
        let own_log = (p.config.mode == Mode::Embedded).then(|| OwnLog {
            log: p.backends.log.clone(),
            store: common.stores.messages.clone(),
        });
        Self {
            lifecycle: Lifecycle::new(p.checks, p.ownership.membership),
            hub: p.hub,
            metrics: common.metrics,
            moderator: p.moderator,
            accounts,
            channels,
            members: common.members,
            messages: messaging.messages,
            sequencing: messaging.sequencing,
            history: messaging.history,
            receipts: messaging.receipts,
            presence,
            media: common.media,
            own_log,
            config: p.config,
        }
    }

    /// The message concerns: the owner's sequencing, reads, sends and receipts.
    fn messaging(
        c: &Common,
        config: &Config,
        backends: &Backends,
        moderator: &Arc<Moderator>,
        presence: &Arc<PresenceService>,
    ) -> Messaging {
        let sequencer = Arc::new(Sequencer::new(&config.sequencer_memory));
        let sequencing = Arc::new(Sequencing::new(sequencing::SequencingParts {
            owners: c.owners.clone(),
            handover: Handover::new(
                c.owners.clone(),
                c.fencing.clone(),
                backends.log.clone(),
                c.stores.messages.clone(),
                sequencer.clone(),
            ),
            sequencer,
            log: backends.log.clone(),
            messages: c.stores.messages.clone(),
            ids: c.ids.clone(),
            media: c.media.clone(),
            events: c.events.clone(),
            metrics: c.metrics.clone(),
            notifier: backends.notifications.clone().map(|log| {
                notify::OfflineNotifier::new(log, c.stores.members.clone(), presence.clone())
            }),
        }));
        let history = Arc::new(History::new(history::HistoryParts {
            messages: c.stores.messages.clone(),
            channels: c.stores.channels.clone(),
            members: c.members.clone(),
            owners: c.owners.clone(),
            sequencing: sequencing.clone(),
            media: c.media.clone(),
        }));
        let messages = Messages::new(send::MessagesParts {
            limits: config.limits.clone(),
            members: c.members.clone(),
            moderator: moderator.clone(),
            media: c.media.clone(),
            history: history.clone(),
            owners: c.owners.clone(),
            sequencing: sequencing.clone(),
            metrics: c.metrics.clone(),
        });
        let receipts = Receipts::new(
            c.stores.read_markers.clone(),
            c.members.clone(),
            history.clone(),
            c.events.clone(),
        );
        Messaging {
            sequencing,
            history,
            messages,
            receipts,
        }
    }

    /// The node's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's WebSocket connections and their subscriptions.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The moderation policy and its word list.
    pub fn moderator(&self) -> &Arc<Moderator> {
        &self.moderator
    }

    /// Users, sign-in and session tokens.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Groups and DMs.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Member sets and membership checks.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Sending messages.
    pub fn messages(&self) -> &Messages {
        &self.messages
    }

    /// Sequencing on the channels' owner (this node's share of them).
    pub fn sequencing(&self) -> &Arc<Sequencing> {
        &self.sequencing
    }

    /// Reading messages.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Read markers and typing.
    pub fn receipts(&self) -> &Receipts {
        &self.receipts
    }

    /// Heartbeats and statuses.
    pub fn presence(&self) -> &Arc<PresenceService> {
        &self.presence
    }

    /// Uploads and signed URLs.
    pub fn media(&self) -> &Media {
        &self.media
    }

    /// Shutdown, drain and readiness.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The log an embedded node persists itself (`None` in distributed mode, where the
    /// persisters are processes of their own).
    pub fn own_log(&self) -> Option<&OwnLog> {
        self.own_log.as_ref()
    }
}

/// Event names re-exported for the modules that publish them.
pub(crate) use parley_protocol::ws::event as ev;
