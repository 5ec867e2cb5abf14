//! Embedded backends on one SQLite file: the Store ([`SqliteStore`]) and the durable log
//! ([`SqliteLog`]), both on one [`Database`].

mod log;
mod store;
mod writer;

pub use log::SqliteLog;
pub use store::{SqliteMessages, SqliteStore};

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use self::writer::Writer;
use super::BackendError;
use super::sql::names::NameKeys;

const BACKEND: &str = "sqlite";

/// One schema migration: its SQL, then, where `rekey_names` is set, the Rust that
/// recomputes the name keys of existing rows (SQL cannot), in the same transaction.
struct Migration {
    sql: &'static str,
    rekey_names: bool,
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: include_str!("schema.sql"),
        rekey_names: false,
    },
    Migration {
        sql: include_str!("0002_name_keys.sql"),
        rekey_names: true,
    },
    Migration {
        sql: include_str!("0003_channel_terms.sql"),
        rekey_names: false,
    },
    Migration {
        sql: include_str!("0004_owner_generations.sql"),
        rekey_names: false,
    },
    Migration {
        sql: include_str!("0005_log_offsets_by_writer.sql"),
        rekey_names: false,
    },
];

pub(crate) fn err(e: sqlx::Error) -> BackendError {
    super::sql::error::backend_error::<sqlx::Sqlite>(e)
}

/// One SQLite database: its connection pool (reads, and the directory's writes), and its
/// writer thread ([`writer`]: the log's appends and offset commits, the persister's message
/// batches).
#[derive(Debug, Clone)]
pub struct Database {
    pool: SqlitePool,
    writer: Writer,
    /// The directory to remove once the last handle is dropped ([`open_temp`]).
    #[cfg(test)]
    _temp: Option<std::sync::Arc<TempDir>>,
}

impl Database {
    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Closes the pool (see `sqlx::Pool::close`); the writer thread ends once every handle
    /// is dropped.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Opens (creating if needed) the database file and brings its schema up to date. A new
/// file is created `0600`; SQLite gives its `-wal` and `-shm` files the database file's
/// mode, so they are private too.
pub async fn open(path: &Path) -> Result<Database, BackendError> {
    open_with_wal_limit(path, writer::WAL_LIMIT).await
}

/// [`open`], the writer keeping the WAL under about `wal_limit` bytes.
async fn open_with_wal_limit(path: &Path, wal_limit: u64) -> Result<Database, BackendError> {
    match super::datadir::new_private_file().open(path).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(BackendError::unavailable(BACKEND, e)),
    }
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(err)?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL: a commit survives a crash of the process (not of the machine).
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        // No checkpoint in the commit that fills the WAL past 1000 pages (SQLite's
        // default): that commit (a send's append, as often as not) would wait for the
        // pages to be copied and the file synced. [`checkpoints`] does it beside them (and
        // the writer between its transactions once the WAL is past `wal_limit`).
        .pragma("wal_autocheckpoint", "0")
        // Where a connection of the pool starts the WAL over, the file is cut back too.
        .pragma("journal_size_limit", wal_limit.to_string());
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        // No ping before each use: it is a round trip to the connection's worker thread
        // (two thread switches) and finds nothing on a local file that a query would not.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(err)?;
    migrate(&pool).await?;
    let writer = Writer::start(path, wal_limit)?;
    tokio::spawn(checkpoints(pool.clone()));
    Ok(Database {
        pool,
        writer,
        #[cfg(test)]
        _temp: None,
    })
}

/// The shortest and longest period between two of [`checkpoints`]' checkpoints.
const CHECKPOINT_EVERY: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(50)..=Duration::from_secs(1);

/// How many WAL frames (a page of 4 KiB each, plus a 24-byte header) [`checkpoints`] aims
/// to find per checkpoint: about 1 MiB.
const CHECKPOINT_FRAMES: i64 = 256;

