//! [`PgStore`]: every Store trait over the directory and the shards.

use std::collections::HashMap;

use async_trait::async_trait;
use parley_crd::ShardMap;
use parley_protocol::{Channel, ChannelKind, Id, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};

use super::{ShardSpec, err, pool};
use crate::backend::{
    AttachmentRecord, BackendError, ChannelStore, MediaStore, MemberStore, MessageStore, Page,
    ReadMarkerStore, StoredMessage, UserRecord, UserStore, sql_id, sql_u64,
};

type R<T> = Result<T, BackendError>;

/// The distributed Store.
#[derive(Debug, Clone)]
pub struct PgStore {
    directory: PgPool,
    /// Swapped whole when the shard map changes; each operation uses one snapshot.
    shards: std::sync::Arc<arc_swap::ArcSwap<ShardMap<Shard>>>,
    pool_size: u32,
}

/// A shard in the map: its name, URL and pool.
#[derive(Debug, Clone)]
struct Shard {
    name: String,
    url: String,
    pool: PgPool,
}

type Map = std::sync::Arc<ShardMap<Shard>>;

fn id(v: i64) -> Id {
    Id(v as u64)
}

fn ids(v: &[Id]) -> R<Vec<i64>> {
    v.iter().map(|i| sql_id(*i)).collect()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The username or group name key (Unicode NFC + full case folding; `text::name_key`).
fn fold_key(s: &str) -> String {
    crate::text::name_key(s)
}

/// Rows updated by one statement when the name keys are recomputed.
const REKEY_BATCH: usize = 5_000;

/// Recomputes `username_key`, `username_skeleton` and `name_key` of every existing row of
/// the directory (migration 0002): refuses, naming them, when two existing names now have
/// one key.
pub(super) async fn rekey_names(conn: &mut sqlx::PgConnection) -> Result<(), String> {
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
    // constraints never see one key twice while the rows change batch by batch.
    for sql in [
        "UPDATE users SET username_key = chr(1) || id::text",
        "UPDATE channels SET name_key = chr(1) || id::text WHERE kind = 'group' AND name IS NOT NULL",
    ] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    for batch in users.chunks(REKEY_BATCH) {
        let ids: Vec<i64> = batch.iter().map(|u| u.id).collect();
        let keys: Vec<&str> = batch.iter().map(|u| u.key.as_str()).collect();
        let skeletons: Vec<Option<&str>> = batch.iter().map(|u| u.skeleton.as_deref()).collect();
        sqlx::query(
            "UPDATE users u SET username_key = v.k, username_skeleton = v.s \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS v(id, k, s) WHERE u.id = v.id",
        )
        .bind(ids)
        .bind(keys)
        .bind(skeletons)
        .execute(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    }
    for batch in groups.chunks(REKEY_BATCH) {
        let ids: Vec<i64> = batch.iter().map(|g| g.id).collect();
        let keys: Vec<&str> = batch.iter().map(|g| g.key.as_str()).collect();
        sqlx::query(
            "UPDATE channels c SET name_key = v.k \
             FROM UNNEST($1::bigint[], $2::text[]) AS v(id, k) WHERE c.id = v.id",
        )
        .bind(ids)
        .bind(keys)
        .execute(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    }
    crate::text::log_grandfathered(&users);
    Ok(())
}

/// The conflict a unique violation on `users` stands for.
fn username_conflict(e: &sqlx::Error, username: &str) -> BackendError {
    let skeleton = matches!(e, sqlx::Error::Database(db)
        if db.constraint().is_some_and(|c| c.contains("skeleton")));
    BackendError::Conflict(crate::text::username_conflict_message(username, skeleton))
}

/// Channels grouped by the index of their shard.
fn by_shard(map: &ShardMap<Shard>, channels: &[Id]) -> HashMap<usize, Vec<Id>> {
    let mut groups: HashMap<usize, Vec<Id>> = HashMap::new();
    for c in channels {
        groups.entry(map.index_of(c.0)).or_default().push(*c);
    }
    groups
}

impl PgStore {
    /// Pools for the directory and every shard; nothing is connected yet.
    pub fn new(directory_url: &str, shards: &[ShardSpec], pool_size: u32) -> R<Self> {
        let directory = pool(directory_url, pool_size)?;
        let map = Self::build_map(shards, pool_size, &[])?;
        Ok(Self {
            directory,
            shards: std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(map)),
            pool_size,
        })
    }

    fn build_map(shards: &[ShardSpec], pool_size: u32, reuse: &[Shard]) -> R<ShardMap<Shard>> {
        let mut parts = Vec::with_capacity(shards.len());
        for s in shards {
            let existing = reuse
                .iter()
                .find(|o| o.name == s.name && o.url == s.url)
                .map(|o| o.pool.clone());
            let pool = match existing {
                Some(p) => p,
                None => pool(&s.url, pool_size)?,
            };
            parts.push((
                Shard {
                    name: s.name.clone(),
                    url: s.url.clone(),
                    pool,
                },
                s.slots.clone(),
            ));
        }
        ShardMap::build(parts, |s| s.name.clone())
            .map_err(|e| BackendError::internal("postgres", format!("shard map: {e}")))
    }

    /// Puts a new shard map in force (pools of unchanged shards are kept). An invalid map
    /// is refused and the current one stays.
    pub fn set_shards(&self, shards: &[ShardSpec]) -> R<()> {
        let current = self.shards.load_full();
        let map = Self::build_map(shards, self.pool_size, current.shards())?;
        self.shards.store(std::sync::Arc::new(map));
        Ok(())
    }

    /// The shard map in force (one snapshot per operation).
    fn map(&self) -> Map {
        self.shards.load_full()
    }

    pub fn directory(&self) -> &PgPool {
        &self.directory
    }

    /// Every shard's name and pool.
    pub fn shard_pools(&self) -> Vec<(String, PgPool)> {
        self.map()
            .shards()
            .iter()
            .map(|s| (s.name.clone(), s.pool.clone()))
            .collect()
    }

    /// Runs `SELECT 1` on the directory and every shard.
    pub async fn ping(&self) -> R<()> {
        super::ping_pool(&self.directory).await?;
        for shard in self.map().shards() {
            let (name, pool) = (&shard.name, &shard.pool);
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map_err(|e| BackendError::unavailable("postgres", format!("shard {name}: {e}")))?;
        }
        Ok(())
    }
}

fn user_row(row: &PgRow) -> UserRecord {
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

fn channel_row(row: &PgRow) -> Channel {
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

const MESSAGE_COLUMNS: &str = "channel_id, id, seq, author_id, text, client_msg_id, attachments::text AS attachments, reply_to, created_at, moderated";

fn message_row(row: &PgRow) -> R<StoredMessage> {
    let attachments: String = row.get("attachments");
    Ok(StoredMessage {
        id: id(row.get("id")),
        channel_id: id(row.get("channel_id")),
        seq: row.get::<i64, _>("seq") as u64,
        author_id: id(row.get("author_id")),
        text: row.get("text"),
        client_msg_id: row.get("client_msg_id"),
        attachments: serde_json::from_str(&attachments)
            .map_err(|e| BackendError::internal("postgres", e))?,
        // A negative reply_to was a wrapped ID from before the range check: it named nothing.
        reply_to: row
            .get::<Option<i64>, _>("reply_to")
            .and_then(|v| u64::try_from(v).ok())
            .map(Id),
        created_at: Timestamp(row.get("created_at")),
        moderated: row.get("moderated"),
    })
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, u: &UserRecord) -> R<()> {
        let res = sqlx::query(
            "INSERT INTO users (id, username, username_key, username_skeleton, display_name, \
             password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(sql_id(u.id)?)
        .bind(&u.username)
        .bind(fold_key(&u.username))
        .bind(crate::text::confusable_skeleton(&u.username))
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(u.created_at.0)
        .execute(&self.directory)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(username_conflict(&e, &u.username)),
            Err(e) => Err(err(e)),
        }
    }

    async fn user(&self, uid: Id) -> R<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(sql_id(uid)?)
            .fetch_optional(&self.directory)
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(user_row))
    }

    async fn user_by_username(&self, username: &str) -> R<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE username_key = $1")
            .bind(fold_key(username))
            .fetch_optional(&self.directory)
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(user_row))
    }

    async fn users(&self, list: &[Id]) -> R<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users WHERE id = ANY($1)")
            .bind(ids(list)?)
            .fetch_all(&self.directory)
            .await
            .map_err(err)?;
        Ok(rows.iter().map(user_row).collect())
    }
}

