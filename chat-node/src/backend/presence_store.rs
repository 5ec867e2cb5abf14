//! Where users' presence statuses live: the [`PresenceStore`] port, with [`MemoryPresence`]
//! (one node is the whole cluster) and [`RedisPresence`] (shared by the nodes).
//!
//! ```text
//!   ws session ─ hello / ping / close ─► chat::Presence ─► PresenceStore ─► changed status?
//!                                                                            └─► announced
//!   MemoryPresence: heartbeat::Tracker in this process; expire() finds idle and offline
//!   RedisPresence:  keys with TTLs; key-expiry notifications ─► reevaluate(user)
//! ```
//!
//! In Redis every live connection keeps two keys with TTLs, refreshed by its pings: a *hot*
//! key (3 heartbeat intervals: the user is online) and a *live* key (5 intervals: the
//! connection exists). A user's status is computed atomically by a Lua script that also
//! remembers the last status, so each change is announced by exactly one node. Expiry
//! notifications (`notify-keyspace-events Ex`) drive idle and offline for connections whose
//! node stopped pinging or died.

use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use parley_protocol::{Id, Presence, PresenceStatus, Timestamp};
use redis::aio::ConnectionManager;

use super::BackendError;
use super::redis::err;
use crate::heartbeat::Tracker;

/// A connection on a node (`hub::ConnId`).
pub type ConnId = u64;

