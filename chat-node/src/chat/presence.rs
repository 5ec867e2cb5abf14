//! Presence on a node: heartbeats feed the [`Tracker`](crate::presence::Tracker); changes go
//! to the users who share a DM, or a group of at most 1000 members, with that user.

use std::time::Duration;

use parley_protocol::ws::close;
use parley_protocol::{ChannelKind, Id, Presence, limits};

use super::{Chat, ev};
use crate::backend::Topic;
use crate::error::ApiError;
use crate::hub::{ConnId, Header, Outbound};
use crate::presence::Change;

impl Chat {
    fn tracker(&self) -> std::sync::MutexGuard<'_, crate::presence::Tracker> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn presence_connected(&self, user: Id, conn: ConnId) {
        let change = self.tracker().connected(user, conn, self.now());
        self.announce(change).await;
    }

    pub async fn presence_ping(&self, user: Id, conn: ConnId) {
        let change = self.tracker().ping(user, conn, self.now());
        self.announce(change).await;
    }

    pub async fn presence_disconnected(&self, user: Id, conn: ConnId) {
        let change = self.tracker().disconnected(user, conn, self.now());
        self.announce(change).await;
    }

    async fn announce(&self, change: Option<Change>) {
        let Some(Change { presence }) = change else {
            return;
        };
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
        let presence = self.tracker().get(user);
        if presence.status == parley_protocol::PresenceStatus::Offline {
            return;
        }
        let header = Header {
            p: Some((user, presence.status)),
            ..Default::default()
        };
        self.publish_best_effort(Topic::Channel(channel), &header, ev::PRESENCE, &presence)
            .await;
    }

    /// `GET /v1/presence`.
    pub fn presence_of(&self, users: &[Id]) -> Result<Vec<Presence>, ApiError> {
        if users.len() > 1000 {
            return Err(ApiError::bad_request("at most 1000 user_ids"));
        }
        let tracker = self.tracker();
        Ok(users.iter().map(|u| tracker.get(*u)).collect())
    }

    /// Re-evaluates presence every quarter interval: announces idle/offline users and
    /// closes connections whose heartbeat expired (4002). Ends on shutdown.
    pub async fn run_presence(&self) {
        let every = (self.config.heartbeat_interval() / 4).max(Duration::from_millis(100));
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
            for change in result.changes {
                self.announce(Some(change)).await;
            }
        }
    }
}