/// Copies the WAL into the database file until the pool is closed, with `PRAGMA
/// wal_checkpoint(PASSIVE)`: it waits for no reader or writer, and writers go on committing
/// while it runs (<https://sqlite.org/pragma.html#pragma_wal_checkpoint>,
/// <https://sqlite.org/wal.html#checkpointing>). Once a checkpoint has copied everything,
/// the next commit starts the WAL over, so its size stays about one period of writes. A
/// failed checkpoint is logged and tried again at the next period.
///
/// The period follows the write rate ([`next_checkpoint_period`]), because a checkpoint
/// first syncs the WAL (`synchronous = NORMAL`) and, on ext4, the writer's commits stall
/// while that `fsync` runs: for ~5 ms at 1,000 sends/s with a checkpoint every second, ~60
/// ms with one every 5 s (`parley-bench compare one-to-one --interval-ms 1`, p99.9 of
/// send -> ack). Small, frequent checkpoints keep each stall short; an idle node checks
/// once a second.
async fn checkpoints(pool: SqlitePool) {
    let mut period = *CHECKPOINT_EVERY.end();
    let mut before = (0, 0);
    loop {
        tokio::time::sleep(period).await;
        if pool.is_closed() {
            return;
        }
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Ok((_busy, frames, copied)) => {
                period = next_checkpoint_period(period, frames_written(before, (frames, copied)));
                before = (frames, copied);
            }
            Err(_) if pool.is_closed() => return,
            Err(e) => {
                tracing::warn!("SQLite checkpoint failed (tried again in {period:?}): {e}");
            }
        }
    }
}

/// About how many WAL frames were written since the last checkpoint, from what that one
/// found (`before`: the frames the WAL held and how many of them were copied) and what
/// this one found (`now`): none when both are the same (an idle WAL still holds the
/// frames it was last started over with, all copied), else the frames the WAL holds (a
/// WAL that was started over since holds only new ones; one that could not be, because
/// writes never paused, holds more and more, and the period shrinks to its least).
fn frames_written(before: (i64, i64), now: (i64, i64)) -> i64 {
    if now == before { 0 } else { now.0 }
}

/// The period until the next checkpoint, from the current `period` and the `frames`
/// written since the last one ([`frames_written`]): halved while above [`CHECKPOINT_FRAMES`], doubled while below a quarter
/// of it, within [`CHECKPOINT_EVERY`].
fn next_checkpoint_period(period: Duration, frames: i64) -> Duration {
    let next = if frames > CHECKPOINT_FRAMES {
        period / 2
    } else if frames < CHECKPOINT_FRAMES / 4 {
        period * 2
    } else {
        period
    };
    next.clamp(*CHECKPOINT_EVERY.start(), *CHECKPOINT_EVERY.end())
}

/// A directory removed with everything in it when dropped.
#[cfg(test)]
#[derive(Debug)]
struct TempDir(std::path::PathBuf);

