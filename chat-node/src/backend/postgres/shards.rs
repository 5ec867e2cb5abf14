//! [`Shards`]: the messages of the distributed Store, on the database of each channel's slot
//! (`hash(channel_id) mod 4096`, parley_crd's [`ShardMap`]). Reads of one shard are
//! [`MessageRows`]' shared code; what spans shards (a batch, `messages_after`,
//! `high_water`, `channel_terms`) is split by shard here and merged. A batch is one
//! transaction per shard: its messages and its channels' raised owner terms commit together.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parley_crd::ShardMap;
use parley_protocol::{Id, Timestamp};
use sqlx::postgres::PgBindIterExt as _;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres};
use url::Url;

use super::directory::{find_send, record_sends};
use super::{BACKEND, ShardSpec, err, pool};
use crate::backend::sql::{MessageRows, Unsigned};
use crate::backend::{BackendError, HighWater, MessageStore, OwnerTerm, Page, StoredMessage};
use crate::secret::Secret;

type R<T> = Result<T, BackendError>;

/// The message shards, and the directory (where the idempotency keys of sends are).
#[derive(Debug, Clone)]
pub struct Shards {
    /// Swapped whole when the shard map changes; each operation uses one snapshot.
    map: Arc<ArcSwap<ShardMap<Shard>>>,
    pool_size: u32,
    directory: PgPool,
}

/// A shard in the map: its name, URL and pool.
#[derive(Debug, Clone)]
struct Shard {
    name: String,
    url: Secret<Url>,
    pool: PgPool,
}

/// Channels grouped by the index of their shard.
fn by_shard(map: &ShardMap<Shard>, channels: &[Id]) -> HashMap<usize, Vec<Id>> {
    let mut groups: HashMap<usize, Vec<Id>> = HashMap::new();
    for c in channels {
        groups.entry(map.index_of(c.get())).or_default().push(*c);
    }
    groups
}

impl Shards {
    /// Pools for every shard (lazily connecting, of `pool_size` connections each).
    pub(super) fn new(shards: &[ShardSpec], pool_size: u32, directory: PgPool) -> R<Self> {
        let map = build_map(shards, pool_size, &[])?;
        Ok(Self {
            map: Arc::new(ArcSwap::from_pointee(map)),
            pool_size,
            directory,
        })
    }

    /// Puts a new shard map in force (pools of unchanged shards are kept). An invalid map
    /// is refused and the current one stays.
    pub(super) fn set(&self, shards: &[ShardSpec]) -> R<()> {
        let current = self.map.load_full();
        let map = build_map(shards, self.pool_size, current.shards())?;
        self.map.store(Arc::new(map));
        Ok(())
    }

    /// The shard map in force (one snapshot per operation).
    fn map(&self) -> Arc<ShardMap<Shard>> {
        self.map.load_full()
    }

    /// Every shard's name and pool.
    pub(super) fn pools(&self) -> Vec<(String, PgPool)> {
        self.map()
            .shards()
            .iter()
            .map(|s| (s.name.clone(), s.pool.clone()))
            .collect()
    }

    /// Runs `SELECT 1` on every shard.
    pub(super) async fn ping(&self) -> R<()> {
        for shard in self.map().shards() {
            sqlx::query("SELECT 1")
                .execute(&shard.pool)
                .await
                .map_err(|e| {
                    BackendError::unavailable(BACKEND, format!("shard {}: {e}", shard.name))
                })?;
        }
        Ok(())
    }
}

/// The map of `shards`, reusing the pools of `reuse` whose name and URL are unchanged.
fn build_map(shards: &[ShardSpec], pool_size: u32, reuse: &[Shard]) -> R<ShardMap<Shard>> {
    let mut parts = Vec::with_capacity(shards.len());
    for s in shards {
        let existing = reuse
            .iter()
            .find(|o| o.name == s.name && o.url == s.url)
            .map(|o| o.pool.clone());
        let pool = match existing {
            Some(p) => p,
            None => pool(s.url.expose().as_str(), pool_size)?,
        };
        let shard = Shard {
            name: s.name.clone(),
            url: s.url.clone(),
            pool,
        };
        parts.push((shard, s.slots.clone()));
    }
    ShardMap::build(parts, |s| s.name.clone())
        .map_err(|e| BackendError::internal(BACKEND, format!("shard map: {e}")))
}

/// What one shard gets of a batch: its messages and its channels' raised terms.
#[derive(Default)]
struct ShardWrite<'a> {
    messages: Vec<&'a StoredMessage>,
    terms: Vec<(Id, OwnerTerm)>,
}

/// `shard`'s error as unavailable, naming the shard.
fn shard_err(shard: &Shard, e: sqlx::Error) -> BackendError {
    match err(e) {
        BackendError::Unavailable { detail, .. } => {
            BackendError::unavailable(BACKEND, format!("shard {}: {detail}", shard.name))
        }
        other => other,
    }
}

/// Writes `w` to `shard` atomically: the messages in one statement and, when terms are
/// raised (never lowered), that statement in the same transaction. Returns how many
/// messages were new.
async fn write_on(shard: &Shard, w: &ShardWrite<'_>) -> R<u64> {
    let messages = &w.messages;
    if w.terms.is_empty() {
        // One statement is atomic by itself: no transaction's round trips.
        let mut conn = shard
            .pool
            .acquire()
            .await
            .map_err(|e| shard_err(shard, e))?;
        return insert_messages(&mut conn, messages)
            .await
            .map_err(|e| shard_err(shard, e));
    }
    let mut tx = shard.pool.begin().await.map_err(|e| shard_err(shard, e))?;
    let mut inserted = 0;
    if !messages.is_empty() {
        inserted = insert_messages(&mut tx, messages)
            .await
            .map_err(|e| shard_err(shard, e))?;
    }
    if !w.terms.is_empty() {
        raise_terms(&mut tx, &w.terms)
            .await
            .map_err(|e| shard_err(shard, e))?;
    }
    tx.commit().await.map_err(|e| shard_err(shard, e))?;
    Ok(inserted)
}

