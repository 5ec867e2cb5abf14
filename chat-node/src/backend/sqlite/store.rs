//! [`SqliteStore`]: every Store trait on one SQLite database.

use async_trait::async_trait;
use parley_protocol::{Channel, ChannelKind, Id, Timestamp};
use sqlx::{Row as _, SqlitePool, sqlite::SqliteRow};

use super::err;
use crate::backend::{
    AttachmentRecord, BackendError, ChannelStore, MediaStore, MemberStore, MessageStore, Page,
    ReadMarkerStore, StoredMessage, UserRecord, UserStore, sql_id, sql_u64,
};

type R<T> = Result<T, BackendError>;

/// The embedded Store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn id(v: i64) -> Id {
    Id(v as u64)
}

fn ids_json(ids: &[Id]) -> String {
    let mut s = String::with_capacity(ids.len() * 20 + 2);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s.push(']');
    s
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn user_row(row: &SqliteRow) -> UserRecord {
    UserRecord {
        id: id(row.get("id")),
        username: row.get("username"),
        display_name: row.get("display_name"),
        password_hash: row.get("password_hash"),
        created_at: Timestamp(row.get("created_at")),
    }
}

const CHANNEL_COLUMNS: &str = "c.id, c.kind, c.name, c.created_by, c.created_at, \
     (SELECT COUNT(*) FROM members m WHERE m.channel_id = c.id) AS member_count";

fn channel_row(row: &SqliteRow) -> Channel {
    let kind: String = row.get("kind");
    Channel {
        id: id(row.get("id")),
        kind: if kind == "dm" {
            ChannelKind::Dm
        } else {
            ChannelKind::Group
        },
        name: row.get("name"),
        created_by: id(row.get("created_by")),
        created_at: Timestamp(row.get("created_at")),
        member_count: row.get::<i64, _>("member_count") as u32,
    }
}

const MESSAGE_COLUMNS: &str = "channel_id, id, seq, author_id, text, client_msg_id, attachments, reply_to, created_at, moderated";

fn message_row(row: &SqliteRow) -> R<StoredMessage> {
    let attachments: String = row.get("attachments");
    Ok(StoredMessage {
        id: id(row.get("id")),
        channel_id: id(row.get("channel_id")),
        seq: row.get::<i64, _>("seq") as u64,
        author_id: id(row.get("author_id")),
        text: row.get("text"),
        client_msg_id: row.get("client_msg_id"),
        attachments: serde_json::from_str(&attachments)
            .map_err(|e| BackendError::internal("sqlite", e))?,
        // A negative reply_to was a wrapped ID from before the range check: it named nothing.
        reply_to: row
            .get::<Option<i64>, _>("reply_to")
            .and_then(|v| u64::try_from(v).ok())
            .map(Id),
        created_at: Timestamp(row.get("created_at")),
        moderated: row.get::<i64, _>("moderated") != 0,
    })
}

/// The username or group name key (Unicode NFC + full case folding; `text::name_key`).
fn fold_key(s: &str) -> String {
    crate::text::name_key(s)
}

/// Recomputes `username_key`, `username_skeleton` and `name_key` of every existing row
/// (schema version 2): refuses, naming them, when two existing names now have one key.
pub(super) async fn rekey_names(conn: &mut sqlx::SqliteConnection) -> Result<(), String> {
    let users: Vec<(i64, String)> = sqlx::query_as("SELECT id, username FROM users")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    let groups: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, name FROM channels WHERE kind = 'group' AND name IS NOT NULL")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    let users = crate::text::rekey_users(&users).map_err(|e| e.to_string())?;
    let groups = crate::text::rekey_groups(&groups).map_err(|e| e.to_string())?;
    // First a key no name can have (names hold no control characters), so the UNIQUE
    // indexes never see one key twice while the rows change one by one.
    for sql in [
        "UPDATE users SET username_key = char(1) || id",
        "UPDATE channels SET name_key = char(1) || id WHERE kind = 'group' AND name IS NOT NULL",
    ] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    for u in &users {
        sqlx::query("UPDATE users SET username_key = ?, username_skeleton = ? WHERE id = ?")
            .bind(&u.key)
            .bind(&u.skeleton)
            .bind(u.id)
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    for g in &groups {
        sqlx::query("UPDATE channels SET name_key = ? WHERE id = ?")
            .bind(&g.key)
            .bind(g.id)
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    crate::text::log_grandfathered(&users);
    Ok(())
}

/// The conflict a unique violation on `users` stands for.
fn username_conflict(e: &sqlx::Error, username: &str) -> BackendError {
    let skeleton =
        matches!(e, sqlx::Error::Database(db) if db.message().contains("username_skeleton"));
    BackendError::Conflict(crate::text::username_conflict_message(username, skeleton))
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, u: &UserRecord) -> R<()> {
        let res = sqlx::query(
            "INSERT INTO users (id, username, username_key, username_skeleton, display_name, \
             password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(sql_id(u.id)?)
        .bind(&u.username)
        .bind(fold_key(&u.username))
        .bind(crate::text::confusable_skeleton(&u.username))
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(u.created_at.0)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(username_conflict(&e, &u.username)),
            Err(e) => Err(err(e)),
        }
    }

    async fn user(&self, uid: Id) -> R<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(sql_id(uid)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(user_row))
    }

    async fn user_by_username(&self, username: &str) -> R<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE username_key = ?")
            .bind(fold_key(username))
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(user_row))
    }

    async fn users(&self, ids: &[Id]) -> R<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users WHERE id IN (SELECT value FROM json_each(?))")
            .bind(ids_json(ids))
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        Ok(rows.iter().map(user_row).collect())
    }
}