#[cfg(test)]
impl TempDir {
    /// A new directory under the system's temporary one.
    fn new() -> Result<Self, BackendError> {
        let dir = std::env::temp_dir().join(format!(
            "parley-db-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| BackendError::unavailable(BACKEND, e))?;
        Ok(Self(dir))
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database on a new file in a new directory under the system's temporary one, removed
/// when the last handle is dropped (tests: a file, not `:memory:`, because the log's
/// writer opens a connection of its own, and every connection to `:memory:` is a
/// database of its own).
#[cfg(test)]
pub async fn open_temp() -> Result<Database, BackendError> {
    open_temp_with_wal_limit(writer::WAL_LIMIT).await
}

/// [`open_temp`] with the writer keeping the WAL under about `wal_limit` bytes.
#[cfg(test)]
async fn open_temp_with_wal_limit(wal_limit: u64) -> Result<Database, BackendError> {
    let dir = TempDir::new()?;
    let mut db = open_with_wal_limit(&dir.0.join("parley.db"), wal_limit).await?;
    db._temp = Some(std::sync::Arc::new(dir));
    Ok(db)
}

/// Brings the schema up to date: applies the [`MIGRATIONS`] that `PRAGMA user_version`
/// says have not run, each in a transaction of its own.
async fn migrate(pool: &SqlitePool) -> Result<(), BackendError> {
    migrate_with(pool, MIGRATIONS).await
}

/// [`migrate`] with `migrations` as the whole list (tests: a database at an older version).
async fn migrate_with(pool: &SqlitePool, migrations: &[Migration]) -> Result<(), BackendError> {
    let mut conn = pool.acquire().await.map_err(err)?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
    let applied = usize::try_from(version).map_err(|_| {
        BackendError::internal(BACKEND, format!("unknown schema version {version}"))
    })?;
    if applied > migrations.len() {
        return Err(BackendError::internal(
            BACKEND,
            format!(
                "the database is at schema version {applied}, newer than this version of \
                 chat-node knows ({}): it was opened by a newer chat-node",
                migrations.len()
            ),
        ));
    }
    for (i, m) in migrations.iter().enumerate().skip(applied) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(err)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        if m.rekey_names {
            rekey_names(&mut tx).await.map_err(|e| {
                BackendError::internal(
                    BACKEND,
                    format!(
                        "cannot migrate the database to schema version {}: {e}",
                        i + 1
                    ),
                )
            })?;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            i + 1
        )))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
    Ok(())
}

/// Recomputes the name keys of every existing row (schema version 2), row by row.
async fn rekey_names(conn: &mut sqlx::SqliteConnection) -> Result<(), String> {
    let keys = NameKeys::prepare::<sqlx::Sqlite>(conn).await?;
    for u in &keys.users {
        sqlx::query("UPDATE users SET username_key = $1, username_skeleton = $2 WHERE id = $3")
            .bind(&u.key)
            .bind(&u.skeleton)
            .bind(u.id)
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    for g in &keys.groups {
        sqlx::query("UPDATE channels SET name_key = $1 WHERE id = $2")
            .bind(&g.key)
            .bind(g.id)
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    keys.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use parley_protocol::Id;

    use super::*;
    use crate::backend::{Log, LogRecord};

    #[test]
    fn the_checkpoint_period_follows_the_frames_written() {
        let max = *CHECKPOINT_EVERY.end();
        let min = *CHECKPOINT_EVERY.start();
        // About 3,000 frames a second (1,000 sends/s): the period shrinks until a
        // checkpoint finds at most CHECKPOINT_FRAMES, then holds.
        let mut period = max;
        for _ in 0..10 {
            let frames = (3000.0 * period.as_secs_f64()) as i64;
            period = next_checkpoint_period(period, frames);
        }
        assert_eq!(period, Duration::from_micros(62_500));
        assert_eq!(next_checkpoint_period(period, 187), period, "settled");
        assert_eq!(
            next_checkpoint_period(min, 100_000),
            min,
            "never below the least"
        );
        // Idle again: back up to a second, and no further.
        for _ in 0..10 {
            period = next_checkpoint_period(period, 0);
        }
        assert_eq!(period, max);
    }

    #[test]
    fn a_wal_idle_after_a_load_counts_no_frames_written() {
        // A steady load: each checkpoint copies everything, the next write starts the WAL
        // over, and each checkpoint finds about the same number of new frames.
        assert_eq!(frames_written((0, 0), (300, 300)), 300);
        assert_eq!(frames_written((300, 300), (310, 310)), 310);
        assert_eq!(frames_written((310, 310), (310, 310)), 0, "nothing since");
        // Writes that never pause: the WAL is never started over and only grows.
        assert_eq!(frames_written((310, 300), (900, 880)), 900);
        // So an idle node after a load goes back to a checkpoint a second.
        let mut period = *CHECKPOINT_EVERY.start();
        for _ in 0..10 {
            period = next_checkpoint_period(period, frames_written((3000, 3000), (3000, 3000)));
        }
        assert_eq!(period, *CHECKPOINT_EVERY.end());
    }

    fn record(key: u64) -> LogRecord {
        LogRecord {
            key: Id(key),
            payload: bytes::Bytes::from(format!("{key}")),
        }
    }

    async fn log_rows(db: &Database) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM log")
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn offsets_never_go_back_once_every_record_was_trimmed() {
        let db = open_temp().await.unwrap();
        let log = SqliteLog::new(db.clone(), "messages");
        let first = log
            .append(&[record(1), record(2), record(3)])
            .await
            .unwrap();
        assert_eq!(first, [1, 2, 3]);
        db.writer()
            .commit(&"messages".into(), "g", 3, true)
            .await
            .unwrap();
        assert_eq!(log_rows(&db).await, 0, "everything consumed was trimmed");
        assert_eq!(log.append(&[record(4)]).await.unwrap(), [4]);
        db.close().await;
    }

    /// A database at schema version 4 (`AUTOINCREMENT` offsets) with `records` appended
    /// to topic `messages`, group `g` at `position`, and the records up to `trimmed_to`
    /// deleted; then opened, which migrates it.
    async fn from_version_4(records: u64, position: i64, trimmed_to: i64) -> Database {
        let dir = TempDir::new().unwrap();
        let path = dir.0.join("parley.db");
        let options = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        migrate_with(&pool, &MIGRATIONS[..4]).await.unwrap();
        for key in 1..=records {
            sqlx::query("INSERT INTO log (topic, key, payload) VALUES ('messages', ?, x'00')")
                .bind(i64::try_from(key).unwrap())
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(
            r#"INSERT INTO log_offsets (topic, grp, "offset") VALUES ('messages', 'g', ?)"#,
        )
        .bind(position)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(r#"DELETE FROM log WHERE "offset" <= ?"#)
            .bind(trimmed_to)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let mut db = open(&path).await.unwrap();
        db._temp = Some(Arc::new(dir));
        db
    }

    #[tokio::test]
    async fn a_database_of_a_newer_version_is_refused() {
        let db = open_temp().await.unwrap();
        let err = migrate_with(db.pool(), &MIGRATIONS[..4]).await.unwrap_err();
        assert!(err.to_string().contains("schema version 5, newer"), "{err}");
        db.close().await;
    }

    #[tokio::test]
    async fn the_log_keeps_its_offsets_across_the_migration_to_offsets_by_the_writer() {
        // Records 4 and 5 not consumed yet: read after the migration with their offsets.
        let db = from_version_4(5, 3, 3).await;
        let log = SqliteLog::new(db.clone(), "messages");
        let mut c = log.consumer("g").await.unwrap();
        let got = c.poll(10, Duration::from_millis(100)).await.unwrap();
        let read: Vec<(u64, Id)> = got.iter().map(|r| (r.offset, r.key)).collect();
        assert_eq!(read, [(4, Id(4)), (5, Id(5))]);
        assert_eq!(log.append(&[record(6)]).await.unwrap(), [6]);
        db.close().await;

        // Every record consumed and trimmed before the migration: the next offset is still
        // above the group's position (AUTOINCREMENT's sqlite_sequence is gone with the old
        // table).
        let db = from_version_4(5, 5, 5).await;
        assert_eq!(log_rows(&db).await, 0);
        let log = SqliteLog::new(db.clone(), "messages");
        assert_eq!(log.append(&[record(6)]).await.unwrap(), [6]);
        let mut c = log.consumer("g").await.unwrap();
        let got = c.poll(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [6]);
        db.close().await;
    }

    /// Appends that never pause keep the pool's checkpoints (which run beside them) from
    /// ever letting SQLite start the WAL over; the writer's own checkpoints bound it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_near_its_limit_under_appends_that_never_pause() {
        let limit = 4 << 20;
        let db = open_temp_with_wal_limit(limit).await.unwrap();
        let wal = db._temp.as_ref().unwrap().0.join("parley.db-wal");
        let log = SqliteLog::new(db.clone(), "messages");
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let appenders: Vec<_> = (0..8)
            .map(|i| {
                let (log, stop, written) = (log.clone(), stop.clone(), written.clone());
                tokio::spawn(async move {
                    let record = LogRecord {
                        key: Id(i),
                        payload: bytes::Bytes::from(vec![b'x'; 2000]),
                    };
                    while !stop.load(Ordering::Relaxed) {
                        log.append(std::slice::from_ref(&record)).await.unwrap();
                        written.fetch_add(2000, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut largest = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        stop.store(true, Ordering::Relaxed);
        for a in appenders {
            a.await.unwrap();
        }
        let written = written.load(Ordering::Relaxed);
        assert!(
            written > 8 * limit,
            "too few appends to tell: {written} bytes"
        );
        assert!(
            largest < 3 * limit,
            "the WAL grew to {largest} bytes with a limit of {limit} ({written} bytes appended)"
        );
        db.close().await;
    }
}
