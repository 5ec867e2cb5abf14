//! The distributed Store: a PostgreSQL directory database (users, channels, memberships,
//! read markers, attachments, idempotency keys) and message shards chosen by slot
//! (`hash(channel_id) mod 4096`), one connection pool per database.
//!
//! Pools connect lazily, so a node starts while a shard is down; calls that need a database
//! that does not answer fail with `unavailable`.
//!
//! - `directory`: [`PgStore`] (the directory's Store traits are `backend::sql`'s shared
//!   code), the idempotency keys of sends, the batched name-key migration.
//! - `shards`: [`Shards`], the messages by channel slot.
//! - `migrate`: the schema migrations of both kinds of database.

mod directory;
mod migrate;
mod shards;

pub use directory::PgStore;
pub use migrate::{Schema, migrate};
pub use shards::Shards;

use std::time::Duration;

use parley_crd::SlotRange;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use url::Url;

use crate::backend::BackendError;
use crate::secret::Secret;

const BACKEND: &str = "postgres";

/// A message shard's place in the map. `Debug` shows no credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSpec {
    pub name: String,
    pub slots: Vec<SlotRange>,
    /// The shard's database (`postgres://user:password@host/db`).
    pub url: Secret<Url>,
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
    crate::backend::sql::error::backend_error::<sqlx::Postgres>(e)
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
