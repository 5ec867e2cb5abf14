//! Presence on a node. Heartbeats feed the local [`Tracker`](crate::presence::Tracker),
//! which closes this node's connections that stop pinging (4002). The user's status is the
//! tracker's in embedded mode, and Redis's (aggregated over every node) in distributed mode.
//! Changes go to the users who share a DM, or a group of at most 1000 members, with that
//! user; offline members of a channel get a notification record per message.

use std::time::Duration;

use bytes::Bytes;
use parley_protocol::ws::close;
use parley_protocol::{ChannelKind, Id, Presence, PresenceStatus, limits};

use super::{Chat, ev};
use crate::backend::presence::RedisPresence;
use crate::backend::{LogRecord, StoredMessage, Topic};
use crate::error::ApiError;
use crate::hub::{ConnId, Header, Outbound};
use crate::presence::Change;

/// Where users' statuses live.
#[derive(Debug)]
pub enum PresenceStore {
    /// This node's tracker (one node is the whole cluster).
    Local,
    /// Redis, shared by the nodes.
    Redis(RedisPresence),
}

impl Chat {
    fn tracker(&self) -> parking_lot::MutexGuard<'_, crate::presence::Tracker> {
        self.presence.lock()
    }

    /// Announces a tracker change (embedded) or a Redis one (distributed).
    async fn settle(
        &self,
        local: Option<Change>,
        shared: Option<Result<Option<Presence>, crate::backend::BackendError>>,
    ) {
        match (&self.presence_store, shared) {
            (PresenceStore::Local, _) => {
                if let Some(Change { presence }) = local {
                    self.announce(presence).await;
                }
            }
            (PresenceStore::Redis(_), Some(Ok(Some(presence)))) => self.announce(presence).await,
            (PresenceStore::Redis(_), Some(Err(e))) => {
                tracing::warn!("presence update failed: {e}")
            }
            _ => {}
        }
    }

    pub async fn presence_connected(&self, user: Id, conn: ConnId) {
        let now = self.now();
        let local = self.tracker().connected(user, conn, now);
        let shared = match &self.presence_store {
            PresenceStore::Redis(r) => Some(r.heartbeat(user, conn, now).await),
            PresenceStore::Local => None,
        };
        self.settle(local, shared).await;
    }

    pub async fn presence_ping(&self, user: Id, conn: ConnId) {
        let now = self.now();
        let local = self.tracker().ping(user, conn, now);
        let shared = match &self.presence_store {
            PresenceStore::Redis(r) => Some(r.heartbeat(user, conn, now).await),
            PresenceStore::Local => None,
        };
        self.settle(local, shared).await;
    }

    pub async fn presence_disconnected(&self, user: Id, conn: ConnId) {
        let local = self.tracker().disconnected(user, conn, self.now());
        let shared = match &self.presence_store {
            PresenceStore::Redis(r) => Some(r.remove(user, conn).await),
            PresenceStore::Local => None,
        };
        self.settle(local, shared).await;
    }

    /// A presence key of `user` expired in Redis: re-evaluate, and close the connection
    /// if it is this node's and its live key went.
    pub async fn presence_expired(&self, expired: crate::backend::presence::Expired) {
        let PresenceStore::Redis(r) = &self.presence_store else {
            return;
        };
        if expired.live && expired.node == r.node() {
            self.hub.send_to(
                expired.conn,
                Outbound::Close(close::HEARTBEAT_EXPIRED, "heartbeat expired"),
            );
        }
        let change = r.changed(expired.user).await;
        self.settle(None, Some(change)).await;
    }

    /// After Redis lost its data: writes this node's connections back.
    pub async fn presence_restore(&self) {
        let PresenceStore::Redis(r) = &self.presence_store else {
            return;
        };
        let conns = self.tracker().connections();
        let now = self.now();
        for (user, conn) in conns {
            let change = r.heartbeat(user, conn, now).await;
            self.settle(None, Some(change)).await;
        }
    }

    async fn announce(&self, presence: Presence) {
        let channels = match self.stores.channels.channels_of(presence.user_id).await {
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
                self.publish_best_effort(Topic::Channel(c.id), &header, ev::PRESENCE, &presence)
                    .await;
            }
        }
    }

    /// Tells a channel the presence of a user who just joined it.
    pub(super) async fn presence_to_channel(&self, user: Id, channel: Id) {
        let Ok(mut presence) = self.presence_of(&[user]).await else {
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
        self.publish_best_effort(Topic::Channel(channel), &header, ev::PRESENCE, &presence)
            .await;
    }

    /// `GET /v1/presence` for `caller`: the presence of each of `users`, in their order.
    /// Only users who share a channel (a group or a DM) with the caller, and the caller,
    /// are told as they are; anyone else reads as `offline` with `last_seen` null, exactly
    /// what a user who never connected reads as, so the answer tells nothing about
    /// strangers (not even whether they exist) and keeps its shape. At most
    /// `PARLEY_PRESENCE_MAX_IDS` IDs (`bad_request` beyond).
    pub async fn presence_for(&self, caller: Id, users: &[Id]) -> Result<Vec<Presence>, ApiError> {
        let max = self.config.quotas.presence_max_ids as usize;
        if users.len() > max {
            return Err(ApiError::bad_request(format!(
                "at most {max} user_ids per request"
            )));
        }
        let mut shared: std::collections::HashSet<Id> = self
            .stores
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
        let known: std::collections::HashMap<Id, Presence> = self
            .presence_of(&visible)
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
    /// [`Chat::presence_for`]).
    pub async fn presence_of(&self, users: &[Id]) -> Result<Vec<Presence>, ApiError> {
        match &self.presence_store {
            PresenceStore::Local => {
                let tracker = self.tracker();
                Ok(users.iter().map(|u| tracker.get(*u)).collect())
            }
            PresenceStore::Redis(r) => Ok(r.get(users).await?),
        }
    }

    /// One `<prefix>.notifications` record per member of the message's channel who has no
    /// live connection anywhere (for a push gateway). Best effort: it never delays or fails
    /// the send.
    pub(super) async fn notify_offline_members(&self, m: &StoredMessage) {
        let Some(log) = self.notifications.clone() else {
            return;
        };
        let members = match self.stores.members.member_ids(m.channel_id).await {
            Ok(ids) => ids
                .into_iter()
                .filter(|u| *u != m.author_id)
                .collect::<Vec<_>>(),
            Err(e) => return tracing::warn!("notifications skipped: {e}"),
        };
        let presence = match self.presence_of(&members).await {
            Ok(p) => p,
            Err(e) => return tracing::warn!("notifications skipped: {e}"),
        };
        let preview: String = m.text.chars().take(200).collect();
        let records: Vec<LogRecord> = presence
            .iter()
            .filter(|p| p.status == PresenceStatus::Offline)
            .map(|p| {
                let body = serde_json::json!({
                    "user_id": p.user_id,
                    "channel_id": m.channel_id,
                    "message_id": m.id,
                    "seq": m.seq,
                    "author_id": m.author_id,
                    "text": preview,
                    "created_at": m.created_at,
                });
                LogRecord {
                    key: p.user_id,
                    payload: Bytes::from(body.to_string()),
                }
            })
            .collect();
        if records.is_empty() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = log.append(&records).await {
                tracing::warn!(records = records.len(), "notifications not written: {e}");
            }
        });
    }

    /// Re-evaluates presence every quarter interval: closes connections whose heartbeat
    /// expired (4002) and, in embedded mode, announces idle/offline users. Ends on shutdown.
    pub async fn run_presence(&self) {
        let every = (self.config.heartbeat_interval / 4).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            let result = self.tracker().tick(self.now());
            for conn in result.expired {
                self.hub.send_to(
                    conn,
                    Outbound::Close(close::HEARTBEAT_EXPIRED, "heartbeat expired"),
                );
            }
            if matches!(self.presence_store, PresenceStore::Local) {
                for change in result.changes {
                    self.announce(change.presence).await;
                }
            }
        }
    }
}
