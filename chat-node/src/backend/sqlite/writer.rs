//! [`Writer`]: the database's one writer thread for the hot writes (the log's appends, its
//! consumers' offset commits, the persister's message batches) and the consumers' reads of
//! the log. It owns a SQLite connection
//! of its own (rusqlite: each statement runs on the thread, no hand-off to an async
//! driver's worker and back, which cost a one-row append 150-450 us against ~35 us here),
//! and the writes queue on its channel instead of meeting in SQLite, whose busy handler
//! sleeps 1, 2, 5, 10 ms... between tries (`sqliteDefaultBusyCallback` in SQLite's
//! `main.c`). The appends that queued meanwhile share one transaction (group commit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_protocol::Id;
use rusqlite::TransactionBehavior;
use tokio::sync::{mpsc, oneshot};

use super::BACKEND;
use super::log::Appended;
use crate::backend::{BackendError, LogRecord, OwnerTerm, PolledRecord, StoredMessage};

/// Most commands the writer takes in one turn: their appends share one transaction.
const MAX_GROUP: usize = 512;

/// How many commands may wait for the writer before a caller waits to queue.
const QUEUE: usize = 4096;

/// The WAL's size past which the writer checkpoints it itself, and the size SQLite cuts the
/// file back to when it starts the WAL over (`journal_size_limit`).
pub(super) const WAL_LIMIT: u64 = 64 << 20;

/// Where the writer answers.
type Reply<T> = oneshot::Sender<Result<T, BackendError>>;

/// What the writer thread is asked to do.
#[derive(Debug)]
enum Command {
    /// Append `records` to `topic`; answer their offsets, in order, then wake `appended`.
    Append {
        topic: Arc<str>,
        records: Vec<LogRecord>,
        appended: Arc<Appended>,
        reply: Reply<Vec<u64>>,
    },
    /// Record that `group` consumed `topic` up to `offset`, and, where `trim` is set,
    /// delete the records every group of the topic has consumed.
    Commit {
        topic: Arc<str>,
        group: String,
        offset: i64,
        trim: bool,
        reply: Reply<()>,
    },
    /// Read at most `max` records of `topic` after `after`, oldest first.
    Read {
        topic: Arc<str>,
        after: i64,
        max: usize,
        reply: Reply<Vec<PolledRecord>>,
    },
    /// Store `messages` (skipping those stored) and raise the channels' owner `terms`, in
    /// one transaction; answer how many messages were new.
    Store {
        messages: Vec<StoredMessage>,
        terms: Vec<(Id, OwnerTerm)>,
        reply: Reply<u64>,
    },
}

/// A handle on the writer thread (`parley-sqlite-writer`), which ends once every handle is
/// dropped, after the commands already queued.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    commands: mpsc::Sender<Command>,
}

