//! [`SqlStore`] and the directory half of the Store, written once for both databases: users,
//! channels, members, read markers and attachments (tables of the one SQLite file, or of the
//! PostgreSQL directory database).
//!
//! Each impl lists the sqlx capabilities it uses (Rust does not carry them from one trait
//! bound): the executors, the values it binds, the rows it reads. `Sqlite` and `Postgres`
//! have them all.

use async_trait::async_trait;
use parley_protocol::{Channel, ChannelKind, Id, Timestamp};
use sqlx::{AssertSqlSafe, Database, Encode, Executor, FromRow, Pool, Type};

use super::error::{backend_error, group_conflict, is_unique_violation, username_conflict};
use super::rows::{ATTACHMENT_COLUMNS, CHANNEL_COLUMNS, ChannelRow, USER_COLUMNS};
use super::{Dialect, IdList, Unsigned};
use crate::backend::{
    AttachmentRecord, BackendError, ChannelStore, MediaStore, MemberStore, ReadMarkerStore,
    UserRecord, UserStore,
};

type R<T> = Result<T, BackendError>;

/// A Store on SQL: the directory tables on `directory`, the messages on `M` (which
/// implements [`MessageStore`](crate::backend::MessageStore)).
pub struct SqlStore<DB: Database, M> {
    pub(in crate::backend) directory: Pool<DB>,
    pub(in crate::backend) messages: M,
}

impl<DB: Database, M> SqlStore<DB, M> {
    pub(in crate::backend) fn from_parts(directory: Pool<DB>, messages: M) -> Self {
        Self {
            directory,
            messages,
        }
    }
}

impl<DB: Database, M: Clone> Clone for SqlStore<DB, M> {
    fn clone(&self) -> Self {
        Self::from_parts(self.directory.clone(), self.messages.clone())
    }
}

impl<DB: Database, M: std::fmt::Debug> std::fmt::Debug for SqlStore<DB, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("directory", &self.directory)
            .field("messages", &self.messages)
            .finish()
    }
}

/// The username or group name key (Unicode NFC + full case folding; `text::name_key`).
fn fold_key(s: &str) -> String {
    crate::text::name_key(s)
}

/// `SELECT` of [`CHANNEL_COLUMNS`] from `channels c` where `clause`.
fn channels_where(clause: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "SELECT {CHANNEL_COLUMNS} FROM channels c WHERE {clause}"
    ))
}

const INSERT_MEMBER: &str =
    "INSERT INTO members (channel_id, user_id, joined_at) VALUES ($1, $2, $3)";

#[async_trait]
impl<DB, M> UserStore for SqlStore<DB, M>
where
    DB: Dialect,
    M: Send + Sync + std::fmt::Debug,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> IdList<'q>: Encode<'q, DB> + Type<DB>,
    for<'r> UserRecord: FromRow<'r, DB::Row>,
{
    async fn create_user(&self, u: &UserRecord) -> R<()> {
        let res = sqlx::query(
            "INSERT INTO users (id, username, username_key, username_skeleton, display_name, \
             password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(u.id)
        .bind(&u.username)
        .bind(fold_key(&u.username))
        .bind(crate::text::confusable_skeleton(&u.username))
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(u.created_at)
        .execute(&self.directory)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(username_conflict(&e, &u.username)),
            Err(e) => Err(backend_error::<DB>(e)),
        }
    }

    async fn user(&self, id: Id) -> R<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.directory)
            .await
            .map_err(backend_error::<DB>)
    }

    async fn user_by_username(&self, username: &str) -> R<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(fold_key(username))
            .fetch_optional(&self.directory)
            .await
            .map_err(backend_error::<DB>)
    }

    async fn users(&self, ids: &[Id]) -> R<Vec<UserRecord>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {}",
            DB::in_ids("id", 1)
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(IdList(ids))
            .fetch_all(&self.directory)
            .await
            .map_err(backend_error::<DB>)
    }
}

