//! [`SqliteStore`]: every Store trait on one SQLite database. The directory tables are
//! [`SqlStore`]'s shared code; the messages ([`SqliteMessages`]) live in the same file.

use async_trait::async_trait;
use parley_protocol::{Id, Timestamp};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Sqlite};

use super::{Database, err};
use crate::backend::sql::rows::MESSAGE_COLUMNS;
use crate::backend::sql::{MessageRows, SqlStore, Unsigned};
use crate::backend::{BackendError, HighWater, MessageStore, OwnerTerm, Page, StoredMessage};

type R<T> = Result<T, BackendError>;

/// Messages one `INSERT` of [`SqliteMessages::write_batch`] carries.
const MESSAGES_PER_INSERT: usize = 1000;

/// The embedded Store: directory tables and messages in one SQLite database.
pub type SqliteStore = SqlStore<Sqlite, SqliteMessages>;

impl SqlStore<Sqlite, SqliteMessages> {
    /// The Store on `db` (its message batches take `db`'s write lock).
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

/// Inserts `messages` with one statement (10 bound parameters a row, under SQLite's 32766
/// for up to [`MESSAGES_PER_INSERT`] rows), skipping those already stored; how many it
/// inserted.
async fn insert_messages<'e, E>(executor: E, messages: &[StoredMessage]) -> R<u64>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let sql = super::multi_row_sql(
        "INSERT INTO messages (channel_id, id, seq, author_id, text, client_msg_id, \
         attachments, reply_to, created_at, moderated)",
        10,
        messages.len(),
        " ON CONFLICT DO NOTHING",
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for m in messages {
        q = q
            .bind(m.channel_id)
            .bind(m.id)
            .bind(Unsigned(m.seq))
            .bind(m.author_id)
            .bind(&m.text)
            .bind(&m.client_msg_id)
            .bind(Json(&m.attachments))
            .bind(m.reply_to)
            .bind(m.created_at)
            .bind(m.moderated);
    }
    Ok(q.execute(executor).await.map_err(err)?.rows_affected())
}

#[async_trait]
impl MessageStore for SqliteMessages {
    async fn write_batch(&self, batch: &[StoredMessage], terms: &[(Id, OwnerTerm)]) -> R<u64> {
        if batch.is_empty() && terms.is_empty() {
            return Ok(0);
        }
        let _lock = self.db.write_lock().await;
        // One statement per chunk, not per message: each statement is a round trip to the
        // connection's worker thread while the write lock is held (and the log's appends
        // wait for it). A batch of one chunk and no terms (every batch of a steady trickle
        // of sends) is one statement, atomic on its own: no `BEGIN`/`COMMIT` round trips.
        if batch.len() <= MESSAGES_PER_INSERT && terms.is_empty() {
            return insert_messages(self.db.pool(), batch).await;
        }
        let mut tx = self.db.pool().begin().await.map_err(err)?;
        let mut inserted = 0;
        for chunk in batch.chunks(MESSAGES_PER_INSERT) {
            inserted += insert_messages(&mut *tx, chunk).await?;
        }
        for (channel, term) in terms {
            sqlx::query(
                "INSERT INTO channel_terms (channel_id, generation, term) VALUES ($1, $2, $3) \
                 ON CONFLICT (channel_id) DO UPDATE \
                 SET generation = excluded.generation, term = excluded.term \
                 WHERE (excluded.generation, excluded.term) > (generation, term)",
            )
            .bind(*channel)
            .bind(Unsigned(term.generation))
            .bind(Unsigned(term.term))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(inserted)
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
