//! [`SqliteLog`]: the embedded durable log. Appends are group-committed by one writer
//! thread that owns a SQLite connection of its own (rusqlite, no async driver between):
//! concurrent senders share a transaction, and each learns its records are durable when it
//! commits. Consumers read by offset (through the pool) and commit their position per group
//! through the same writer, as with Kafka.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley_protocol::Id;
use rusqlite::TransactionBehavior;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{BACKEND, Database, err};
use crate::backend::{BackendError, Log, LogConsumer, LogRecord, PolledRecord};

/// Most commands (appends, mostly) the writer takes in one turn: its appends share one
/// transaction.
const MAX_GROUP: usize = 512;

/// Where the writer answers an append: the offsets of its records, or why it failed.
type Offsets = oneshot::Sender<Result<Vec<u64>, BackendError>>;

/// What the writer thread is asked to do.
#[derive(Debug)]
enum Command {
    /// Append the records; answer their offsets, in order.
    Append(
        Vec<LogRecord>,
        oneshot::Sender<Result<Vec<u64>, BackendError>>,
    ),
    /// Record that `group` consumed every record up to `offset`, and, where `trim` is set,
    /// delete the records every group of the topic has consumed.
    Commit {
        group: String,
        offset: i64,
        trim: bool,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
}

/// One topic of the embedded log.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    db: Database,
    topic: Arc<str>,
    commands: mpsc::Sender<Command>,
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
/// records since it last did, or [`TRIM_AFTER`] passed: not on every commit.
const TRIM_RECORDS: i64 = 1024;
/// See [`TRIM_RECORDS`].
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// How long a consumer that found nothing trusts the writer's count before it reads the
/// log anyway (appends from another handle on the same file count nowhere here).
const REREAD: Duration = Duration::from_secs(1);

impl SqliteLog {
    /// Opens `topic` on `db`: opens the writer's own connection to `db`'s file and starts
    /// the writer thread (`parley-sqlite-log`), which ends once every handle is dropped.
    /// Errors: `unavailable` when the file cannot be opened.
    pub fn new(db: Database, topic: &str) -> Result<Self, BackendError> {
        let conn = connect(db.path())?;
        let (tx, rx) = mpsc::channel(4096);
        let appended = Arc::new(Appended::default());
        let topic: Arc<str> = topic.into();
        let writer = Writer {
            conn,
            db: db.clone(),
            topic: topic.clone(),
            appended: appended.clone(),
        };
        std::thread::Builder::new()
            .name("parley-sqlite-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| BackendError::unavailable(BACKEND, format!("log writer: {e}")))?;
        Ok(Self {
            db,
            topic,
            commands: tx,
            appended,
        })
    }
}

/// Sends the writer the command `command` makes of a reply channel and waits for its answer.
/// Errors: the command's, or `unavailable` once the writer has stopped.
async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<Result<T, BackendError>>) -> Command,
) -> Result<T, BackendError> {
    let stopped = || BackendError::unavailable("sqlite log", "the writer has stopped");
    let (reply, answer) = oneshot::channel();
    commands.send(command(reply)).await.map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}

/// The writer's connection to the database file at `path`, with the pool's settings that
/// are per connection (<https://sqlite.org/pragma.html>): `synchronous = NORMAL` (in WAL
/// mode a commit survives a crash of the process, not of the machine), a 5 s busy timeout
/// for writers outside this process's write lock, and no checkpoint inside a commit
/// (`wal_autocheckpoint = 0`: the pool's checkpoint task does it).
fn connect(path: &Path) -> Result<rusqlite::Connection, BackendError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite_err)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(sqlite_err)?;
    Ok(conn)
}

/// `unavailable` for what may pass (another process holding the database past the busy
/// timeout, an I/O error, a full disk), `internal` for the rest.
fn sqlite_err(e: rusqlite::Error) -> BackendError {
    use rusqlite::ErrorCode::{
        CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure,
    };
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen) => {
            BackendError::unavailable(BACKEND, e)
        }
        _ => BackendError::internal(BACKEND, e),
    }
}

/// The writer thread's state.
struct Writer {
    conn: rusqlite::Connection,
    db: Database,
    topic: Arc<str>,
    appended: Arc<Appended>,
}