#[async_trait]
impl<DB, M> ChannelStore for SqlStore<DB, M>
where
    DB: Dialect,
    M: Send + Sync + std::fmt::Debug,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> ChannelRow: FromRow<'r, DB::Row>,
{
    async fn create_group(&self, id: Id, name: &str, creator: Id, at: Timestamp) -> R<Channel> {
        let mut tx = self.directory.begin().await.map_err(backend_error::<DB>)?;
        let res = sqlx::query(
            "INSERT INTO channels (id, kind, name, name_key, created_by, created_at) \
             VALUES ($1, 'group', $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(name.to_owned())
        .bind(fold_key(name))
        .bind(creator)
        .bind(at)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(group_conflict(name)),
            Err(e) => return Err(backend_error::<DB>(e)),
        }
        sqlx::query(INSERT_MEMBER)
            .bind(id)
            .bind(creator)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(backend_error::<DB>)?;
        tx.commit().await.map_err(backend_error::<DB>)?;
        Ok(Channel {
            id,
            kind: ChannelKind::Group,
            name: Some(name.to_owned()),
            created_by: creator,
            created_at: at,
            member_count: 1,
        })
    }

    async fn channel(&self, id: Id) -> R<Option<Channel>> {
        let row: Option<ChannelRow> = sqlx::query_as(channels_where("c.id = $1"))
            .bind(id)
            .fetch_optional(&self.directory)
            .await
            .map_err(backend_error::<DB>)?;
        Ok(row.map(Channel::from))
    }

    async fn group_by_name(&self, name: &str) -> R<Option<Channel>> {
        let row: Option<ChannelRow> =
            sqlx::query_as(channels_where("c.name_key = $1 AND c.kind = 'group'"))
                .bind(fold_key(name))
                .fetch_optional(&self.directory)
                .await
                .map_err(backend_error::<DB>)?;
        Ok(row.map(Channel::from))
    }

    async fn dm(&self, id: Id, a: Id, b: Id, at: Timestamp) -> R<(Channel, bool)> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let key = format!("{lo}:{hi}");
        let members: &[Id] = if lo == hi { &[lo] } else { &[lo, hi] };
        for _ in 0..3 {
            let found: Option<ChannelRow> = sqlx::query_as(channels_where("c.dm_key = $1"))
                .bind(key.clone())
                .fetch_optional(&self.directory)
                .await
                .map_err(backend_error::<DB>)?;
            if let Some(row) = found {
                return Ok((row.into(), false));
            }
            let mut tx = self.directory.begin().await.map_err(backend_error::<DB>)?;
            let res = sqlx::query(
                "INSERT INTO channels (id, kind, name, dm_key, created_by, created_at) \
                 VALUES ($1, 'dm', NULL, $2, $3, $4)",
            )
            .bind(id)
            .bind(key.clone())
            .bind(a)
            .bind(at)
            .execute(&mut *tx)
            .await;
            match res {
                Ok(_) => {}
                // Someone else created it just now: read theirs.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(backend_error::<DB>(e)),
            }
            for user in members {
                sqlx::query(INSERT_MEMBER)
                    .bind(id)
                    .bind(*user)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend_error::<DB>)?;
            }
            tx.commit().await.map_err(backend_error::<DB>)?;
            let channel = Channel {
                id,
                kind: ChannelKind::Dm,
                name: None,
                created_by: a,
                created_at: at,
                member_count: if lo == hi { 1 } else { 2 },
            };
            return Ok((channel, true));
        }
        Err(BackendError::internal(
            DB::BACKEND,
            "DM creation kept conflicting",
        ))
    }

    async fn channels_of(&self, user: Id) -> R<Vec<Channel>> {
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c JOIN members mm ON mm.channel_id = c.id \
             WHERE mm.user_id = $1 ORDER BY c.id"
        );
        let rows: Vec<ChannelRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(user)
            .fetch_all(&self.directory)
            .await
            .map_err(backend_error::<DB>)?;
        Ok(rows.into_iter().map(Channel::from).collect())
    }
}

