//! Embedded backends on one SQLite file: the Store ([`SqliteStore`]) and the durable log
//! ([`SqliteLog`]), both on one [`Database`].

mod log;
mod store;

pub use log::SqliteLog;
pub use store::{SqliteMessages, SqliteStore};

use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

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
];

/// `head VALUES (?, ..), .. tail`: `rows` tuples of `columns` placeholders, for a multi-row
/// statement whose values are then bound in order with `Query::bind` (which, unlike
/// `QueryBuilder::push_bind`, reports a value that does not encode as an error of the
/// query instead of panicking).
pub(crate) fn multi_row_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let tuple = format!("({})", vec!["?"; columns].join(", "));
    format!("{head} VALUES {}{tail}", vec![tuple; rows].join(", "))
}

pub(crate) fn err(e: sqlx::Error) -> BackendError {
    super::sql::error::backend_error::<sqlx::Sqlite>(e)
}

/// One SQLite database: its connection pool, and the lock that the hot writers (the log's
/// group commits, the persister's batches and its offset commits) take around each write.
///
/// SQLite lets one connection write at a time; another that tries is refused with
/// `SQLITE_BUSY` and retried by the busy handler, which sleeps 1, 2, 5, 10 ms... between
/// tries (`sqliteDefaultBusyCallback` in SQLite's `main.c`; libsqlite3-sys builds it with
/// `HAVE_USLEEP`). So a send whose append met a persister batch waited at least 1 ms
/// (the 1:1 p99 of issue 14). Writers that queue here instead wait only as long as the
/// write before them. Other writes (the directory's) still rely on the busy handler:
/// they are rare next to these.
#[derive(Debug, Clone)]
pub struct Database {
    pool: SqlitePool,
    path: Arc<Path>,
    writes: Arc<tokio::sync::Mutex<()>>,
    /// The directory to remove once the last handle is dropped ([`open_temp`]).
    #[cfg(test)]
    _temp: Option<Arc<TempDir>>,
}

impl Database {
    fn new(pool: SqlitePool, path: &Path) -> Self {
        Self {
            pool,
            path: path.into(),
            writes: Arc::default(),
            #[cfg(test)]
            _temp: None,
        }
    }

    /// The database file (for connections outside the pool: the log's writer).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection pool (reads, and writes that do not take [`Database::write_lock`]).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Waits for this process's other hot writers (first come, first served: tokio's
    /// `Mutex` is fair) and holds them off until the guard is dropped.
    pub(crate) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// [`Database::write_lock`] for a thread outside the async runtime (it panics on
    /// one of the runtime's threads: tokio's `Mutex::blocking_lock`).
    pub(crate) fn blocking_write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.blocking_lock()
    }

    /// Closes the pool (see `sqlx::Pool::close`).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Opens (creating if needed) the database file and brings its schema up to date. A new
/// file is created `0600`; SQLite gives its `-wal` and `-shm` files the database file's
/// mode, so they are private too.
pub async fn open(path: &Path) -> Result<Database, BackendError> {
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
        // pages to be copied and the file synced. [`checkpoints`] does it beside them.
        .pragma("wal_autocheckpoint", "0");
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        // No ping before each use: it is a round trip to the connection's worker thread
        // (two thread switches) and finds nothing on a local file that a query would not.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(err)?;
    migrate(&pool).await?;
    tokio::spawn(checkpoints(pool.clone()));
    Ok(Database::new(pool, path))
}

/// How often [`checkpoints`] copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`] until the pool is
/// closed, with `PRAGMA wal_checkpoint(PASSIVE)`: it waits for no reader or writer, and
/// writers go on committing while it runs (<https://sqlite.org/pragma.html#pragma_wal_checkpoint>,
/// <https://sqlite.org/wal.html#checkpointing>). Once a checkpoint has copied everything,
/// the next commit starts the WAL over, so its size stays about one period of writes. A
/// failed checkpoint is logged and tried again at the next period.
async fn checkpoints(pool: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!("SQLite checkpoint failed (tried again in {CHECKPOINT_EVERY:?}): {e}");
        }
    }
}

/// A directory removed with everything in it when dropped.
#[cfg(test)]
#[derive(Debug)]
struct TempDir(std::path::PathBuf);

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
    let dir = std::env::temp_dir().join(format!(
        "parley-db-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| BackendError::unavailable(BACKEND, e))?;
    let dir = TempDir(dir);
    let mut db = open(&dir.0.join("parley.db")).await?;
    db._temp = Some(Arc::new(dir));
    Ok(db)
}

async fn migrate(pool: &SqlitePool) -> Result<(), BackendError> {
    let mut conn = pool.acquire().await.map_err(err)?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
    let applied = usize::try_from(version).map_err(|_| {
        BackendError::internal(BACKEND, format!("unknown schema version {version}"))
    })?;
    for (i, m) in MIGRATIONS.iter().enumerate().skip(applied) {
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
    #[test]
    fn multi_row_sql_has_a_tuple_of_placeholders_per_row() {
        assert_eq!(
            super::multi_row_sql("INSERT INTO t (a, b)", 2, 3, " RETURNING a"),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) RETURNING a"
        );
    }
}
