//! The schema migration that recomputes name keys (SQLite schema version 2, PostgreSQL
//! directory migration 0002): SQL cannot compute `username_key`, `username_skeleton` and
//! `name_key`, so each backend's migrator runs [`NameKeys::prepare`] after the migration's
//! SQL, in its transaction, then writes the keys its own way (SQLite row by row, PostgreSQL
//! in `UNNEST` batches) and calls [`NameKeys::finish`].

use sqlx::{Encode, Executor, FromRow, Type};

use super::Dialect;
use crate::text::Rekeyed;

/// Every user's and group's new keys, checked for collisions.
#[derive(Debug)]
pub(crate) struct NameKeys {
    /// `users`: new `username_key` and `username_skeleton` by id.
    pub users: Vec<Rekeyed>,
    /// `channels` (groups): new `name_key` by id.
    pub groups: Vec<Rekeyed>,
}

impl NameKeys {
    /// Reads every username and group name and computes their keys: refuses, naming them,
    /// when two existing names now have one key. Then gives every row a key no name can
    /// have (`\x01` and its id: names hold no control characters), so that the UNIQUE
    /// constraints never see one key twice while the new keys are written one by one.
    pub(crate) async fn prepare<DB>(conn: &mut DB::Connection) -> Result<Self, String>
    where
        DB: Dialect,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'r> (i64, String): FromRow<'r, DB::Row>,
    {
        let users: Vec<(i64, String)> = sqlx::query_as("SELECT id, username FROM users")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        let groups: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, name FROM channels WHERE kind = 'group' AND name IS NOT NULL",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
        let users = crate::text::rekey_users(&users).map_err(|e| e.to_string())?;
        let groups = crate::text::rekey_groups(&groups).map_err(|e| e.to_string())?;
        for sql in [
            "UPDATE users SET username_key = $1 || CAST(id AS TEXT)",
            "UPDATE channels SET name_key = $1 || CAST(id AS TEXT) \
             WHERE kind = 'group' AND name IS NOT NULL",
        ] {
            sqlx::query(sql)
                .bind("\u{1}".to_owned())
                .execute(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Self { users, groups })
    }

    /// Logs the users who keep a look-alike name (their skeleton is NULL).
    pub(crate) fn finish(&self) {
        crate::text::log_grandfathered(&self.users);
    }
}