#[async_trait]
impl<DB, M> MemberStore for SqlStore<DB, M>
where
    DB: Dialect,
    M: Send + Sync + std::fmt::Debug,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> IdList<'q>: Encode<'q, DB> + Type<DB>,
    for<'r> (Id,): FromRow<'r, DB::Row>,
{
    async fn join(&self, channel: Id, user: Id, at: Timestamp) -> R<bool> {
        let res = sqlx::query(
            "INSERT INTO members (channel_id, user_id, joined_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(channel)
        .bind(user)
        .bind(at)
        .execute(&self.directory)
        .await
        .map_err(backend_error::<DB>)?;
        Ok(DB::rows_affected(&res) == 1)
    }

    async fn leave(&self, channel: Id, user: Id) -> R<bool> {
        let res = sqlx::query("DELETE FROM members WHERE channel_id = $1 AND user_id = $2")
            .bind(channel)
            .bind(user)
            .execute(&self.directory)
            .await
            .map_err(backend_error::<DB>)?;
        Ok(DB::rows_affected(&res) == 1)
    }

    async fn member_ids(&self, channel: Id) -> R<Vec<Id>> {
        sqlx::query_scalar("SELECT user_id FROM members WHERE channel_id = $1 ORDER BY user_id")
            .bind(channel)
            .fetch_all(&self.directory)
            .await
            .map_err(backend_error::<DB>)
    }

    async fn is_member(&self, channel: Id, user: Id) -> R<bool> {
        let found = sqlx::query("SELECT 1 FROM members WHERE channel_id = $1 AND user_id = $2")
            .bind(channel)
            .bind(user)
            .fetch_optional(&self.directory)
            .await
            .map_err(backend_error::<DB>)?;
        Ok(found.is_some())
    }

    async fn co_members(&self, user: Id, candidates: &[Id]) -> R<Vec<Id>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT DISTINCT o.user_id FROM members m JOIN members o ON o.channel_id = m.channel_id \
             WHERE m.user_id = $1 AND {}",
            DB::in_ids("o.user_id", 2)
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(user)
            .bind(IdList(candidates))
            .fetch_all(&self.directory)
            .await
            .map_err(backend_error::<DB>)
    }
}

#[async_trait]
impl<DB, M> ReadMarkerStore for SqlStore<DB, M>
where
    DB: Dialect,
    M: Send + Sync + std::fmt::Debug,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (Id, Id): FromRow<'r, DB::Row>,
{
    async fn mark_read(&self, user: Id, channel: Id, message: Id) -> R<bool> {
        let res = sqlx::query(
            "INSERT INTO read_markers (user_id, channel_id, message_id) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, channel_id) DO UPDATE SET message_id = excluded.message_id \
             WHERE excluded.message_id > read_markers.message_id",
        )
        .bind(user)
        .bind(channel)
        .bind(message)
        .execute(&self.directory)
        .await
        .map_err(backend_error::<DB>)?;
        Ok(DB::rows_affected(&res) == 1)
    }

    async fn read_markers(&self, user: Id) -> R<Vec<(Id, Id)>> {
        sqlx::query_as(
            "SELECT channel_id, message_id FROM read_markers WHERE user_id = $1 \
             ORDER BY channel_id",
        )
        .bind(user)
        .fetch_all(&self.directory)
        .await
        .map_err(backend_error::<DB>)
    }
}

#[async_trait]
impl<DB, M> MediaStore for SqlStore<DB, M>
where
    DB: Dialect,
    M: Send + Sync + std::fmt::Debug,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> IdList<'q>: Encode<'q, DB> + Type<DB>,
    for<'r> AttachmentRecord: FromRow<'r, DB::Row>,
{
    async fn create_attachment(&self, a: &AttachmentRecord) -> R<()> {
        sqlx::query(
            "INSERT INTO attachments (id, owner_id, key, filename, content_type, size, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(a.id)
        .bind(a.owner_id)
        .bind(&a.key)
        .bind(&a.filename)
        .bind(&a.content_type)
        .bind(Unsigned(a.size))
        .bind(a.created_at)
        .execute(&self.directory)
        .await
        .map_err(backend_error::<DB>)?;
        Ok(())
    }

    async fn attachments(&self, ids: &[Id]) -> R<Vec<AttachmentRecord>> {
        let sql = format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE {}",
            DB::in_ids("id", 1)
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(IdList(ids))
            .fetch_all(&self.directory)
            .await
            .map_err(backend_error::<DB>)
    }
}
