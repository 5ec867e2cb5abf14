//! [`RedisFencing`]: the owner terms of a ring's channels in Redis, one hash per channel,
//! `parley:<namespace>:owner:<channel>` with fields `gen` (the last generation reserved)
//! and `term` (the term in force). Reserve, establish and a send's confirmed publish are Lua
//! scripts (EVALSHA), so each is one atomic step (Redis runs a script with nothing in
//! between: <https://redis.io/docs/latest/develop/interact/programmability/eval-intro/>);
//! confirm alone is one `HMGET`. The hash expires [`KEY_TTL`] after the last
//! take-over: an expired or lost hash only makes every owner's confirm fail (each takes its
//! channels over again, its reserve starting above Redis' clock in microseconds and the
//! store's generation), it never lets two owners pass. What Redis must not do is go back
//! to an older state (a restart from an old snapshot): see docs/reliability.md.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley_protocol::Id;
use redis::aio::ConnectionManager;

use crate::backend::{PubSub, Topic};
use crate::chat::fencing::{Fencing, OwnerTerm, fenced, superseded};
use crate::error::ApiError;

/// How long a channel's hash lives after its last take-over.
const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Seed a missing `gen` with Redis' clock in microseconds (`TIME`), raise `gen` to the
/// floor (`ARGV[2]`) if below, `HINCRBY gen 1` and renew the expiry; returns the new
/// generation.
///
/// The seed: a hash that expired or that Redis lost (a restart with no persistence) starts
/// above every generation handed out before, in flight ones included (a take-over that
/// reserved but whose fence is not in the log yet, so not under the store's floor): each of
/// those is at most its hash's seed plus one per reserve since, below the clock of the
/// moment it was reserved. So the fence of such a take-over, landing late, is passed over by
/// the persisters instead of deposing the new owner. This holds as long as Redis' clock does
/// not go back across the loss. (Microseconds since 1970 are about 1.8e15, exact in Lua's
/// doubles, below 2^53; the values are stored as their own strings, so `gen` stays exact.)
const RESERVE: &str = r"
local held = redis.call('HGET', KEYS[1], 'gen')
if not held then
  local now = redis.call('TIME')
  held = now[1] .. string.format('%06d', tonumber(now[2]))
  redis.call('HSET', KEYS[1], 'gen', held)
end
if tonumber(ARGV[2]) > tonumber(held) then
  redis.call('HSET', KEYS[1], 'gen', ARGV[2])
end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return gen
";

/// `HSET term` if `gen` is still the latest reserved; returns 1 if it was, else 0.
const ESTABLISH: &str = r"
if redis.call('HGET', KEYS[1], 'gen') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'term', ARGV[2])
  return 1
end
return 0
";

/// `PUBLISH ARGV[3] ARGV[4]` if `gen` and `term` are still `ARGV[1]` and `ARGV[2]`;
/// returns 1 if they were, else 0. The channel (`ARGV[3]`) is a pub/sub channel, not a key.
const PUBLISH_CONFIRMED: &str = r"
local held = redis.call('HMGET', KEYS[1], 'gen', 'term')
if held[1] == ARGV[1] and held[2] == ARGV[2] then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
";

/// Owner terms in Redis, for a node of a ring.
#[derive(Clone)]
pub struct RedisFencing {
    redis: ConnectionManager,
    namespace: String,
    reserve: redis::Script,
    establish: redis::Script,
    publish_confirmed: redis::Script,
}

impl std::fmt::Debug for RedisFencing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFencing")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisFencing {
    /// Terms under `parley:<namespace>:owner:*` (the namespace of the ring's leases) over
    /// `redis`.
    pub fn new(redis: ConnectionManager, namespace: &str) -> Self {
        Self {
            redis,
            namespace: namespace.to_owned(),
            reserve: redis::Script::new(RESERVE),
            establish: redis::Script::new(ESTABLISH),
            publish_confirmed: redis::Script::new(PUBLISH_CONFIRMED),
        }
    }

    fn key(&self, channel: Id) -> String {
        format!("parley:{}:owner:{channel}", self.namespace)
    }
}

fn unreachable(e: &redis::RedisError) -> ApiError {
    ApiError::unavailable(format!("the owner terms cannot be read or written: {e}"))
}

#[async_trait]
impl Fencing for RedisFencing {
    fn fences(&self) -> bool {
        true
    }

    async fn reserve(&self, channel: Id, floor: u64) -> Result<u64, ApiError> {
        let ttl_ms = u64::try_from(KEY_TTL.as_millis()).unwrap_or(u64::MAX);
        self.reserve
            .key(self.key(channel))
            .arg(ttl_ms)
            .arg(floor)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| unreachable(&e))
    }

    async fn establish(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        let done: i64 = self
            .establish
            .key(self.key(channel))
            .arg(term.generation)
            .arg(term.term)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| unreachable(&e))?;
        if done == 1 {
            Ok(())
        } else {
            Err(superseded(channel))
        }
    }

    async fn confirm(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        let (generation, held): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.key(channel))
            .arg("gen")
            .arg("term")
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| unreachable(&e))?;
        if generation == Some(term.generation) && held == Some(term.term) {
            Ok(())
        } else {
            Err(fenced(channel))
        }
    }

    /// One script: the confirm and the `PUBLISH` on the same Redis the node's pub/sub uses
    /// (`topic`'s name is the Redis channel, as `backend::redis::RedisPubSub` publishes
    /// it); `_pubsub` is not used.
    async fn publish_confirmed(
        &self,
        channel: Id,
        term: OwnerTerm,
        topic: Topic,
        payload: Bytes,
        _pubsub: &dyn PubSub,
    ) -> Result<(), ApiError> {
        let done: i64 = self
            .publish_confirmed
            .key(self.key(channel))
            .arg(term.generation)
            .arg(term.term)
            .arg(topic.to_string())
            .arg(&payload[..])
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| unreachable(&e))?;
        if done == 1 {
            Ok(())
        } else {
            Err(fenced(channel))
        }
    }
}
