//! The distributed Store: a PostgreSQL directory database (users, channels, memberships,
//! read markers, attachments, idempotency keys) and message shards chosen by slot
//! (`hash(channel_id) mod 4096`), one connection pool per database.
//!
//! Pools connect lazily, so a node starts while a shard is down; calls that need a database
//! that does not answer fail with `unavailable`.

mod migrate;
mod store;

pub use migrate::{Schema, migrate};
pub use store::PgStore;

use std::time::Duration;

use parley_crd::SlotRange;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::backend::BackendError;

const BACKEND: &str = "postgres";

/// A message shard's place in the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSpec {
    pub name: String,
    pub slots: Vec<SlotRange>,
    pub url: String,
}

/// `SELECT 1` on one database (a readiness check).
pub async fn ping_pool(pool: &sqlx::PgPool) -> Result<(), BackendError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(err)
}

pub(crate) fn err(e: sqlx::Error) -> BackendError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => BackendError::unavailable(BACKEND, e),
        // Class 08 (connection exception), 53 (insufficient resources), 57 (operator
        // intervention, e.g. shutting down).
        sqlx::Error::Database(db)
            if db.code().is_some_and(|c| {
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57")
            }) =>
        {
            BackendError::unavailable(BACKEND, e)
        }
        _ => BackendError::internal(BACKEND, e),
    }
}

/// A lazily connecting pool.
pub fn pool(url: &str, max_connections: u32) -> Result<PgPool, BackendError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(url)
        .map_err(|e| BackendError::internal(BACKEND, format!("bad database URL: {e}")))
}