impl PgStore {
    async fn channel_where(&self, clause: &'static str, bind: impl ToString) -> R<Option<Channel>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels c WHERE {clause}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bind.to_string())
            .fetch_optional(&self.directory)
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(channel_row))
    }
}

#[async_trait]
impl ChannelStore for PgStore {
    async fn create_group(&self, cid: Id, name: &str, creator: Id, at: Timestamp) -> R<Channel> {
        let mut tx = self.directory.begin().await.map_err(err)?;
        let res = sqlx::query(
            "INSERT INTO channels (id, kind, name, name_key, created_by, created_at) VALUES ($1, 'group', $2, $3, $4, $5)",
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
        sqlx::query("INSERT INTO members (channel_id, user_id, joined_at) VALUES ($1, $2, $3)")
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
        self.channel_where("c.id = $1::text::bigint", sql_id(cid)?)
            .await
    }

    async fn group_by_name(&self, name: &str) -> R<Option<Channel>> {
        self.channel_where("c.name_key = $1 AND c.kind = 'group'", fold_key(name))
            .await
    }

    async fn dm(&self, cid: Id, a: Id, b: Id, at: Timestamp) -> R<(Channel, bool)> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let key = format!("{lo}:{hi}");
        for _ in 0..3 {
            if let Some(ch) = self.channel_where("c.dm_key = $1", &key).await? {
                return Ok((ch, false));
            }
            let mut tx = self.directory.begin().await.map_err(err)?;
            let res = sqlx::query(
                "INSERT INTO channels (id, kind, name, dm_key, created_by, created_at) VALUES ($1, 'dm', NULL, $2, $3, $4)",
            )
            .bind(sql_id(cid)?)
            .bind(&key)
            .bind(sql_id(a)?)
            .bind(at.0)
            .execute(&mut *tx)
            .await;
            match res {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(err(e)),
            }
            let users: Vec<i64> = if lo == hi {
                vec![sql_id(lo)?]
            } else {
                vec![sql_id(lo)?, sql_id(hi)?]
            };
            sqlx::query("INSERT INTO members (channel_id, user_id, joined_at) SELECT $1, u, $3 FROM UNNEST($2::bigint[]) AS u")
                .bind(sql_id(cid)?)
                .bind(&users)
                .bind(at.0)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            let ch = Channel {
                id: cid,
                kind: ChannelKind::Dm,
                name: None,
                created_by: a,
                created_at: at,
                member_count: users.len() as u32,
            };
            return Ok((ch, true));
        }
        Err(BackendError::internal(
            "postgres",
            "DM creation kept conflicting",
        ))
    }

