//! [`PgStore`] and what else lives in the directory database: the idempotency keys of sends
//! and the batched writes of the name-key migration. The directory's Store traits (users,
//! channels, members, read markers, attachments) are [`SqlStore`]'s shared code.

use parley_protocol::{Id, Timestamp};
use sqlx::postgres::PgBindIterExt as _;
use sqlx::{PgPool, Postgres};

use super::shards::Shards;
use super::{ShardSpec, err, ping_pool, pool};
use crate::backend::sql::SqlStore;
use crate::backend::sql::names::NameKeys;
use crate::backend::{BackendError, StoredMessage};

type R<T> = Result<T, BackendError>;

/// The distributed Store: the directory tables on one PostgreSQL database, the messages on
/// the shards ([`Shards`]).
pub type PgStore = SqlStore<Postgres, Shards>;

impl SqlStore<Postgres, Shards> {
    /// Pools for the directory and every shard; nothing is connected yet.
    pub fn new(directory_url: &str, shards: &[ShardSpec], pool_size: u32) -> R<Self> {
        let directory = pool(directory_url, pool_size)?;
        let shards = Shards::new(shards, pool_size, directory.clone())?;
        Ok(Self::from_parts(directory, shards))
    }

    /// Puts a new shard map in force (pools of unchanged shards are kept). An invalid map
    /// is refused and the current one stays.
    pub fn set_shards(&self, shards: &[ShardSpec]) -> R<()> {
        self.messages.set(shards)
    }

    pub fn directory(&self) -> &PgPool {
        &self.directory
    }

    /// Every shard's name and pool.
    pub fn shard_pools(&self) -> Vec<(String, PgPool)> {
        self.messages.pools()
    }

    /// Runs `SELECT 1` on the directory and every shard.
    pub async fn ping(&self) -> R<()> {
        ping_pool(&self.directory).await?;
        self.messages.ping().await
    }
}

/// Records `(author, client_msg_id)` of the messages in `keyed` that carry one, so that a
/// repeated send is recognized on any node ([`find_send`]).
pub(super) async fn record_sends(directory: &PgPool, keyed: &[&StoredMessage]) -> R<()> {
    if keyed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO idempotency_keys (author_id, client_msg_id, message_id, channel_id, \
         created_at) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(keyed.iter().map(|m| m.author_id).bind_iter())
    .bind(
        keyed
            .iter()
            .map(|m| m.client_msg_id.as_deref().unwrap_or_default())
            .bind_iter(),
    )
    .bind(keyed.iter().map(|m| m.id).bind_iter())
    .bind(keyed.iter().map(|m| m.channel_id).bind_iter())
    .bind(keyed.iter().map(|m| m.created_at).bind_iter())
    .execute(directory)
    .await
    .map_err(err)?;
    Ok(())
}

/// The (channel, message) that `author` sent with `client_msg_id` at or after `since`.
pub(super) async fn find_send(
    directory: &PgPool,
    author: Id,
    client_msg_id: &str,
    since: Timestamp,
) -> R<Option<(Id, Id)>> {
    sqlx::query_as(
        "SELECT channel_id, message_id FROM idempotency_keys \
         WHERE author_id = $1 AND client_msg_id = $2 AND created_at >= $3 \
         ORDER BY message_id LIMIT 1",
    )
    .bind(author)
    .bind(client_msg_id)
    .bind(since)
    .fetch_optional(directory)
    .await
    .map_err(err)
}

/// Rows updated by one statement when the name keys are recomputed.
const REKEY_BATCH: usize = 5_000;

/// Recomputes the name keys of every existing row of the directory (migration 0002), in
/// batches of [`REKEY_BATCH`] rows.
pub(super) async fn rekey_names(conn: &mut sqlx::PgConnection) -> Result<(), String> {
    let keys = NameKeys::prepare::<Postgres>(conn).await?;
    for batch in keys.users.chunks(REKEY_BATCH) {
        sqlx::query(
            "UPDATE users u SET username_key = v.k, username_skeleton = v.s \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS v(id, k, s) WHERE u.id = v.id",
        )
        .bind(batch.iter().map(|u| u.id).bind_iter())
        .bind(batch.iter().map(|u| u.key.as_str()).bind_iter())
        .bind(batch.iter().map(|u| u.skeleton.as_deref()).bind_iter())
        .execute(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    }
    for batch in keys.groups.chunks(REKEY_BATCH) {
        sqlx::query(
            "UPDATE channels c SET name_key = v.k \
             FROM UNNEST($1::bigint[], $2::text[]) AS v(id, k) WHERE c.id = v.id",
        )
        .bind(batch.iter().map(|g| g.id).bind_iter())
        .bind(batch.iter().map(|g| g.key.as_str()).bind_iter())
        .execute(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    }
    keys.finish();
    Ok(())
}