/// Users' statuses. Every call that changes a user's status returns the new presence, once
/// across the cluster, for the caller to announce.
#[async_trait]
pub trait PresenceStore: Send + Sync + std::fmt::Debug {
    /// Connection `conn` of `user` said hello at `now`.
    async fn connect(
        &self,
        user: Id,
        conn: ConnId,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError>;

    /// Connection `conn` of `user` pinged at `now` (a connection this store does not know,
    /// or no longer does, is ignored by the memory store and written back by Redis's).
    async fn heartbeat(
        &self,
        user: Id,
        conn: ConnId,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError>;

    /// Connection `conn` of `user` closed.
    async fn disconnect(
        &self,
        user: Id,
        conn: ConnId,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError>;

    /// The statuses that time alone changed up to `now` (missed heartbeats), each once.
    /// Redis finds none here: its keys expire by themselves ([`PresenceStore::reevaluate`]).
    async fn expire(&self, now: Timestamp) -> Result<Vec<Presence>, BackendError>;

    /// Re-evaluates `user` at `now` (one of their keys expired); the presence if it changed.
    async fn reevaluate(&self, user: Id, now: Timestamp) -> Result<Option<Presence>, BackendError>;

    /// The presence of `users`, in their order (`offline` for anyone unknown).
    async fn get(&self, users: &[Id]) -> Result<Vec<Presence>, BackendError>;
}

/// Presence of an embedded node: a [`Tracker`] in memory.
#[derive(Debug)]
pub struct MemoryPresence {
    tracker: Mutex<Tracker>,
}

impl MemoryPresence {
    /// Statuses by missed heartbeats of `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            tracker: Mutex::new(Tracker::new(interval)),
        }
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn connect(
        &self,
        user: Id,
        conn: ConnId,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError> {
        Ok(self
            .tracker
            .lock()
            .connected(user, conn, now)
            .map(|c| c.presence))
    }

    async fn heartbeat(
        &self,
        user: Id,
        conn: ConnId,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError> {
        Ok(self
            .tracker
            .lock()
            .ping(user, conn, now)
            .map(|c| c.presence))
    }

    async fn disconnect(
        &self,
        user: Id,
        conn: ConnId,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError> {
        Ok(self
            .tracker
            .lock()
            .disconnected(user, conn, now)
            .map(|c| c.presence))
    }

    async fn expire(&self, now: Timestamp) -> Result<Vec<Presence>, BackendError> {
        let tick = self.tracker.lock().tick(now);
        Ok(tick.changes.into_iter().map(|c| c.presence).collect())
    }

    async fn reevaluate(&self, user: Id, now: Timestamp) -> Result<Option<Presence>, BackendError> {
        Ok(self.tracker.lock().evaluate(user, now).map(|c| c.presence))
    }

    async fn get(&self, users: &[Id]) -> Result<Vec<Presence>, BackendError> {
        let tracker = self.tracker.lock();
        Ok(users.iter().map(|u| tracker.get(*u)).collect())
    }
}

const STATUS_SCRIPT: &str = r"
local p, u = ARGV[1], ARGV[2]
local set = p .. 'pu:' .. u
local status = 'offline'
for _, m in ipairs(redis.call('SMEMBERS', set)) do
  if redis.call('EXISTS', p .. 'pl:' .. u .. ':' .. m) == 0 then
    redis.call('SREM', set, m)
  elseif redis.call('EXISTS', p .. 'ph:' .. u .. ':' .. m) == 1 then
    status = 'online'
  elseif status == 'offline' then
    status = 'idle'
  end
end
local key = p .. 'ps:' .. u
local prev = redis.call('GET', key) or 'offline'
if prev == status then return false end
if status == 'offline' then redis.call('DEL', key) else redis.call('SET', key, status) end
return status
";

/// What an expired key means to the node that saw it expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Whose status to re-evaluate.
    pub user: Id,
    /// This node's connection whose live key expired: close it (4002).
    pub gone: Option<ConnId>,
}

/// What an expired presence key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Whose key it was.
    pub user: Id,
    /// The node the connection was on.
    pub node: String,
    /// The connection, on that node.
    pub conn: u64,
    /// The live key expired (the connection is gone), not only the hot one (idle).
    pub live: bool,
}

fn parse_expired(prefix: &str, key: &str) -> Option<Expired> {
    let rest = key.strip_prefix(prefix)?;
    let (kind, rest) = rest.split_once(':')?;
    let live = match kind {
        "pl" => true,
        "ph" => false,
        _ => return None,
    };
    let mut parts = rest.splitn(2, ':');
    let user = parts.next()?.parse().ok()?;
    let (node, conn) = parts.next()?.rsplit_once(':')?;
    Some(Expired {
        user,
        node: node.to_owned(),
        conn: conn.parse().ok()?,
        live,
    })
}

/// Presence of a cluster, in Redis.
#[derive(Clone)]
pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    node: String,
    interval: Duration,
    script: redis::Script,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish()
    }
}

fn status_of(s: &str) -> PresenceStatus {
    match s {
        "online" => PresenceStatus::Online,
        "idle" => PresenceStatus::Idle,
        _ => PresenceStatus::Offline,
    }
}

impl RedisPresence {
    /// `namespace` separates clusters sharing a Redis; `node` names this node.
    pub fn new(conn: ConnectionManager, namespace: &str, node: &str, interval: Duration) -> Self {
        Self {
            conn,
            prefix: format!("parley:{namespace}:"),
            node: node.to_owned(),
            interval,
            script: redis::Script::new(STATUS_SCRIPT),
        }
    }

    fn member(&self, conn: u64) -> String {
        format!("{}:{conn}", self.node)
    }

    /// What the expiry of `key` means to this node; `None` for a key that is not a presence
    /// key of this namespace.
    pub fn expiry(&self, key: &str) -> Option<Expiry> {
        let e = parse_expired(&self.prefix, key)?;
        Some(Expiry {
            user: e.user,
            gone: (e.live && e.node == self.node).then_some(e.conn),
        })
    }

    async fn evaluate(&self, user: Id) -> Result<Option<PresenceStatus>, BackendError> {
        let mut conn = self.conn.clone();
        let changed: Option<String> = self
            .script
            .arg(&self.prefix)
            .arg(user.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err(&e))?;
        Ok(changed.as_deref().map(status_of))
    }