/// Inserts `messages` in one statement; returns how many were new.
async fn insert_messages(
    tx: &mut sqlx::PgConnection,
    messages: &[&StoredMessage],
) -> Result<u64, sqlx::Error> {
    let res = sqlx::query(
        "INSERT INTO messages (channel_id, id, seq, author_id, text, client_msg_id, \
         attachments, reply_to, created_at, moderated) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
         $5::text[], $6::text[], $7::jsonb[], $8::bigint[], $9::bigint[], $10::bool[]) \
         ON CONFLICT (channel_id, id) DO NOTHING",
    )
    .bind(messages.iter().map(|m| m.channel_id).bind_iter())
    .bind(messages.iter().map(|m| m.id).bind_iter())
    .bind(messages.iter().map(|m| Unsigned(m.seq)).bind_iter())
    .bind(messages.iter().map(|m| m.author_id).bind_iter())
    .bind(messages.iter().map(|m| m.text.as_str()).bind_iter())
    .bind(
        messages
            .iter()
            .map(|m| m.client_msg_id.as_deref())
            .bind_iter(),
    )
    .bind(messages.iter().map(|m| Json(&m.attachments)).bind_iter())
    .bind(messages.iter().map(|m| m.reply_to).bind_iter())
    .bind(messages.iter().map(|m| m.created_at).bind_iter())
    .bind(messages.iter().map(|m| m.moderated).bind_iter())
    .execute(tx)
    .await?;
    Ok(res.rows_affected())
}

/// Raises each channel's stored term to at least the one given, in [`OwnerTerm`]'s order
/// (generation, then term; never lowers it).
async fn raise_terms(
    tx: &mut sqlx::PgConnection,
    terms: &[(Id, OwnerTerm)],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO channel_terms (channel_id, generation, term) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) \
         ON CONFLICT (channel_id) DO UPDATE \
         SET generation = excluded.generation, term = excluded.term \
         WHERE (excluded.generation, excluded.term) \
             > (channel_terms.generation, channel_terms.term)",
    )
    .bind(terms.iter().map(|(c, _)| *c).bind_iter())
    .bind(
        terms
            .iter()
            .map(|(_, t)| Unsigned(t.generation))
            .bind_iter(),
    )
    .bind(terms.iter().map(|(_, t)| Unsigned(t.term)).bind_iter())
    .execute(tx)
    .await?;
    Ok(())
}

#[async_trait]
impl MessageStore for Shards {
    async fn write_batch(&self, batch: &[StoredMessage], terms: &[(Id, OwnerTerm)]) -> R<u64> {
        let map = self.map();
        let mut groups: HashMap<usize, ShardWrite<'_>> = HashMap::new();
        for m in batch {
            groups
                .entry(map.index_of(m.channel_id.get()))
                .or_default()
                .messages
                .push(m);
        }
        for (channel, term) in terms {
            groups
                .entry(map.index_of(channel.get()))
                .or_default()
                .terms
                .push((*channel, *term));
        }
        let mut inserted = 0;
        for (index, write) in groups {
            inserted += write_on(&map.shards()[index], &write).await?;
        }
        let keyed: Vec<&StoredMessage> =
            batch.iter().filter(|m| m.client_msg_id.is_some()).collect();
        record_sends(&self.directory, &keyed).await?;
        Ok(inserted)
    }

    async fn channel_terms(&self, channels: &[Id]) -> R<Vec<(Id, OwnerTerm)>> {
        let map = self.map();
        let mut out = Vec::new();
        for (index, group) in by_shard(&map, channels) {
            let pool = &map.shards()[index].pool;
            out.extend(MessageRows(pool).channel_terms(&group).await?);
        }
        Ok(out)
    }

    async fn message(&self, channel: Id, id: Id) -> R<Option<StoredMessage>> {
        let map = self.map();
        MessageRows::<Postgres>(&map.shard_of(channel.get()).pool)
            .message(channel, id)
            .await
    }

    async fn history(&self, channel: Id, page: Page) -> R<Vec<StoredMessage>> {
        let map = self.map();
        MessageRows::<Postgres>(&map.shard_of(channel.get()).pool)
            .history(channel, page)
            .await
    }

    async fn messages_after(
        &self,
        channels: &[Id],
        after: Id,
        limit: u32,
    ) -> R<Vec<StoredMessage>> {
        let map = self.map();
        let mut all = Vec::new();
        for (index, group) in by_shard(&map, channels) {
            let pool = &map.shards()[index].pool;
            all.extend(MessageRows(pool).after(&group, after, limit).await?);
        }
        all.sort_by_key(|m| m.id);
        all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(all)
    }

    async fn by_client_msg_id(
        &self,
        author: Id,
        client_msg_id: &str,
        since: Timestamp,
    ) -> R<Option<StoredMessage>> {
        let Some((channel, message)) =
            find_send(&self.directory, author, client_msg_id, since).await?
        else {
            return Ok(None);
        };
        self.message(channel, message).await
    }

    async fn high_water(&self, channels: &[Id]) -> R<Vec<(Id, HighWater)>> {
        let map = self.map();
        let mut out = Vec::new();
        for (index, group) in by_shard(&map, channels) {
            let pool = &map.shards()[index].pool;
            out.extend(MessageRows(pool).high_water(&group).await?);
        }
        Ok(out)
    }
}