    async fn channels_of(&self, user: Id) -> R<Vec<Channel>> {
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c JOIN members mm ON mm.channel_id = c.id \
             WHERE mm.user_id = $1 ORDER BY c.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sql_id(user)?)
            .fetch_all(&self.directory)
            .await
            .map_err(err)?;
        Ok(rows.iter().map(channel_row).collect())
    }
}

#[async_trait]
impl MemberStore for PgStore {
    async fn join(&self, channel: Id, user: Id, at: Timestamp) -> R<bool> {
        let res = sqlx::query(
            "INSERT INTO members (channel_id, user_id, joined_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(sql_id(channel)?)
        .bind(sql_id(user)?)
        .bind(at.0)
        .execute(&self.directory)
        .await
        .map_err(err)?;
        Ok(res.rows_affected() == 1)
    }

    async fn leave(&self, channel: Id, user: Id) -> R<bool> {
        let res = sqlx::query("DELETE FROM members WHERE channel_id = $1 AND user_id = $2")
            .bind(sql_id(channel)?)
            .bind(sql_id(user)?)
            .execute(&self.directory)
            .await
            .map_err(err)?;
        Ok(res.rows_affected() == 1)
    }

    async fn member_ids(&self, channel: Id) -> R<Vec<Id>> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM members WHERE channel_id = $1 ORDER BY user_id",
        )
        .bind(sql_id(channel)?)
        .fetch_all(&self.directory)
        .await
        .map_err(err)?;
        Ok(rows.into_iter().map(id).collect())
    }

    async fn is_member(&self, channel: Id, user: Id) -> R<bool> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM members WHERE channel_id = $1 AND user_id = $2")
                .bind(sql_id(channel)?)
                .bind(sql_id(user)?)
                .fetch_optional(&self.directory)
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
             WHERE m.user_id = $1 AND o.user_id = ANY($2)",
        )
        .bind(sql_id(user)?)
        .bind(ids(candidates)?)
        .fetch_all(&self.directory)
        .await
        .map_err(err)?;
        Ok(rows.into_iter().map(id).collect())
    }
}

