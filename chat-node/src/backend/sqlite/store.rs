//! [`SqliteStore`]: every Store trait on one SQLite database. The directory tables are
//! [`SqlStore`]'s shared code; the messages ([`SqliteMessages`]) live in the same file.

use async_trait::async_trait;
use parley_protocol::{Id, Timestamp};
use sqlx::{AssertSqlSafe, Sqlite};

use super::{Database, err};
use crate::backend::sql::rows::MESSAGE_COLUMNS;
use crate::backend::sql::{MessageRows, SqlStore};
use crate::backend::{BackendError, HighWater, MessageStore, OwnerTerm, Page, StoredMessage};

type R<T> = Result<T, BackendError>;

/// The embedded Store: directory tables and messages in one SQLite database.
pub type SqliteStore = SqlStore<Sqlite, SqliteMessages>;

impl SqlStore<Sqlite, SqliteMessages> {
    /// The Store on `db` (its message batches go through `db`'s writer thread).
    pub fn new(db: Database) -> Self {
        Self::from_parts(db.pool().clone(), SqliteMessages { db })
    }

    /// The latest `created_at` among the 1000 messages with the highest IDs (`None`: no
    /// message): an upper bound of when any stored message was made, as IDs grow with the
    /// clock they are taken from just before `created_at` (snowflake.rs). Walks
    /// `messages_by_id` from its end and reads those 1000 rows, not the whole table.
    pub async fn newest_message_at(&self) -> R<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(created_at) FROM (SELECT created_at FROM messages ORDER BY id DESC LIMIT 1000)",
        )
        .fetch_one(self.messages.db.pool())
        .await
        .map_err(err)?;
        Ok(at.map(Timestamp))
    }
}

/// Table `messages` of the SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteMessages {
    db: Database,
}

impl SqliteMessages {
    fn rows(&self) -> MessageRows<'_, Sqlite> {
        MessageRows(self.db.pool())
    }
}

#[async_trait]
impl MessageStore for SqliteMessages {
    async fn write_batch(&self, batch: &[StoredMessage], terms: &[(Id, OwnerTerm)]) -> R<u64> {
        if batch.is_empty() && terms.is_empty() {
            return Ok(0);
        }
        // On the writer thread: one transaction, each row a statement run there.
        self.db.writer().store(batch.to_vec(), terms.to_vec()).await
    }

    async fn channel_terms(&self, channels: &[Id]) -> R<Vec<(Id, OwnerTerm)>> {
        self.rows().channel_terms(channels).await
    }

    async fn message(&self, channel: Id, id: Id) -> R<Option<StoredMessage>> {
        self.rows().message(channel, id).await
    }

    async fn history(&self, channel: Id, page: Page) -> R<Vec<StoredMessage>> {
        self.rows().history(channel, page).await
    }

    async fn messages_after(
        &self,
        channels: &[Id],
        after: Id,
        limit: u32,
    ) -> R<Vec<StoredMessage>> {
        self.rows().after(channels, after, limit).await
    }

    async fn by_client_msg_id(
        &self,
        author: Id,
        client_msg_id: &str,
        since: Timestamp,
    ) -> R<Option<StoredMessage>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE author_id = $1 AND client_msg_id = $2 AND created_at >= $3 ORDER BY id LIMIT 1"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(author)
            .bind(client_msg_id)
            .bind(since)
            .fetch_optional(self.db.pool())
            .await
            .map_err(err)
    }

    async fn high_water(&self, channels: &[Id]) -> R<Vec<(Id, HighWater)>> {
        self.rows().high_water(channels).await
    }
}
