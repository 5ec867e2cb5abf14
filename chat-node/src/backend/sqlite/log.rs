//! [`SqliteLog`]: the embedded durable log. Appends are group-committed by one writer task:
//! concurrent senders share a transaction, and each learns its records are durable when it
//! commits. Consumers read by offset and commit their position per group, as with Kafka.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley_protocol::Id;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{Database, err};
use crate::backend::{BackendError, Log, LogConsumer, LogRecord, PolledRecord};

/// Most appends one group commit carries.
const MAX_GROUP: usize = 512;
/// Most records one `INSERT` carries (3 bound parameters each, under SQLite's 32766).
const MAX_ROWS_PER_INSERT: usize = 4096;

/// Where the writer answers an append: the offsets of its records, or why it failed.
type Reply = oneshot::Sender<Result<Vec<u64>, BackendError>>;

/// One topic of the embedded log.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    db: Database,
    topic: Arc<str>,
    appends: mpsc::Sender<(Vec<LogRecord>, Reply)>,
    appended: Arc<Appended>,
}

/// What the writer tells consumers after each group it committed.
#[derive(Debug, Default)]
struct Appended {
    /// Woken after each commit.
    notify: Notify,
    /// Groups committed so far: a consumer whose last read found nothing reads again only
    /// once this moved (or [`REREAD`] passed), so an idle log is not read on every poll.
    groups: AtomicU64,
}

/// A consumer deletes the records every group has consumed once it committed this many
/// records since it last did, or [`TRIM_AFTER`] passed: not on every commit, which would be
/// a second statement (a transaction, three more round trips) under the write lock.
const TRIM_RECORDS: i64 = 1024;
/// See [`TRIM_RECORDS`].
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// How long a consumer that found nothing trusts the writer's count before it reads the
/// log anyway (appends from another handle on the same file count nowhere here).
const REREAD: Duration = Duration::from_secs(1);

impl SqliteLog {
    /// Opens `topic` on `db` and starts its writer task (which ends when every handle is
    /// dropped).
    pub fn new(db: Database, topic: &str) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let appended = Arc::new(Appended::default());
        let topic: Arc<str> = topic.into();
        tokio::spawn(writer(db.clone(), topic.clone(), rx, appended.clone()));
        Self {
            db,
            topic,
            appends: tx,
            appended,
        }
    }
}