#[async_trait]
impl MessageStore for PgStore {
    async fn insert_messages(&self, batch: &[StoredMessage]) -> R<u64> {
        let map = self.map();
        let mut groups: HashMap<usize, Vec<&StoredMessage>> = HashMap::new();
        for m in batch {
            groups
                .entry(map.index_of(m.channel_id.0))
                .or_default()
                .push(m);
        }
        let mut inserted = 0;
        for (index, messages) in groups {
            let mut attachments = Vec::with_capacity(messages.len());
            for m in &messages {
                attachments.push(
                    serde_json::to_string(&m.attachments)
                        .map_err(|e| BackendError::internal("postgres", e))?,
                );
            }
            let res = sqlx::query(
                "INSERT INTO messages (channel_id, id, seq, author_id, text, client_msg_id, attachments, reply_to, \
                 created_at, moderated) \
                 SELECT c, i, s, a, t, k, j::jsonb, r, ca, mo FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], \
                 $4::bigint[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bool[]) \
                 AS x(c, i, s, a, t, k, j, r, ca, mo) \
                 ON CONFLICT (channel_id, id) DO NOTHING",
            )
            .bind(messages.iter().map(|m| sql_id(m.channel_id)).collect::<R<Vec<_>>>()?)
            .bind(messages.iter().map(|m| sql_id(m.id)).collect::<R<Vec<_>>>()?)
            .bind(messages.iter().map(|m| sql_u64(m.seq)).collect::<R<Vec<_>>>()?)
            .bind(messages.iter().map(|m| sql_id(m.author_id)).collect::<R<Vec<_>>>()?)
            .bind(messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.client_msg_id.as_deref()).collect::<Vec<_>>())
            .bind(&attachments)
            .bind(messages.iter().map(|m| m.reply_to.map(sql_id).transpose()).collect::<R<Vec<_>>>()?)
            .bind(messages.iter().map(|m| m.created_at.0).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.moderated).collect::<Vec<_>>())
            .execute(&map.shards()[index].pool)
            .await
            .map_err(|e| {
                let name = &map.shards()[index].name;
                match err(e) {
                    BackendError::Unavailable { detail, .. } => {
                        BackendError::unavailable("postgres", format!("shard {name}: {detail}"))
                    }
                    other => other,
                }
            })?;
            inserted += res.rows_affected();
        }
        let keyed: Vec<&StoredMessage> =
            batch.iter().filter(|m| m.client_msg_id.is_some()).collect();
        if !keyed.is_empty() {
            sqlx::query(
                "INSERT INTO idempotency_keys (author_id, client_msg_id, message_id, channel_id, created_at) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(keyed.iter().map(|m| sql_id(m.author_id)).collect::<R<Vec<_>>>()?)
            .bind(keyed.iter().map(|m| m.client_msg_id.clone().unwrap_or_default()).collect::<Vec<_>>())
            .bind(keyed.iter().map(|m| sql_id(m.id)).collect::<R<Vec<_>>>()?)
            .bind(keyed.iter().map(|m| sql_id(m.channel_id)).collect::<R<Vec<_>>>()?)
            .bind(keyed.iter().map(|m| m.created_at.0).collect::<Vec<_>>())
            .execute(&self.directory)
            .await
            .map_err(err)?;
        }
        Ok(inserted)
    }

    async fn message(&self, channel: Id, mid: Id) -> R<Option<StoredMessage>> {
        let map = self.map();
        let sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = $1 AND id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sql_id(channel)?)
            .bind(sql_id(mid)?)
            .fetch_optional(&map.shard_of(channel.0).pool)
            .await
            .map_err(err)?;
        row.as_ref().map(message_row).transpose()
    }

    async fn history(&self, channel: Id, page: Page) -> R<Vec<StoredMessage>> {
        let map = self.map();
        let (clause, bound, order) = match page {
            Page::Latest { .. } => ("", None, "DESC"),
            Page::Before { id, .. } => ("AND id < $3", Some(id), "DESC"),
            Page::After { id, .. } => ("AND id > $3", Some(id), "ASC"),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = $1 {clause} ORDER BY id {order} LIMIT $2"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sql_id(channel)?)
            .bind(i64::from(page.limit()));
        if let Some(b) = bound {
            q = q.bind(sql_id(b)?);
        }
        let rows = q
            .fetch_all(&map.shard_of(channel.0).pool)
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
        let map = self.map();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = ANY($1) AND id > $2 ORDER BY id ASC LIMIT $3"
        );
        let mut all = Vec::new();
        for (index, group) in by_shard(&map, channels) {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(ids(&group)?)
                .bind(sql_id(after)?)
                .bind(i64::from(limit))
                .fetch_all(&map.shards()[index].pool)
                .await
                .map_err(err)?;
            for row in &rows {
                all.push(message_row(row)?);
            }
        }
        all.sort_by_key(|m| m.id);
        all.truncate(limit as usize);
        Ok(all)
    }

    async fn by_client_msg_id(
        &self,
        author: Id,
        client_msg_id: &str,
        since: Timestamp,
    ) -> R<Option<StoredMessage>> {
        let map = self.map();
        let key: Option<(i64, i64)> = sqlx::query_as(
            "SELECT channel_id, message_id FROM idempotency_keys \
             WHERE author_id = $1 AND client_msg_id = $2 AND created_at >= $3 ORDER BY message_id LIMIT 1",
        )
        .bind(sql_id(author)?)
        .bind(client_msg_id)
        .bind(since.0)
        .fetch_optional(&self.directory)
        .await
        .map_err(err)?;
        let Some((channel, message)) = key else {
            return Ok(None);
        };
        let sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = $1 AND id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(channel)
            .bind(message)
            .fetch_optional(&map.shard_of(channel as u64).pool)
            .await
            .map_err(err)?;
        row.as_ref().map(message_row).transpose()
    }

    async fn last_seqs(&self, channels: &[Id]) -> R<Vec<(Id, u64)>> {
        let map = self.map();
        let mut out = Vec::new();
        for (index, group) in by_shard(&map, channels) {
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT channel_id, MAX(seq) FROM messages WHERE channel_id = ANY($1) GROUP BY channel_id",
            )
            .bind(ids(&group)?)
            .fetch_all(&map.shards()[index].pool)
            .await
            .map_err(err)?;
            out.extend(rows.into_iter().map(|(c, s)| (id(c), s as u64)));
        }
        Ok(out)
    }
}

