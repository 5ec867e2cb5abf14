//! Presence by heartbeat, as a pure state machine over (time, connection events): the
//! [`Tracker`]. Each node keeps one over its own connections (it closes those that stop
//! pinging, 4002), and the embedded node's presence store keeps another for the statuses
//! (`backend::presence_store::MemoryPresence`).
//!
//! Per connection, `missed = (now - last ping) / interval`. A user is `online` while any of
//! their connections has missed fewer than 3 intervals, `idle` while they have connections
//! but all missed 3 or more, and `offline` with none. A connection that missed 5 intervals is
//! expired (the node closes it with 4002); the last connection closing cleanly makes the user
//! `offline` at once.

use std::collections::HashMap;
use std::time::Duration;

use parley_protocol::{Id, Presence, PresenceStatus, Timestamp};

/// A connection on this node (`hub::ConnId`).
type ConnId = u64;

/// Missed intervals after which a connection no longer keeps its user online.
pub const IDLE_AFTER_MISSED: u64 = 3;
/// Missed intervals after which a connection expires (closed with 4002).
pub const OFFLINE_AFTER_MISSED: u64 = 5;

#[derive(Debug, Default)]
struct UserState {
    /// Last ping of each live connection, in ms since the Unix epoch.
    conns: HashMap<ConnId, i64>,
    status: Option<PresenceStatus>,
    last_seen: Option<Timestamp>,
}

/// A presence change to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub presence: Presence,
}

/// What a tick decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub changes: Vec<Change>,
    /// Connections whose heartbeat expired: close them with 4002.
    pub expired: Vec<ConnId>,
}

/// The presence of the users connected to this node.
#[derive(Debug)]
pub struct Tracker {
    interval_ms: i64,
    users: HashMap<Id, UserState>,
}

