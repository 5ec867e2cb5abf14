//! Presence in Redis, for a cluster: every live connection keeps two keys with TTLs,
//! refreshed by its pings: a *hot* key (3 heartbeat intervals: the user is online) and a
//! *live* key (5 intervals: the connection exists). A user's status is computed atomically
//! by a Lua script that also remembers the last status, so each change is announced by
//! exactly one node. Expiry notifications (`notify-keyspace-events Ex`) drive idle and
//! offline for connections whose node stopped pinging or died.

use std::time::Duration;

use parley_protocol::{Id, Presence, PresenceStatus, Timestamp};
use redis::aio::ConnectionManager;

use super::BackendError;
use super::redis::err;

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

/// What an expired presence key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub user: Id,
    pub node: String,
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

    /// Parses an expired key of this namespace.
    pub fn parse_expired(&self, key: &str) -> Option<Expired> {
        parse_expired(&self.prefix, key)
    }

    pub fn node(&self) -> &str {
        &self.node
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
    pub async fn heartbeat(
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
    pub async fn remove(&self, user: Id, conn: u64) -> Result<Option<Presence>, BackendError> {
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
    pub async fn changed(&self, user: Id) -> Result<Option<Presence>, BackendError> {
        match self.evaluate(user).await? {
            Some(status) => Ok(Some(self.presence(user, status).await?)),
            None => Ok(None),
        }
    }

    /// Presence of `users`.
    pub async fn get(&self, users: &[Id]) -> Result<Vec<Presence>, BackendError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