    async fn presence(&self, user: Id, status: PresenceStatus) -> Result<Presence, BackendError> {
        let mut conn = self.conn.clone();
        let seen: Option<i64> = redis::cmd("GET")
            .arg(format!("{}pseen:{user}", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(|e| err(&e))?;
        Ok(Presence {
            user_id: user,
            status,
            last_seen: seen.map(Timestamp),
        })
    }

    /// A ping (or the hello) of connection `conn`: refreshes its keys. Returns the user's
    /// presence if this call changed it.
    async fn refresh(
        &self,
        user: Id,
        conn: u64,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError> {
        let member = self.member(conn);
        let ms = self.interval.as_millis() as u64;
        let mut c = self.conn.clone();
        redis::pipe()
            .cmd("SET")
            .arg(format!("{}ph:{user}:{member}", self.prefix))
            .arg(1)
            .arg("PX")
            .arg(3 * ms)
            .ignore()
            .cmd("SET")
            .arg(format!("{}pl:{user}:{member}", self.prefix))
            .arg(1)
            .arg("PX")
            .arg(5 * ms)
            .ignore()
            .cmd("SADD")
            .arg(format!("{}pu:{user}", self.prefix))
            .arg(&member)
            .ignore()
            .cmd("SET")
            .arg(format!("{}pseen:{user}", self.prefix))
            .arg(now.0)
            .arg("PX")
            .arg(30 * 24 * 3600 * 1000u64)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| err(&e))?;
        self.changed(user).await
    }

    /// Connection `conn` closed.
    async fn remove(&self, user: Id, conn: u64) -> Result<Option<Presence>, BackendError> {
        let member = self.member(conn);
        let mut c = self.conn.clone();
        redis::pipe()
            .cmd("DEL")
            .arg(format!("{}ph:{user}:{member}", self.prefix))
            .ignore()
            .cmd("DEL")
            .arg(format!("{}pl:{user}:{member}", self.prefix))
            .ignore()
            .cmd("SREM")
            .arg(format!("{}pu:{user}", self.prefix))
            .arg(&member)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| err(&e))?;
        self.changed(user).await
    }

    /// Re-evaluates `user` (after an expiry); the presence if it changed.
    async fn changed(&self, user: Id) -> Result<Option<Presence>, BackendError> {
        match self.evaluate(user).await? {
            Some(status) => Ok(Some(self.presence(user, status).await?)),
            None => Ok(None),
        }
    }

    /// Presence of `users`.
    async fn statuses(&self, users: &[Id]) -> Result<Vec<Presence>, BackendError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let status_keys: Vec<String> = users
            .iter()
            .map(|u| format!("{}ps:{u}", self.prefix))
            .collect();
        let seen_keys: Vec<String> = users
            .iter()
            .map(|u| format!("{}pseen:{u}", self.prefix))
            .collect();
        let (statuses, seen): (Vec<Option<String>>, Vec<Option<i64>>) = redis::pipe()
            .cmd("MGET")
            .arg(&status_keys)
            .cmd("MGET")
            .arg(&seen_keys)
            .query_async(&mut c)
            .await
            .map_err(|e| err(&e))?;
        Ok(users
            .iter()
            .zip(statuses.into_iter().zip(seen))
            .map(|(u, (s, seen))| Presence {
                user_id: *u,
                status: s.as_deref().map_or(PresenceStatus::Offline, status_of),
                last_seen: seen.map(Timestamp),
            })
            .collect())
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn connect(
        &self,
        user: Id,
        conn: ConnId,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError> {
        self.refresh(user, conn, now).await
    }

    async fn heartbeat(
        &self,
        user: Id,
        conn: ConnId,
        now: Timestamp,
    ) -> Result<Option<Presence>, BackendError> {
        self.refresh(user, conn, now).await
    }

    async fn disconnect(
        &self,
        user: Id,
        conn: ConnId,
        _now: Timestamp,
    ) -> Result<Option<Presence>, BackendError> {
        self.remove(user, conn).await
    }

    async fn expire(&self, _now: Timestamp) -> Result<Vec<Presence>, BackendError> {
        Ok(Vec::new())
    }

    async fn reevaluate(
        &self,
        user: Id,
        _now: Timestamp,
    ) -> Result<Option<Presence>, BackendError> {
        self.changed(user).await
    }

    async fn get(&self, users: &[Id]) -> Result<Vec<Presence>, BackendError> {
        self.statuses(users).await
    }
}

/// The behaviour every [`PresenceStore`] shares, over two connections of one user and a
/// stranger, starting at `now` (heartbeats within one interval of it). `first` and
/// `first + 1` must be users the store has never seen.
#[cfg(any(test, feature = "conformance"))]
pub async fn presence_suite(store: &dyn PresenceStore, first: Id, now: Timestamp) {
    let (user, stranger) = (first, Id(first.0 + 1));
    let at = |ms: i64| Timestamp(now.0 + ms);
    let status = |p: &Option<Presence>| p.as_ref().map(|p| p.status);
    let offline = store.get(&[user, stranger]).await.unwrap();
    assert!(
        offline
            .iter()
            .all(|p| p.status == PresenceStatus::Offline && p.last_seen.is_none()),
        "unknown users are offline, never seen: {offline:?}"
    );

    let hello = store.connect(user, 1, at(0)).await.unwrap();
    assert_eq!(status(&hello), Some(PresenceStatus::Online));
    assert_eq!(
        hello.as_ref().map(|p| (p.user_id, p.last_seen)),
        Some((user, Some(at(0))))
    );
    assert_eq!(
        store.connect(user, 2, at(1)).await.unwrap(),
        None,
        "already online"
    );
    assert_eq!(store.heartbeat(user, 1, at(2)).await.unwrap(), None);
    assert_eq!(
        store.reevaluate(user, at(3)).await.unwrap(),
        None,
        "nothing changed"
    );
    assert_eq!(
        store.expire(at(3)).await.unwrap(),
        Vec::new(),
        "nobody missed a beat"
    );

    let got = store.get(&[stranger, user]).await.unwrap();
    assert_eq!(
        got.iter().map(|p| p.user_id).collect::<Vec<_>>(),
        [stranger, user]
    );
    assert_eq!(got[0].status, PresenceStatus::Offline);
    assert_eq!(
        (got[1].status, got[1].last_seen),
        (PresenceStatus::Online, Some(at(2)))
    );

    assert_eq!(
        store.disconnect(stranger, 9, at(4)).await.unwrap(),
        None,
        "no such connection"
    );
    assert_eq!(
        store.disconnect(user, 1, at(4)).await.unwrap(),
        None,
        "one connection left"
    );
    let gone = store.disconnect(user, 2, at(5)).await.unwrap();
    assert_eq!(
        status(&gone),
        Some(PresenceStatus::Offline),
        "the last one closed"
    );
    assert_eq!(
        store.disconnect(user, 2, at(6)).await.unwrap(),
        None,
        "already offline"
    );
    assert_eq!(
        store.get(&[user]).await.unwrap()[0].status,
        PresenceStatus::Offline
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_presence_passes_the_presence_suite() {
        let store = MemoryPresence::new(Duration::from_secs(10));
        presence_suite(&store, Id(100), Timestamp(1_000_000)).await;
    }

    #[tokio::test]
    async fn memory_presence_goes_idle_then_offline_with_missed_heartbeats() {
        let store = MemoryPresence::new(Duration::from_secs(1));
        store.connect(Id(1), 7, Timestamp(0)).await.unwrap();
        let idle = store.expire(Timestamp(3_000)).await.unwrap();
        assert_eq!(
            idle.iter().map(|p| p.status).collect::<Vec<_>>(),
            [PresenceStatus::Idle]
        );
        let offline = store.expire(Timestamp(5_000)).await.unwrap();
        assert_eq!(offline[0].status, PresenceStatus::Offline);
        assert_eq!(store.expire(Timestamp(6_000)).await.unwrap(), Vec::new());
    }

    #[test]
    fn expired_keys_parse() {
        let p = "parley:alpha:";
        assert_eq!(
            parse_expired(p, "parley:alpha:pl:123:node-1:77"),
            Some(Expired {
                user: Id(123),
                node: "node-1".into(),
                conn: 77,
                live: true
            })
        );
        assert_eq!(
            parse_expired(p, "parley:alpha:ph:5:a:b:9"),
            Some(Expired {
                user: Id(5),
                node: "a:b".into(),
                conn: 9,
                live: false
            })
        );
        assert_eq!(
            parse_expired(p, "parley:beta:pl:1:n:2"),
            None,
            "another cluster"
        );
        assert_eq!(parse_expired(p, "parley:alpha:ps:1"), None);
        assert_eq!(parse_expired(p, "parley:alpha:pl:x:n:2"), None);
    }
}