async fn writer(
    db: Database,
    topic: Arc<str>,
    mut rx: mpsc::Receiver<(Vec<LogRecord>, Reply)>,
    appended: Arc<Appended>,
) {
    let mut group: Vec<(Vec<LogRecord>, Reply)> = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let written = {
            let _lock = db.write_lock().await;
            write_group(db.pool(), &topic, &group).await
        };
        match written {
            Ok(offsets) => {
                for ((_, reply), offsets) in group.drain(..).zip(offsets) {
                    let _ = reply.send(Ok(offsets));
                }
                appended.groups.fetch_add(1, Ordering::Release);
                appended.notify.notify_waiters();
            }
            Err(e) => {
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes every append of `group` atomically; returns the offsets of each append's
/// records. Up to [`MAX_ROWS_PER_INSERT`] records (every real group: a send is one record)
/// go in one multi-row `INSERT`, atomic on its own, so no `BEGIN`/`COMMIT` round trips to
/// the connection's worker thread; more take a transaction.
async fn write_group(
    pool: &sqlx::SqlitePool,
    topic: &str,
    group: &[(Vec<LogRecord>, Reply)],
) -> Result<Vec<Vec<u64>>, BackendError> {
    let records: Vec<&LogRecord> = group.iter().flat_map(|(r, _)| r).collect();
    let offsets = if records.len() <= MAX_ROWS_PER_INSERT {
        insert(pool, topic, &records).await?
    } else {
        let mut tx = pool.begin().await.map_err(err)?;
        let mut offsets = Vec::with_capacity(records.len());
        for chunk in records.chunks(MAX_ROWS_PER_INSERT) {
            offsets.extend(insert(&mut *tx, topic, chunk).await?);
        }
        tx.commit().await.map_err(err)?;
        offsets
    };
    let mut offsets = offsets.into_iter();
    Ok(group
        .iter()
        .map(|(records, _)| offsets.by_ref().take(records.len()).collect())
        .collect())
}

/// Inserts `records` with one statement; their offsets, in `records`' order. Only the
/// writer task inserts, so the rows of one statement get increasing offsets in `VALUES`
/// order; `RETURNING` gives its rows in no set order
/// (<https://sqlite.org/lang_returning.html>), so they are sorted.
async fn insert<'e, E>(
    executor: E,
    topic: &str,
    records: &[&LogRecord],
) -> Result<Vec<u64>, BackendError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let sql = super::multi_row_sql(
        "INSERT INTO log (topic, key, payload)",
        3,
        records.len(),
        r#" RETURNING "offset""#,
    );
    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for r in records {
        q = q.bind(topic).bind(r.key).bind(&r.payload[..]);
    }
    let mut offsets: Vec<i64> = q.fetch_all(executor).await.map_err(err)?;
    if offsets.len() != records.len() {
        return Err(BackendError::internal(
            "sqlite log",
            format!("{} offsets for {} records", offsets.len(), records.len()),
        ));
    }
    offsets.sort_unstable();
    offsets.into_iter().map(offset_of).collect()
}

/// A row's offset (`AUTOINCREMENT` starts at 1 and never goes back).
fn offset_of(offset: i64) -> Result<u64, BackendError> {
    u64::try_from(offset)
        .map_err(|_| BackendError::internal("sqlite log", format!("offset {offset} of a record")))
}

#[async_trait]
impl Log for SqliteLog {
    async fn append(&self, records: &[LogRecord]) -> Result<Vec<u64>, BackendError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, done) = oneshot::channel();
        self.appends
            .send((records.to_vec(), reply))
            .await
            .map_err(|_| BackendError::unavailable("sqlite log", "the writer has stopped"))?;
        done.await
            .map_err(|_| BackendError::unavailable("sqlite log", "the writer has stopped"))?
    }

    async fn wait_consumed(&self, group: &str, timeout: Duration) -> Result<(), BackendError> {
        let end: Option<i64> =
            sqlx::query_scalar(r#"SELECT MAX("offset") FROM log WHERE topic = ?"#)
                .bind(&*self.topic)
                .fetch_one(self.db.pool())
                .await
                .map_err(err)?;
        let Some(end) = end else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let committed: Option<i64> = sqlx::query_scalar(
                r#"SELECT "offset" FROM log_offsets WHERE topic = ? AND grp = ?"#,
            )
            .bind(&*self.topic)
            .bind(group)
            .fetch_optional(self.db.pool())
            .await
            .map_err(err)?;
            if committed.is_some_and(|c| c >= end) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::unavailable(
                    "sqlite log",
                    format!("{group} has not caught up"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn consumer(&self, group: &str) -> Result<Box<dyn LogConsumer>, BackendError> {
        let committed: Option<i64> =
            sqlx::query_scalar(r#"SELECT "offset" FROM log_offsets WHERE topic = ? AND grp = ?"#)
                .bind(&*self.topic)
                .bind(group)
                .fetch_optional(self.db.pool())
                .await
                .map_err(err)?;
        let position = committed.unwrap_or(0);
        Ok(Box::new(SqliteConsumer {
            db: self.db.clone(),
            topic: self.topic.clone(),
            group: group.to_owned(),
            position,
            committed: position,
            trimmed: (position, tokio::time::Instant::now()),
            appended: self.appended.clone(),
            found_nothing: None,
        }))
    }
}

#[derive(Debug)]
struct SqliteConsumer {
    db: Database,
    topic: Arc<str>,
    group: String,
    /// Offset of the last record polled.
    position: i64,
    committed: i64,
    /// The committed offset and the time when this consumer last deleted consumed records.
    trimmed: (i64, tokio::time::Instant),
    appended: Arc<Appended>,
    /// The writer's count of groups and the time when the last read found nothing.
    found_nothing: Option<(u64, tokio::time::Instant)>,
}

impl SqliteConsumer {
    async fn read(&self, max: usize) -> Result<Vec<PolledRecord>, BackendError> {
        let rows: Vec<(i64, Id, Vec<u8>)> = sqlx::query_as(
            r#"SELECT "offset", key, payload FROM log WHERE topic = ? AND "offset" > ? ORDER BY "offset" LIMIT ?"#,
        )
        .bind(&*self.topic)
        .bind(self.position)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await
        .map_err(err)?;
        rows.into_iter()
            .map(|(offset, key, payload)| {
                Ok(PolledRecord {
                    offset: offset_of(offset)?,
                    key,
                    payload: Bytes::from(payload),
                })
            })
            .collect()
    }
}

#[async_trait]
impl LogConsumer for SqliteConsumer {
    async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<PolledRecord>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest and load the count before reading, so an append between
            // the read and the wait is not missed (tokio's `notify_waiters` wakes every
            // `Notified` made before it, polled or not).
            let notified = self.appended.notify.notified();
            let groups = self.appended.groups.load(Ordering::Acquire);
            let now = tokio::time::Instant::now();
            let unchanged = self
                .found_nothing
                .is_some_and(|(seen, at)| seen == groups && now < at + REREAD);
            if !unchanged {
                let rows = self.read(max).await?;
                if let Some(last) = rows.last() {
                    // Offsets come from an INTEGER column: they fit.
                    self.position = i64::try_from(last.offset).unwrap_or(i64::MAX);
                    self.found_nothing = None;
                    return Ok(rows);
                }
                self.found_nothing = Some((groups, now));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self) -> Result<(), BackendError> {
        if self.position == self.committed {
            return Ok(());
        }
        let _lock = self.db.write_lock().await;
        // One statement, atomic on its own: no transaction round trips under the lock.
        sqlx::query(
            r#"INSERT INTO log_offsets (topic, grp, "offset") VALUES (?, ?, ?)
               ON CONFLICT (topic, grp) DO UPDATE SET "offset" = excluded."offset""#,
        )
        .bind(&*self.topic)
        .bind(&self.group)
        .bind(self.position)
        .execute(self.db.pool())
        .await
        .map_err(err)?;
        self.committed = self.position;
        let now = tokio::time::Instant::now();
        let (trimmed_at_offset, trimmed_at) = self.trimmed;
        if self.committed - trimmed_at_offset >= TRIM_RECORDS || now >= trimmed_at + TRIM_AFTER {
            // Records every group has consumed are no longer needed. (A failure here leaves
            // them for the next commit: the position above is committed.)
            sqlx::query(
                r#"DELETE FROM log WHERE topic = ?1 AND "offset" <= (SELECT MIN("offset") FROM log_offsets WHERE topic = ?1)"#,
            )
            .bind(&*self.topic)
            .execute(self.db.pool())
            .await
            .map_err(err)?;
            self.trimmed = (self.committed, now);
        }
        Ok(())
    }
}