impl Writer {
    /// Opens the writer's connection to the database file at `path` and starts the thread,
    /// which keeps the WAL under about `wal_limit` bytes ([`WalBound`]). Errors:
    /// `unavailable` when the file cannot be opened or the thread not started.
    pub(super) fn start(path: &Path, wal_limit: u64) -> Result<Self, BackendError> {
        let conn = connect(path, wal_limit)?;
        let wal = WalBound {
            path: wal_path(path),
            limit: wal_limit,
        };
        let (commands, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("parley-sqlite-writer".into())
            .spawn(move || run(&conn, rx, &wal))
            .map_err(|e| BackendError::unavailable(BACKEND, format!("writer thread: {e}")))?;
        Ok(Self { commands })
    }

    /// Appends `records` to `topic`: their offsets, in order, once committed; `appended`
    /// is woken after the commit. Errors: `unavailable` (a full disk, I/O, another process
    /// holding the database past the busy timeout, the writer stopped), `internal`.
    pub(super) async fn append(
        &self,
        topic: &Arc<str>,
        records: Vec<LogRecord>,
        appended: &Arc<Appended>,
    ) -> Result<Vec<u64>, BackendError> {
        self.ask(|reply| Command::Append {
            topic: topic.clone(),
            records,
            appended: appended.clone(),
            reply,
        })
        .await
    }

    /// Records `group`'s position `offset` in `topic`, then, where `trim` is set, deletes
    /// the records every group has consumed (a failure there is returned, the position
    /// stays recorded). Errors: as [`Writer::append`].
    pub(super) async fn commit(
        &self,
        topic: &Arc<str>,
        group: &str,
        offset: i64,
        trim: bool,
    ) -> Result<(), BackendError> {
        self.ask(|reply| Command::Commit {
            topic: topic.clone(),
            group: group.to_owned(),
            offset,
            trim,
            reply,
        })
        .await
    }

    /// At most `max` records of `topic` with offsets above `after`, oldest first. On the
    /// writer's connection, between its writes: a consumer's read is ~10x cheaper there
    /// than through the pool's connection threads, and it is as fresh (the writer commits
    /// before it answers). Errors: as [`Writer::append`].
    pub(super) async fn read(
        &self,
        topic: &Arc<str>,
        after: i64,
        max: usize,
    ) -> Result<Vec<PolledRecord>, BackendError> {
        self.ask(|reply| Command::Read {
            topic: topic.clone(),
            after,
            max,
            reply,
        })
        .await
    }

    /// Stores `messages` (those already stored are skipped) and raises each channel's
    /// stored owner term to the one in `terms` where that is later, atomically; how many
    /// messages were new. Errors: as [`Writer::append`].
    pub(super) async fn store(
        &self,
        messages: Vec<StoredMessage>,
        terms: Vec<(Id, OwnerTerm)>,
    ) -> Result<u64, BackendError> {
        self.ask(|reply| Command::Store {
            messages,
            terms,
            reply,
        })
        .await
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, BackendError> {
        let stopped = || BackendError::unavailable(BACKEND, "the writer thread has stopped");
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer's connection to the database file at `path`, with the pool's settings that
/// are per connection (<https://sqlite.org/pragma.html>): `synchronous = NORMAL` (in WAL
/// mode a commit survives a crash of the process, not of the machine), foreign keys, a 5 s
/// busy timeout for the writers outside this thread (the directory's, other processes),
/// no checkpoint inside a commit (`wal_autocheckpoint = 0`: the pool's checkpoint task
/// does it, and [`WalBound`]), and a WAL file cut back to `wal_limit` bytes when SQLite
/// starts it over (`journal_size_limit`).
fn connect(path: &Path, wal_limit: u64) -> Result<rusqlite::Connection, BackendError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite_err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sqlite_err)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(sqlite_err)?;
    conn.pragma_update(
        None,
        "journal_size_limit",
        i64::try_from(wal_limit).unwrap_or(i64::MAX),
    )
    .map_err(sqlite_err)?;
    Ok(conn)
}

/// The WAL file of the database file at `path` (SQLite names it `<path>-wal`).
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Keeps the WAL from growing without end while the writer never pauses. SQLite starts
/// the WAL over (from its first frame) only at a write that begins after a checkpoint
/// copied every frame into the database (<https://sqlite.org/wal.html#avoiding_excessively_large_wal_files>).
/// The pool's checkpoint task runs beside the writes, so under a steady stream of them
/// new frames always arrive while it copies and the WAL is never started over: it grew to
/// 2.9 GB in 35 s of sends at full speed. So once the file is past the limit (it is never
/// past it otherwise: starting over cuts it back to the limit) the writer checkpoints it
/// itself, between its transactions, where no write of its own can come in meanwhile.
#[derive(Debug)]
struct WalBound {
    path: PathBuf,
    limit: u64,
}

impl WalBound {
    /// After each turn of the writer: looks at the WAL's size (a `stat`, about a
    /// microsecond) and checkpoints it (`PASSIVE`: it waits for no reader) when past the
    /// limit. A checkpoint that fails is logged and tried again after the next turn.
    fn after_turn(&self, conn: &rusqlite::Connection) {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size <= self.limit {
            return;
        }
        let started = Instant::now();
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        }) {
            Ok((frames, copied)) => tracing::debug!(
                size,
                frames,
                copied,
                took_ms = started.elapsed().as_millis() as u64,
                "the WAL was past its limit: checkpointed by the writer"
            ),
            Err(e) => tracing::warn!(
                size,
                "checkpointing the WAL failed (tried again later): {e}"
            ),
        }
    }
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

/// An ID as the tables keep it (`internal` above `Id::MAX`, which only code can make).
fn sql_id(id: Id) -> Result<i64, BackendError> {
    id.to_i64()
        .ok_or_else(|| BackendError::internal(BACKEND, format!("ID {id} is out of range")))
}

/// A `u64` bound to a signed 64-bit column (`internal` above `i64::MAX`), as
/// `sql::Unsigned` does for sqlx.
fn sql_unsigned(v: u64) -> Result<i64, BackendError> {
    i64::try_from(v).map_err(|_| BackendError::internal(BACKEND, format!("{v} is beyond i64::MAX")))
}

/// A row's offset (they start at 1 and never go back: [`NEXT_OFFSET`]).
fn offset_of(offset: i64) -> Result<u64, BackendError> {
    u64::try_from(offset)
        .map_err(|_| BackendError::internal(BACKEND, format!("offset {offset} of a record")))
}

/// Takes the commands that queued meanwhile (at most [`MAX_GROUP`]): commits, reads and
/// stores one by one, then every append in one transaction, then looks at the WAL
/// ([`WalBound`]); until every handle is gone.
fn run(conn: &rusqlite::Connection, mut commands: mpsc::Receiver<Command>, wal: &WalBound) {
    let mut batch: Vec<Command> = Vec::with_capacity(MAX_GROUP);
    let mut appends = Vec::with_capacity(MAX_GROUP);
    while commands.blocking_recv_many(&mut batch, MAX_GROUP) > 0 {
        // Once a command of this turn finds the database unavailable (another process
        // holding it past the busy timeout, a full disk), the turn's other commands get
        // the same answer instead of each waiting out the busy timeout again.
        let mut down: Option<BackendError> = None;
        for command in batch.drain(..) {
            match command {
                Command::Append {
                    topic,
                    records,
                    appended,
                    reply,
                } => appends.push((topic, records, appended, reply)),
                Command::Commit {
                    topic,
                    group,
                    offset,
                    trim,
                    reply,
                } => {
                    let _ = reply.send(unless_down(&mut down, || {
                        commit(conn, &topic, &group, offset, trim)
                    }));
                }
                Command::Read {
                    topic,
                    after,
                    max,
                    reply,
                } => {
                    let _ = reply.send(unless_down(&mut down, || read(conn, &topic, after, max)));
                }
                Command::Store {
                    messages,
                    terms,
                    reply,
                } => {
                    let _ = reply.send(unless_down(&mut down, || store(conn, &messages, &terms)));
                }
            }
        }
        if !appends.is_empty() {
            let result = unless_down(&mut down, || append(conn, &appends));
            answer_appends(&mut appends, result);
        }
        wal.after_turn(conn);
    }
}

/// `op`'s result, or the error that found the database unavailable earlier in the turn
/// (`down`), without running `op`; an `unavailable` error of `op` is kept in `down`.
fn unless_down<T>(
    down: &mut Option<BackendError>,
    op: impl FnOnce() -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    if let Some(e) = down {
        return Err(e.clone());
    }
    let result = op();
    if let Err(e @ BackendError::Unavailable { .. }) = &result {
        *down = Some(e.clone());
    }
    result
}

/// Answers each of `appends` from `result` (their offsets, or why their transaction
/// failed) and wakes their topics' consumers after a commit.
fn answer_appends(appends: &mut Vec<Append>, result: Result<Vec<Vec<u64>>, BackendError>) {
    match result {
        Ok(offsets) => {
            let mut woken: Vec<Arc<Appended>> = Vec::new();
            for ((_, _, appended, reply), offsets) in appends.drain(..).zip(offsets) {
                let _ = reply.send(Ok(offsets));
                if !woken.iter().any(|w| Arc::ptr_eq(w, &appended)) {
                    woken.push(appended);
                }
            }
            for appended in woken {
                appended.committed();
            }
        }
        Err(e) => {
            for (_, _, _, reply) in appends.drain(..) {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One queued append: its topic, records, the topic's notice and where to answer.
type Append = (Arc<str>, Vec<LogRecord>, Arc<Appended>, Reply<Vec<u64>>);

/// The offset after the highest one ever given: one above the highest in the log or in
/// its consumers' positions (a trim deletes only records that every group of the topic
/// consumed, so a record no longer in the log is at or below some group's position).
/// Read inside the append's write transaction, so a writer in another connection cannot
/// take the same offsets meanwhile.
const NEXT_OFFSET: &str = r#"SELECT MAX(COALESCE((SELECT MAX("offset") FROM log), 0),
    COALESCE((SELECT MAX("offset") FROM log_offsets), 0)) + 1"#;

/// Writes every append of `group` in one transaction; the offsets of each append's
/// records, increasing in insertion order from [`NEXT_OFFSET`] (schema version 5: no
/// `AUTOINCREMENT`, whose `sqlite_sequence` row was a page more in the WAL per commit).
fn append(conn: &rusqlite::Connection, group: &[Append]) -> Result<Vec<Vec<u64>>, BackendError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(sqlite_err)?;
    let mut offsets = Vec::with_capacity(group.len());
    {
        let mut next: i64 = tx
            .prepare_cached(NEXT_OFFSET)
            .and_then(|mut s| s.query_row([], |row| row.get(0)))
            .map_err(sqlite_err)?;
        let mut insert = tx
            .prepare_cached(
                r#"INSERT INTO log ("offset", topic, key, payload) VALUES (?1, ?2, ?3, ?4)"#,
            )
            .map_err(sqlite_err)?;
        for (topic, records, _, _) in group {
            let mut these = Vec::with_capacity(records.len());
            for r in records {
                insert
                    .execute((next, &**topic, sql_id(r.key)?, &r.payload[..]))
                    .map_err(sqlite_err)?;
                these.push(offset_of(next)?);
                next += 1;
            }
            offsets.push(these);
        }
    }
    tx.commit().map_err(sqlite_err)?;
    Ok(offsets)
}

/// See [`Writer::commit`]: one statement for the position, atomic on its own.
fn commit(
    conn: &rusqlite::Connection,
    topic: &str,
    group: &str,
    offset: i64,
    trim: bool,
) -> Result<(), BackendError> {
    conn.prepare_cached(
        r#"INSERT INTO log_offsets (topic, grp, "offset") VALUES (?1, ?2, ?3)
           ON CONFLICT (topic, grp) DO UPDATE SET "offset" = excluded."offset""#,
    )
    .and_then(|mut upsert| upsert.execute((topic, group, offset)))
    .map_err(sqlite_err)?;
    if trim {
        conn.prepare_cached(
            r#"DELETE FROM log WHERE topic = ?1 AND "offset" <= (SELECT MIN("offset") FROM log_offsets WHERE topic = ?1)"#,
        )
        .and_then(|mut delete| delete.execute([topic]))
        .map_err(sqlite_err)?;
    }
    Ok(())
}

/// See [`Writer::read`].
fn read(
    conn: &rusqlite::Connection,
    topic: &str,
    after: i64,
    max: usize,
) -> Result<Vec<PolledRecord>, BackendError> {
    let mut select = conn
        .prepare_cached(
            r#"SELECT "offset", key, payload FROM log WHERE topic = ?1 AND "offset" > ?2 ORDER BY "offset" LIMIT ?3"#,
        )
        .map_err(sqlite_err)?;
    let rows = select
        .query_map(
            (topic, after, i64::try_from(max).unwrap_or(i64::MAX)),
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                ))
            },
        )
        .map_err(sqlite_err)?;
    let mut records = Vec::new();
    for row in rows {
        let (offset, key, payload) = row.map_err(sqlite_err)?;
        records.push(PolledRecord {
            offset: offset_of(offset)?,
            key: u64::try_from(key)
                .map(Id)
                .map_err(|_| BackendError::internal(BACKEND, format!("key {key} of a record")))?,
            payload: payload.into(),
        });
    }
    Ok(records)
}

