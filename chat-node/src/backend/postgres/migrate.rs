//! Applies `migrations/directory` or `migrations/shard` (compiled into the binary) to a
//! database: in order, each once, under an advisory lock, refusing to run when an applied
//! file has changed.

use sqlx::PgPool;

use super::err;
use crate::backend::BackendError;

/// Which schema a database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Directory,
    Shard,
}

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
    /// Recompute the name keys of existing rows in Rust after `sql`, in its transaction
    /// (SQL cannot compute them).
    rekey_names: bool,
}

const DIRECTORY: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.sql",
        sql: include_str!("../../../../migrations/directory/0001_init.sql"),
        rekey_names: false,
    },
    Migration {
        version: 2,
        name: "0002_name_keys.sql",
        sql: include_str!("../../../../migrations/directory/0002_name_keys.sql"),
        rekey_names: true,
    },
];

const SHARD: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.sql",
        sql: include_str!("../../../../migrations/shard/0001_init.sql"),
        rekey_names: false,
    },
    Migration {
        version: 2,
        name: "0002_channel_terms.sql",
        sql: include_str!("../../../../migrations/shard/0002_channel_terms.sql"),
        rekey_names: false,
    },
    Migration {
        version: 3,
        name: "0003_owner_generations.sql",
        sql: include_str!("../../../../migrations/shard/0003_owner_generations.sql"),
        rekey_names: false,
    },
];

/// Arbitrary constant for `pg_advisory_lock`, shared by every migrator.
const LOCK_KEY: i64 = 0x7061_726c_6579; // "parley"

fn checksum(sql: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(sql.as_bytes()))
}

/// Brings `pool`'s database to the newest version of `schema`; returns how many migrations
/// ran.
pub async fn migrate(pool: &PgPool, schema: Schema) -> Result<usize, BackendError> {
    let migrations = match schema {
        Schema::Directory => DIRECTORY,
        Schema::Shard => SHARD,
    };
    let mut conn = pool.acquire().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    let result = async {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS parley_schema_migrations (
                 version    INT PRIMARY KEY,
                 name       TEXT NOT NULL,
                 checksum   TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&mut *conn)
        .await
        .map_err(err)?;
        let applied: Vec<(i32, String)> =
            sqlx::query_as("SELECT version, checksum FROM parley_schema_migrations ORDER BY version")
                .fetch_all(&mut *conn)
                .await
                .map_err(err)?;
        let mut ran = 0;
        for m in migrations {
            let sum = checksum(m.sql);
            if let Some((_, done)) = applied.iter().find(|(v, _)| *v == m.version) {
                if *done != sum {
                    return Err(BackendError::internal(
                        "postgres",
                        format!("migration {} was changed after it was applied", m.name),
                    ));
                }
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(err)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql)).execute(&mut *tx).await.map_err(err)?;
            if m.rekey_names {
                super::directory::rekey_names(&mut tx).await.map_err(|e| {
                    BackendError::internal("postgres", format!("migration {}: {e}", m.name))
                })?;
            }
            sqlx::query("INSERT INTO parley_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(&sum)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            ran += 1;
        }
        Ok(ran)
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result
}
