//! The message reads of one database ([`MessageRows`]), which SQLite runs on its file and
//! PostgreSQL on each shard; and [`SqlStore`]'s `MessageStore`, which is its `M`'s.

use async_trait::async_trait;
use parley_protocol::{Id, Timestamp};
use sqlx::{AssertSqlSafe, Encode, Executor, FromRow, Pool, Type};

use super::error::backend_error;
use super::rows::{ChannelTerm, LastSeq, MESSAGE_COLUMNS};
use super::{Dialect, IdList, SqlStore};
use crate::backend::{BackendError, HighWater, MessageStore, OwnerTerm, Page, StoredMessage};

type R<T> = Result<T, BackendError>;

/// Reads of table `messages` on one database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageRows<'a, DB: sqlx::Database>(pub &'a Pool<DB>);

impl<DB> MessageRows<'_, DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> IdList<'q>: Encode<'q, DB> + Type<DB>,
    for<'r> StoredMessage: FromRow<'r, DB::Row>,
    for<'r> LastSeq: FromRow<'r, DB::Row>,
    for<'r> ChannelTerm: FromRow<'r, DB::Row>,
{
    /// Message `id` of `channel`.
    pub(crate) async fn message(self, channel: Id, id: Id) -> R<Option<StoredMessage>> {
        let sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = $1 AND id = $2");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(channel)
            .bind(id)
            .fetch_optional(self.0)
            .await
            .map_err(backend_error::<DB>)
    }

    /// A page of `channel`'s history, in the page's order.
    pub(crate) async fn history(self, channel: Id, page: Page) -> R<Vec<StoredMessage>> {
        let (clause, bound, order) = match page {
            Page::Latest { .. } => ("", None, "DESC"),
            Page::Before { id, .. } => ("AND id < $3", Some(id), "DESC"),
            Page::After { id, .. } => ("AND id > $3", Some(id), "ASC"),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = $1 {clause} \
             ORDER BY id {order} LIMIT $2"
        );
        let mut q = sqlx::query_as(AssertSqlSafe(sql))
            .bind(channel)
            .bind(i64::from(page.limit()));
        if let Some(b) = bound {
            q = q.bind(b);
        }
        q.fetch_all(self.0).await.map_err(backend_error::<DB>)
    }

    /// Messages of `channels` with id > `after`, oldest first, at most `limit`.
    pub(crate) async fn after(
        self,
        channels: &[Id],
        after: Id,
        limit: u32,
    ) -> R<Vec<StoredMessage>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE {} AND id > $2 ORDER BY id ASC LIMIT $3",
            DB::in_ids("channel_id", 1)
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(IdList(channels))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.0)
            .await
            .map_err(backend_error::<DB>)
    }

    /// The highest seq and the highest ID of each of `channels` that has messages.
    pub(crate) async fn high_water(self, channels: &[Id]) -> R<Vec<(Id, HighWater)>> {
        let sql = format!(
            "SELECT channel_id, MAX(seq) AS seq, MAX(id) AS id FROM messages WHERE {} \
             GROUP BY channel_id",
            DB::in_ids("channel_id", 1)
        );
        let rows: Vec<LastSeq> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(IdList(channels))
            .fetch_all(self.0)
            .await
            .map_err(backend_error::<DB>)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.channel_id,
                    HighWater {
                        seq: r.seq,
                        id: r.id,
                    },
                )
            })
            .collect())
    }

    /// The stored owner term of each of `channels` that has one.
    pub(crate) async fn channel_terms(self, channels: &[Id]) -> R<Vec<(Id, OwnerTerm)>> {
        let sql = format!(
            "SELECT channel_id, generation, term FROM channel_terms WHERE {}",
            DB::in_ids("channel_id", 1)
        );
        let rows: Vec<ChannelTerm> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(IdList(channels))
            .fetch_all(self.0)
            .await
            .map_err(backend_error::<DB>)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.channel_id,
                    OwnerTerm {
                        generation: r.generation,
                        term: r.term,
                    },
                )
            })
            .collect())
    }
}

#[async_trait]
impl<DB: sqlx::Database, M: MessageStore> MessageStore for SqlStore<DB, M> {
    async fn write_batch(&self, batch: &[StoredMessage], terms: &[(Id, OwnerTerm)]) -> R<u64> {
        self.messages.write_batch(batch, terms).await
    }

    async fn channel_terms(&self, channels: &[Id]) -> R<Vec<(Id, OwnerTerm)>> {
        self.messages.channel_terms(channels).await
    }

    async fn message(&self, channel: Id, id: Id) -> R<Option<StoredMessage>> {
        self.messages.message(channel, id).await
    }

    async fn history(&self, channel: Id, page: Page) -> R<Vec<StoredMessage>> {
        self.messages.history(channel, page).await
    }

    async fn messages_after(
        &self,
        channels: &[Id],
        after: Id,
        limit: u32,
    ) -> R<Vec<StoredMessage>> {
        self.messages.messages_after(channels, after, limit).await
    }

    async fn by_client_msg_id(
        &self,
        author: Id,
        client_msg_id: &str,
        since: Timestamp,
    ) -> R<Option<StoredMessage>> {
        self.messages
            .by_client_msg_id(author, client_msg_id, since)
            .await
    }

    async fn high_water(&self, channels: &[Id]) -> R<Vec<(Id, HighWater)>> {
        self.messages.high_water(channels).await
    }
}
