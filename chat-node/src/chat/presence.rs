//! Presence on a node ([`PresenceService`]). Heartbeats feed this node's
//! [`Tracker`](crate::heartbeat::Tracker), which closes its connections that stop pinging
//! (4002), and the [`PresenceStore`] the statuses live in: in memory on an embedded node, in
//! Redis (aggregated over every node) in a cluster. Each change the store reports goes to
//! the users who share a DM, or a group of at most 1000 members, with that user.
//!
//! ```text
//!   ws: hello / ping / close ─► Tracker (this node's sockets: 4002 when silent)
//!                            └► PresenceStore ─ changed? ─► Events on each shared channel
//!   every interval / 4 ─► Tracker::tick (close) + PresenceStore::expire (idle, offline)
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use parley_protocol::ws::close;
use parley_protocol::{ChannelKind, Id, Presence, PresenceStatus, Timestamp, limits};
use tokio_util::sync::CancellationToken;

use super::ev;
use super::events::Events;
use crate::backend::presence_store::PresenceStore;
use crate::backend::{BackendError, ChannelStore, MemberStore, Topic};
use crate::error::ApiError;
use crate::heartbeat::Tracker;
use crate::hub::{ConnId, Header, Hub, Outbound};

/// Everything [`PresenceService::new`] needs.
#[derive(Debug)]
pub struct PresenceParts {
    /// Where the statuses live.
    pub store: Arc<dyn PresenceStore>,
    /// Closes this node's connections whose heartbeat expired.
    pub hub: Arc<Hub>,
    /// Announces changes.
    pub events: Events,
    /// A user's channels: where their changes are announced.
    pub channels: Arc<dyn ChannelStore>,
    /// Who shares a channel with whom (what a presence query may tell).
    pub members: Arc<dyn MemberStore>,
    /// The heartbeat interval clients are told to ping at.
    pub interval: Duration,
    /// Most users one presence query may name (`PARLEY_PRESENCE_MAX_IDS`).
    pub max_ids: u32,
}

/// Presence as this node handles it: its connections' heartbeats, and every user's status.
#[derive(Debug)]
pub struct PresenceService {
    /// This node's connections by heartbeat.
    tracker: Mutex<Tracker>,
    store: Arc<dyn PresenceStore>,
    hub: Arc<Hub>,
    events: Events,
    channels: Arc<dyn ChannelStore>,
    members: Arc<dyn MemberStore>,
    interval: Duration,
    max_ids: usize,
}

impl PresenceService {
    /// Presence over the store and services in `p`.
    pub fn new(p: PresenceParts) -> Self {
        Self {
            tracker: Mutex::new(Tracker::new(p.interval)),
            store: p.store,
            hub: p.hub,
            events: p.events,
            channels: p.channels,
            members: p.members,
            interval: p.interval,
            max_ids: p.max_ids as usize,
        }
    }

    /// Announces what the store reported, or logs why it could not say.
    async fn settle(&self, changed: Result<Option<Presence>, BackendError>) {
        match changed {
            Ok(Some(presence)) => self.announce(presence).await,
            Ok(None) => {}
            Err(e) => tracing::warn!("presence update failed: {e}"),
        }
    }

    /// Connection `conn` of `user` said hello.
    pub async fn connected(&self, user: Id, conn: ConnId) {
        let now = Timestamp::now();
        let _ = self.tracker.lock().connected(user, conn, now);
        self.settle(self.store.connect(user, conn, now).await).await;
    }

    /// Connection `conn` of `user` pinged.
    pub async fn ping(&self, user: Id, conn: ConnId) {
        let now = Timestamp::now();
        let _ = self.tracker.lock().ping(user, conn, now);
        self.settle(self.store.heartbeat(user, conn, now).await)
            .await;
    }

    /// Connection `conn` of `user` closed (cleanly or not).
    pub async fn disconnected(&self, user: Id, conn: ConnId) {
        let now = Timestamp::now();
        let _ = self.tracker.lock().disconnected(user, conn, now);
        self.settle(self.store.disconnect(user, conn, now).await)
            .await;
    }