impl Writer {
    /// Takes the commands that queued meanwhile (at most [`MAX_GROUP`]), under the
    /// database's write lock: every append in one transaction, then the commits, each
    /// answered once its transaction committed; until every sender is gone.
    fn run(self, mut commands: mpsc::Receiver<Command>) {
        let mut batch: Vec<Command> = Vec::with_capacity(MAX_GROUP);
        let mut appends = Vec::with_capacity(MAX_GROUP);
        while commands.blocking_recv_many(&mut batch, MAX_GROUP) > 0 {
            let _lock = self.db.blocking_write_lock();
            for command in batch.drain(..) {
                match command {
                    Command::Append(records, reply) => appends.push((records, reply)),
                    Command::Commit {
                        group,
                        offset,
                        trim,
                        reply,
                    } => {
                        let _ = reply.send(self.commit(&group, offset, trim));
                    }
                }
            }
            if appends.is_empty() {
                continue;
            }
            match self.append(&appends) {
                Ok(offsets) => {
                    for ((_, reply), offsets) in appends.drain(..).zip(offsets) {
                        let _ = reply.send(Ok(offsets));
                    }
                    self.appended.groups.fetch_add(1, Ordering::Release);
                    self.appended.notify.notify_waiters();
                }
                Err(e) => {
                    for (_, reply) in appends.drain(..) {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Writes every append of `group` in one transaction; the offsets of each append's
    /// records (`AUTOINCREMENT` row IDs: only this thread inserts, so they increase in
    /// insertion order).
    fn append(&self, group: &[(Vec<LogRecord>, Offsets)]) -> Result<Vec<Vec<u64>>, BackendError> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(sqlite_err)?;
        let mut offsets = Vec::with_capacity(group.len());
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO log (topic, key, payload) VALUES (?1, ?2, ?3)")
                .map_err(sqlite_err)?;
            for (records, _) in group {
                let mut these = Vec::with_capacity(records.len());
                for r in records {
                    let key = r.key.to_i64().ok_or_else(|| {
                        BackendError::internal("sqlite log", format!("key {} out of range", r.key))
                    })?;
                    insert
                        .execute((&*self.topic, key, &r.payload[..]))
                        .map_err(sqlite_err)?;
                    these.push(offset_of(tx.last_insert_rowid())?);
                }
                offsets.push(these);
            }
        }
        tx.commit().map_err(sqlite_err)?;
        Ok(offsets)
    }

    /// Records `group`'s position (one statement, atomic on its own), then, where `trim`
    /// is set, deletes the records every group has consumed (a failure there leaves them
    /// for a later commit: the position is recorded).
    fn commit(&self, group: &str, offset: i64, trim: bool) -> Result<(), BackendError> {
        self.conn
            .prepare_cached(
                r#"INSERT INTO log_offsets (topic, grp, "offset") VALUES (?1, ?2, ?3)
                   ON CONFLICT (topic, grp) DO UPDATE SET "offset" = excluded."offset""#,
            )
            .and_then(|mut upsert| upsert.execute((&*self.topic, group, offset)))
            .map_err(sqlite_err)?;
        if trim {
            self.conn
                .prepare_cached(
                    r#"DELETE FROM log WHERE topic = ?1 AND "offset" <= (SELECT MIN("offset") FROM log_offsets WHERE topic = ?1)"#,
                )
                .and_then(|mut delete| delete.execute([&*self.topic]))
                .map_err(sqlite_err)?;
        }
        Ok(())
    }
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
        ask(&self.commands, |reply| {
            Command::Append(records.to_vec(), reply)
        })
        .await
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
            commands: self.commands.clone(),
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
    /// The writer, which records this consumer's commits.
    commands: mpsc::Sender<Command>,
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
        let now = tokio::time::Instant::now();
        let (trimmed_at_offset, trimmed_at) = self.trimmed;
        let trim =
            self.position - trimmed_at_offset >= TRIM_RECORDS || now >= trimmed_at + TRIM_AFTER;
        let (group, offset) = (self.group.clone(), self.position);
        ask(&self.commands, |reply| Command::Commit {
            group,
            offset,
            trim,
            reply,
        })
        .await?;
        self.committed = self.position;
        if trim {
            self.trimmed = (self.committed, now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn what_may_pass_is_unavailable_the_rest_internal() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_CANTOPEN,
        ] {
            let e = sqlite_err(failure(code));
            assert!(matches!(e, BackendError::Unavailable { .. }), "{code}: {e}");
        }
        for code in [
            rusqlite::ffi::SQLITE_CONSTRAINT,
            rusqlite::ffi::SQLITE_CORRUPT,
            rusqlite::ffi::SQLITE_MISMATCH,
        ] {
            let e = sqlite_err(failure(code));
            assert!(matches!(e, BackendError::Internal { .. }), "{code}: {e}");
        }
    }
}