/// See [`Writer::store`]. The columns are encoded as sqlx encodes them for the readers
/// (`backend::sql::rows`): IDs, seqs and times as integers, the attachments as JSON text,
/// `moderated` as 0 or 1.
fn store(
    conn: &rusqlite::Connection,
    messages: &[StoredMessage],
    terms: &[(Id, OwnerTerm)],
) -> Result<u64, BackendError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(sqlite_err)?;
    let mut inserted = 0;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO messages (channel_id, id, seq, author_id, text, client_msg_id, \
                 attachments, reply_to, created_at, moderated) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
            )
            .map_err(sqlite_err)?;
        for m in messages {
            let attachments = serde_json::to_string(&m.attachments)
                .map_err(|e| BackendError::internal(BACKEND, e))?;
            let reply_to = m.reply_to.map(sql_id).transpose()?;
            inserted += insert
                .execute(rusqlite::params![
                    sql_id(m.channel_id)?,
                    sql_id(m.id)?,
                    sql_unsigned(m.seq)?,
                    sql_id(m.author_id)?,
                    m.text,
                    m.client_msg_id,
                    attachments,
                    reply_to,
                    m.created_at.0,
                    m.moderated,
                ])
                .map_err(sqlite_err)? as u64;
        }
        let mut raise = tx
            .prepare_cached(
                "INSERT INTO channel_terms (channel_id, generation, term) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (channel_id) DO UPDATE \
                 SET generation = excluded.generation, term = excluded.term \
                 WHERE (excluded.generation, excluded.term) > (generation, term)",
            )
            .map_err(sqlite_err)?;
        for (channel, term) in terms {
            raise
                .execute((
                    sql_id(*channel)?,
                    sql_unsigned(term.generation)?,
                    sql_unsigned(term.term)?,
                ))
                .map_err(sqlite_err)?;
        }
    }
    tx.commit().map_err(sqlite_err)?;
    Ok(inserted)
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

    #[test]
    fn once_the_database_is_unavailable_the_rest_of_the_turn_is_answered_without_trying() {
        let mut down = None;
        let internal = unless_down(&mut down, || -> Result<(), _> {
            Err(BackendError::internal(BACKEND, "corrupt"))
        });
        assert!(matches!(internal, Err(BackendError::Internal { .. })));
        assert!(
            down.is_none(),
            "an internal error says nothing of the others"
        );
        assert_eq!(unless_down(&mut down, || Ok(1)).unwrap(), 1);
        let busy = unless_down(&mut down, || -> Result<(), _> {
            Err(sqlite_err(failure(rusqlite::ffi::SQLITE_BUSY)))
        });
        assert!(matches!(busy, Err(BackendError::Unavailable { .. })));
        let mut ran = false;
        let after = unless_down(&mut down, || {
            ran = true;
            Ok(2)
        });
        assert!(!ran, "tried again after the database was found unavailable");
        assert!(matches!(after, Err(BackendError::Unavailable { .. })));
    }
}
