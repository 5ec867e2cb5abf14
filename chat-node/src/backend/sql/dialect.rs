//! [`Dialect`]: what differs between SQLite and PostgreSQL for the shared SQL code, side by
//! side.

use sqlx::error::DatabaseError;
use sqlx::{Database, IntoArguments, Postgres, Sqlite};

/// A database the shared SQL code runs on. The SQL text itself is the same for both (`$N`
/// placeholders, `ON CONFLICT` upserts); what is not lives here.
pub trait Dialect: Database<Arguments: IntoArguments<Self>> {
    /// The backend's name in errors: `sqlite` or `postgres`.
    const BACKEND: &'static str;

    /// SQL that is true when `column` is one of the IDs of the [`IdList`](super::IdList)
    /// bound as argument `$n`.
    fn in_ids(column: &str, n: u8) -> String;

    /// How many rows a statement inserted, changed or deleted.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Whether `e` says the database is unreachable or busy, so that retrying later may
    /// succeed (`unavailable`), rather than a bug or bad data (`internal`).
    fn is_transient(e: &sqlx::Error) -> bool;
}

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";

    fn in_ids(column: &str, n: u8) -> String {
        format!("{column} IN (SELECT value FROM json_each(${n}))")
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn is_transient(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
            // Another connection holds the write lock past the busy timeout.
            sqlx::Error::Database(db) => db.message().contains("database is locked"),
            _ => false,
        }
    }
}

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";

    fn in_ids(column: &str, n: u8) -> String {
        format!("{column} = ANY(${n})")
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn is_transient(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => is_transient_sqlstate(db.as_ref()),
            _ => false,
        }
    }
}

/// SQLSTATE class 08 (connection exception), 53 (insufficient resources) or 57 (operator
/// intervention, e.g. shutting down).
fn is_transient_sqlstate(db: &dyn DatabaseError) -> bool {
    db.code()
        .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57"))
}