impl Tracker {
    /// A tracker of heartbeats sent every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis().max(1) as i64,
            users: HashMap::new(),
        }
    }

    fn status_of(&self, state: &UserState, now: i64) -> PresenceStatus {
        let best = state
            .conns
            .values()
            .map(|last| ((now - last).max(0) / self.interval_ms) as u64)
            .min();
        match best {
            None => PresenceStatus::Offline,
            Some(m) if m < IDLE_AFTER_MISSED => PresenceStatus::Online,
            Some(_) => PresenceStatus::Idle,
        }
    }

    fn update(&mut self, user: Id, now: i64) -> Option<Change> {
        let state = self.users.get(&user)?;
        let status = self.status_of(state, now);
        let state = self.users.get_mut(&user)?;
        if state.status == Some(status) {
            return None;
        }
        state.status = Some(status);
        let presence = Presence {
            user_id: user,
            status,
            last_seen: state.last_seen,
        };
        if status == PresenceStatus::Offline {
            self.users.remove(&user);
        }
        Some(Change { presence })
    }

    /// A connection said hello.
    pub fn connected(&mut self, user: Id, conn: ConnId, now: Timestamp) -> Option<Change> {
        let state = self.users.entry(user).or_default();
        state.conns.insert(conn, now.0);
        state.last_seen = Some(now);
        self.update(user, now.0)
    }

    /// A connection pinged.
    pub fn ping(&mut self, user: Id, conn: ConnId, now: Timestamp) -> Option<Change> {
        let state = self.users.get_mut(&user)?;
        let last = state.conns.get_mut(&conn)?;
        *last = now.0;
        state.last_seen = Some(now);
        self.update(user, now.0)
    }

    /// A connection closed (cleanly or not).
    pub fn disconnected(&mut self, user: Id, conn: ConnId, now: Timestamp) -> Option<Change> {
        let state = self.users.get_mut(&user)?;
        state.conns.remove(&conn)?;
        self.update(user, now.0)
    }

    /// Re-evaluates `user` at `now` without expiring any connection (the status of their
    /// freshest connection).
    pub fn evaluate(&mut self, user: Id, now: Timestamp) -> Option<Change> {
        self.update(user, now.0)
    }

    /// Re-evaluates everyone at `now`.
    pub fn tick(&mut self, now: Timestamp) -> Tick {
        let mut tick = Tick::default();
        let limit = OFFLINE_AFTER_MISSED as i64 * self.interval_ms;
        for state in self.users.values_mut() {
            state.conns.retain(|conn, last| {
                let keep = now.0 - *last < limit;
                if !keep {
                    tick.expired.push(*conn);
                }
                keep
            });
        }
        let users: Vec<Id> = self.users.keys().copied().collect();
        for user in users {
            if let Some(change) = self.update(user, now.0) {
                tick.changes.push(change);
            }
        }
        tick.expired.sort_unstable();
        tick
    }

    /// Every live connection: (user, connection).
    pub fn connections(&self) -> Vec<(Id, ConnId)> {
        self.users
            .iter()
            .flat_map(|(u, s)| s.conns.keys().map(move |c| (*u, *c)))
            .collect()
    }

    /// The presence of `user` as this node knows it.
    pub fn get(&self, user: Id) -> Presence {
        match self.users.get(&user) {
            Some(s) => Presence {
                user_id: user,
                status: s.status.unwrap_or(PresenceStatus::Offline),
                last_seen: s.last_seen,
            },
            None => Presence {
                user_id: user,
                status: PresenceStatus::Offline,
                last_seen: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: i64 = 1000;

    fn status(c: Option<Change>) -> Option<PresenceStatus> {
        c.map(|c| c.presence.status)
    }

    #[test]
    fn online_idle_offline_by_missed_heartbeats() {
        let mut t = Tracker::new(Duration::from_millis(I as u64));
        let u = Id(1);
        assert_eq!(
            status(t.connected(u, 10, Timestamp(0))),
            Some(PresenceStatus::Online)
        );
        assert_eq!(t.ping(u, 10, Timestamp(I)), None, "still online");
        assert_eq!(
            t.tick(Timestamp(I + 2 * I)),
            Tick::default(),
            "2 missed: online"
        );
        let tick = t.tick(Timestamp(I + 3 * I));
        assert_eq!(tick.changes.len(), 1);
        assert_eq!(tick.changes[0].presence.status, PresenceStatus::Idle);
        assert_eq!(tick.changes[0].presence.last_seen, Some(Timestamp(I)));
        assert!(tick.expired.is_empty());
        assert_eq!(
            status(t.ping(u, 10, Timestamp(I + 4 * I))),
            Some(PresenceStatus::Online),
            "a ping revives"
        );
        let tick = t.tick(Timestamp(I + 4 * I + 5 * I));
        assert_eq!(tick.expired, [10], "5 missed: the connection expires");
        assert_eq!(tick.changes[0].presence.status, PresenceStatus::Offline);
        assert_eq!(t.get(u).status, PresenceStatus::Offline);
    }

    #[test]
    fn any_live_connection_keeps_a_user_online() {
        let mut t = Tracker::new(Duration::from_millis(I as u64));
        let u = Id(1);
        t.connected(u, 1, Timestamp(0));
        assert_eq!(t.connected(u, 2, Timestamp(0)), None);
        t.ping(u, 2, Timestamp(3 * I));
        let tick = t.tick(Timestamp(5 * I));
        assert_eq!(tick.expired, [1]);
        assert!(
            tick.changes.is_empty(),
            "connection 2 is fresh: still online"
        );
        assert_eq!(t.get(u).status, PresenceStatus::Online);
    }

    #[test]
    fn the_last_clean_close_is_offline_at_once() {
        let mut t = Tracker::new(Duration::from_millis(I as u64));
        let u = Id(1);
        t.connected(u, 1, Timestamp(0));
        t.connected(u, 2, Timestamp(0));
        assert_eq!(t.disconnected(u, 1, Timestamp(10)), None);
        assert_eq!(
            status(t.disconnected(u, 2, Timestamp(20))),
            Some(PresenceStatus::Offline)
        );
        assert_eq!(t.disconnected(u, 2, Timestamp(30)), None, "already gone");
    }
}