impl SqliteStore {
    async fn channel_where(&self, clause: &'static str, bind: impl ToString) -> R<Option<Channel>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels c WHERE {clause}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bind.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(channel_row))
    }
}

#[async_trait]
impl ChannelStore for SqliteStore {
    async fn create_group(&self, cid: Id, name: &str, creator: Id, at: Timestamp) -> R<Channel> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let res = sqlx::query(
            "INSERT INTO channels (id, kind, name, name_key, created_by, created_at) VALUES (?, 'group', ?, ?, ?, ?)",
        )
        .bind(sql_id(cid)?)
        .bind(name)
        .bind(fold_key(name))
        .bind(sql_id(creator)?)
        .bind(at.0)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(BackendError::Conflict(format!(
                    "a group named `{name}` exists"
                )));
            }
            Err(e) => return Err(err(e)),
        }
        sqlx::query("INSERT INTO members (channel_id, user_id, joined_at) VALUES (?, ?, ?)")
            .bind(sql_id(cid)?)
            .bind(sql_id(creator)?)
            .bind(at.0)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(Channel {
            id: cid,
            kind: ChannelKind::Group,
            name: Some(name.to_owned()),
            created_by: creator,
            created_at: at,
            member_count: 1,
        })
    }

    async fn channel(&self, cid: Id) -> R<Option<Channel>> {
        self.channel_where("c.id = CAST(? AS INTEGER)", sql_id(cid)?)
            .await
    }

    async fn group_by_name(&self, name: &str) -> R<Option<Channel>> {
        self.channel_where("c.name_key = ? AND c.kind = 'group'", fold_key(name))
            .await
    }

    async fn dm(&self, cid: Id, a: Id, b: Id, at: Timestamp) -> R<(Channel, bool)> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let key = format!("{lo}:{hi}");
        for _ in 0..3 {
            if let Some(ch) = self.channel_where("c.dm_key = ?", &key).await? {
                return Ok((ch, false));
            }
            let mut tx = self.pool.begin().await.map_err(err)?;
            let res = sqlx::query(
                "INSERT INTO channels (id, kind, name, dm_key, created_by, created_at) VALUES (?, 'dm', NULL, ?, ?, ?)",
            )
            .bind(sql_id(cid)?)
            .bind(&key)
            .bind(sql_id(a)?)
            .bind(at.0)
            .execute(&mut *tx)
            .await;
            match res {
                Ok(_) => {}
                // Someone else created it just now: read theirs.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(err(e)),
            }
            for user in if lo == hi { vec![lo] } else { vec![lo, hi] } {
                sqlx::query(
                    "INSERT INTO members (channel_id, user_id, joined_at) VALUES (?, ?, ?)",
                )
                .bind(sql_id(cid)?)
                .bind(sql_id(user)?)
                .bind(at.0)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            let ch = Channel {
                id: cid,
                kind: ChannelKind::Dm,
                name: None,
                created_by: a,
                created_at: at,
                member_count: if lo == hi { 1 } else { 2 },
            };
            return Ok((ch, true));
        }
        Err(BackendError::internal(
            "sqlite",
            "DM creation kept conflicting",
        ))
    }

    async fn channels_of(&self, user: Id) -> R<Vec<Channel>> {
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c JOIN members mm ON mm.channel_id = c.id \
             WHERE mm.user_id = ? ORDER BY c.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sql_id(user)?)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        Ok(rows.iter().map(channel_row).collect())
    }
}

