//! What the two SQL stores share: the embedded one (SQLite, one file) and the distributed one
//! (PostgreSQL: a directory database and message shards).
//!
//! ```text
//!   SqlStore<DB, M>                          one Store (every entity trait of store.rs)
//!     directory: Pool<DB>  ── directory.rs   users, channels, members, read markers,
//!                                            attachments: written once, generic over DB
//!     messages: M          ── M's own code   sqlite::SqliteMessages (the same file) or
//!                                            postgres::Shards (a database per slot range)
//!                             messages.rs    the message reads of one database, which both use
//!
//!   SqliteStore = SqlStore<Sqlite, SqliteMessages>
//!   PgStore     = SqlStore<Postgres, Shards>
//! ```
//!
//! - The SQL text is shared: sqlx's SQLite driver reads `$N` as the N-th argument, as
//!   PostgreSQL does, and `ON CONFLICT` upserts are the same in both. What differs is in
//!   [`Dialect`] and stays small: how a list of IDs is bound ([`IdList`]: a JSON array for
//!   SQLite's `json_each`, a `bigint[]` for PostgreSQL's `= ANY`), which errors are transient,
//!   and the bulk writes of each backend (its own module).
//! - Values: [`Id`](parley_protocol::Id) and [`Timestamp`](parley_protocol::Timestamp) bind and
//!   decode as themselves (parley-protocol's `sqlx` feature); a `u64` binds as [`Unsigned`].
//!   Encoding an ID above `Id::MAX` or a `u64` above `i64::MAX` fails the query; nothing wraps.
//! - Rows: the records derive `FromRow` (`UserRecord`, `AttachmentRecord`, `StoredMessage`);
//!   a channel is read as `rows::ChannelRow`.
//! - Errors: `error` maps `sqlx::Error` to [`BackendError`](super::BackendError) for both.

mod dialect;
mod directory;
pub(crate) mod error;
mod messages;
pub(crate) mod names;
pub(crate) mod rows;
mod values;

pub use dialect::Dialect;
pub use directory::SqlStore;
pub(crate) use messages::MessageRows;
pub use values::{IdList, Unsigned};

#[cfg(test)]
mod tests;