    /// A presence key of `user` expired in the store: re-evaluate them, and close `gone`, a
    /// connection of this node whose liveness expired there (4002).
    pub async fn expired(&self, user: Id, gone: Option<ConnId>) {
        if let Some(conn) = gone {
            self.hub.send_to(
                conn,
                Outbound::Close(close::HEARTBEAT_EXPIRED, "heartbeat expired"),
            );
        }
        let changed = self.store.reevaluate(user, Timestamp::now()).await;
        self.settle(changed).await;
    }

    /// After the store lost its data (Redis restarted empty): writes this node's
    /// connections back.
    pub async fn restore(&self) {
        let conns = self.tracker.lock().connections();
        let now = Timestamp::now();
        for (user, conn) in conns {
            let changed = self.store.heartbeat(user, conn, now).await;
            self.settle(changed).await;
        }
    }

    async fn announce(&self, presence: Presence) {
        let channels = match self.channels.channels_of(presence.user_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("presence fan-out skipped: {e}");
                return;
            }
        };
        let header = Header {
            p: Some((presence.user_id, presence.status)),
            ..Default::default()
        };
        for c in channels {
            if c.kind == ChannelKind::Dm || c.member_count <= limits::PRESENCE_FANOUT_MAX_MEMBERS {
                self.events
                    .publish_best_effort(Topic::Channel(c.id), &header, ev::PRESENCE, &presence)
                    .await;
            }
        }
    }

    /// Tells `channel` the presence of `user`, who just joined it (nothing when offline).
    pub async fn tell_channel(&self, user: Id, channel: Id) {
        let Ok(mut presence) = self.of(&[user]).await else {
            return;
        };
        let Some(presence) = presence.pop() else {
            return;
        };
        if presence.status == PresenceStatus::Offline {
            return;
        }
        let header = Header {
            p: Some((user, presence.status)),
            ..Default::default()
        };
        self.events
            .publish_best_effort(Topic::Channel(channel), &header, ev::PRESENCE, &presence)
            .await;
    }

    /// `GET /v1/presence` for `caller`: the presence of each of `users`, in their order.
    /// Only users who share a channel (a group or a DM) with the caller, and the caller,
    /// are told as they are; anyone else reads as `offline` with `last_seen` null, exactly
    /// what a user who never connected reads as, so the answer tells nothing about
    /// strangers (not even whether they exist) and keeps its shape. At most
    /// `PARLEY_PRESENCE_MAX_IDS` IDs (`bad_request` beyond).
    pub async fn visible_to(&self, caller: Id, users: &[Id]) -> Result<Vec<Presence>, ApiError> {
        if users.len() > self.max_ids {
            return Err(ApiError::bad_request(format!(
                "at most {} user_ids per request",
                self.max_ids
            )));
        }
        let mut shared: HashSet<Id> = self
            .members
            .co_members(caller, users)
            .await?
            .into_iter()
            .collect();
        shared.insert(caller);
        let visible: Vec<Id> = users
            .iter()
            .copied()
            .filter(|u| shared.contains(u))
            .collect();
        let known: HashMap<Id, Presence> = self
            .of(&visible)
            .await?
            .into_iter()
            .map(|p| (p.user_id, p))
            .collect();
        Ok(users
            .iter()
            .map(|u| {
                known.get(u).cloned().unwrap_or(Presence {
                    user_id: *u,
                    status: PresenceStatus::Offline,
                    last_seen: None,
                })
            })
            .collect())
    }

    /// The presence of `users`, whoever asks (fan-out, notifications; the REST answer is
    /// [`PresenceService::visible_to`]).
    pub async fn of(&self, users: &[Id]) -> Result<Vec<Presence>, ApiError> {
        Ok(self.store.get(users).await?)
    }

    /// Re-evaluates presence every quarter interval: closes connections whose heartbeat
    /// expired (4002) and announces the users time made idle or offline. Ends on `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let every = (self.interval / 4).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = Timestamp::now();
            let expired = self.tracker.lock().tick(now).expired;
            for conn in expired {
                self.hub.send_to(
                    conn,
                    Outbound::Close(close::HEARTBEAT_EXPIRED, "heartbeat expired"),
                );
            }
            match self.store.expire(now).await {
                Ok(changes) => {
                    for presence in changes {
                        self.announce(presence).await;
                    }
                }
                Err(e) => tracing::warn!("presence expiry failed: {e}"),
            }
        }
    }
}