#[async_trait]
impl MemberStore for SqliteStore {
    async fn join(&self, channel: Id, user: Id, at: Timestamp) -> R<bool> {
        let res = sqlx::query(
            "INSERT OR IGNORE INTO members (channel_id, user_id, joined_at) VALUES (?, ?, ?)",
        )
        .bind(sql_id(channel)?)
        .bind(sql_id(user)?)
        .bind(at.0)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(res.rows_affected() == 1)
    }

    async fn leave(&self, channel: Id, user: Id) -> R<bool> {
        let res = sqlx::query("DELETE FROM members WHERE channel_id = ? AND user_id = ?")
            .bind(sql_id(channel)?)
            .bind(sql_id(user)?)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(res.rows_affected() == 1)
    }

    async fn member_ids(&self, channel: Id) -> R<Vec<Id>> {
        let rows: Vec<i64> =
            sqlx::query_scalar("SELECT user_id FROM members WHERE channel_id = ? ORDER BY user_id")
                .bind(sql_id(channel)?)
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
        Ok(rows.into_iter().map(id).collect())
    }

    async fn is_member(&self, channel: Id, user: Id) -> R<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM members WHERE channel_id = ? AND user_id = ?")
                .bind(sql_id(channel)?)
                .bind(sql_id(user)?)
                .fetch_optional(&self.pool)
                .await
                .map_err(err)?;
        Ok(found.is_some())
    }

    async fn co_members(&self, user: Id, candidates: &[Id]) -> R<Vec<Id>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT o.user_id FROM members m JOIN members o ON o.channel_id = m.channel_id \
             WHERE m.user_id = ? AND o.user_id IN (SELECT value FROM json_each(?))",
        )
        .bind(sql_id(user)?)
        .bind(ids_json(candidates))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows.into_iter().map(id).collect())
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_messages(&self, batch: &[StoredMessage]) -> R<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(err)?;
        let mut inserted = 0;
        for m in batch {
            let attachments = serde_json::to_string(&m.attachments)
                .map_err(|e| BackendError::internal("sqlite", e))?;
            let res = sqlx::query(
                "INSERT OR IGNORE INTO messages (channel_id, id, seq, author_id, text, client_msg_id, attachments, \
                 reply_to, created_at, moderated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(sql_id(m.channel_id)?)
            .bind(sql_id(m.id)?)
            .bind(sql_u64(m.seq)?)
            .bind(sql_id(m.author_id)?)
            .bind(&m.text)
            .bind(&m.client_msg_id)
            .bind(attachments)
            .bind(m.reply_to.map(sql_id).transpose()?)
            .bind(m.created_at.0)
            .bind(i64::from(m.moderated))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            inserted += res.rows_affected();
        }
        tx.commit().await.map_err(err)?;
        Ok(inserted)
    }

    async fn message(&self, channel: Id, mid: Id) -> R<Option<StoredMessage>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = ? AND id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sql_id(channel)?)
            .bind(sql_id(mid)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.as_ref().map(message_row).transpose()
    }

    async fn history(&self, channel: Id, page: Page) -> R<Vec<StoredMessage>> {
        let (clause, bound, order) = match page {
            Page::Latest { .. } => ("", None, "DESC"),
            Page::Before { id, .. } => ("AND id < ?", Some(id), "DESC"),
            Page::After { id, .. } => ("AND id > ?", Some(id), "ASC"),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = ? {clause} ORDER BY id {order} LIMIT ?"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sql_id(channel)?);
        if let Some(b) = bound {
            q = q.bind(sql_id(b)?);
        }
        let rows = q
            .bind(i64::from(page.limit()))
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.iter().map(message_row).collect()
    }

    async fn messages_after(
        &self,
        channels: &[Id],
        after: Id,
        limit: u32,
    ) -> R<Vec<StoredMessage>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id IN (SELECT value FROM json_each(?)) \
             AND id > ? ORDER BY id ASC LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ids_json(channels))
            .bind(sql_id(after)?)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.iter().map(message_row).collect()
    }

    async fn by_client_msg_id(
        &self,
        author: Id,
        client_msg_id: &str,
        since: Timestamp,
    ) -> R<Option<StoredMessage>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE author_id = ? AND client_msg_id = ? AND created_at >= ? \
             ORDER BY id LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sql_id(author)?)
            .bind(client_msg_id)
            .bind(since.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
        row.as_ref().map(message_row).transpose()
    }

    async fn last_seqs(&self, channels: &[Id]) -> R<Vec<(Id, u64)>> {
        let rows = sqlx::query(
            "SELECT channel_id, MAX(seq) AS seq FROM messages \
             WHERE channel_id IN (SELECT value FROM json_each(?)) GROUP BY channel_id",
        )
        .bind(ids_json(channels))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| (id(r.get("channel_id")), r.get::<i64, _>("seq") as u64))
            .collect())
    }
}