#[async_trait]
impl ReadMarkerStore for PgStore {
    async fn mark_read(&self, user: Id, channel: Id, message: Id) -> R<bool> {
        let res = sqlx::query(
            "INSERT INTO read_markers (user_id, channel_id, message_id) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, channel_id) DO UPDATE SET message_id = EXCLUDED.message_id \
             WHERE EXCLUDED.message_id > read_markers.message_id",
        )
        .bind(sql_id(user)?)
        .bind(sql_id(channel)?)
        .bind(sql_id(message)?)
        .execute(&self.directory)
        .await
        .map_err(err)?;
        Ok(res.rows_affected() == 1)
    }

    async fn read_markers(&self, user: Id) -> R<Vec<(Id, Id)>> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT channel_id, message_id FROM read_markers WHERE user_id = $1 ORDER BY channel_id")
                .bind(sql_id(user)?)
                .fetch_all(&self.directory)
                .await
                .map_err(err)?;
        Ok(rows.into_iter().map(|(c, m)| (id(c), id(m))).collect())
    }
}

fn attachment_row(row: &PgRow) -> AttachmentRecord {
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
impl MediaStore for PgStore {
    async fn create_attachment(&self, a: &AttachmentRecord) -> R<()> {
        sqlx::query(
            "INSERT INTO attachments (id, owner_id, key, filename, content_type, size, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(sql_id(a.id)?)
        .bind(sql_id(a.owner_id)?)
        .bind(&a.key)
        .bind(&a.filename)
        .bind(&a.content_type)
        .bind(sql_u64(a.size)?)
        .bind(a.created_at.0)
        .execute(&self.directory)
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn attachments(&self, list: &[Id]) -> R<Vec<AttachmentRecord>> {
        let rows = sqlx::query("SELECT * FROM attachments WHERE id = ANY($1)")
            .bind(ids(list)?)
            .fetch_all(&self.directory)
            .await
            .map_err(err)?;
        Ok(rows.iter().map(attachment_row).collect())
    }
}