#[async_trait]
impl ReadMarkerStore for SqliteStore {
    async fn mark_read(&self, user: Id, channel: Id, message: Id) -> R<bool> {
        let res = sqlx::query(
            "INSERT INTO read_markers (user_id, channel_id, message_id) VALUES (?, ?, ?) \
             ON CONFLICT (user_id, channel_id) DO UPDATE SET message_id = excluded.message_id \
             WHERE excluded.message_id > read_markers.message_id",
        )
        .bind(sql_id(user)?)
        .bind(sql_id(channel)?)
        .bind(sql_id(message)?)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(res.rows_affected() == 1)
    }

    async fn read_markers(&self, user: Id) -> R<Vec<(Id, Id)>> {
        let rows = sqlx::query(
            "SELECT channel_id, message_id FROM read_markers WHERE user_id = ? ORDER BY channel_id",
        )
        .bind(sql_id(user)?)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| (id(r.get("channel_id")), id(r.get("message_id"))))
            .collect())
    }
}

fn attachment_row(row: &SqliteRow) -> AttachmentRecord {
    AttachmentRecord {
        id: id(row.get("id")),
        owner_id: id(row.get("owner_id")),
        key: row.get("key"),
        filename: row.get("filename"),
        content_type: row.get("content_type"),
        size: row.get::<i64, _>("size") as u64,
        created_at: Timestamp(row.get("created_at")),
    }
}

#[async_trait]
impl MediaStore for SqliteStore {
    async fn create_attachment(&self, a: &AttachmentRecord) -> R<()> {
        sqlx::query(
            "INSERT INTO attachments (id, owner_id, key, filename, content_type, size, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(sql_id(a.id)?)
        .bind(sql_id(a.owner_id)?)
        .bind(&a.key)
        .bind(&a.filename)
        .bind(&a.content_type)
        .bind(sql_u64(a.size)?)
        .bind(a.created_at.0)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn attachments(&self, ids: &[Id]) -> R<Vec<AttachmentRecord>> {
        let rows =
            sqlx::query("SELECT * FROM attachments WHERE id IN (SELECT value FROM json_each(?))")
                .bind(ids_json(ids))
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
        Ok(rows.iter().map(attachment_row).collect())
    }
}
