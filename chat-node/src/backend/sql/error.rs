//! `sqlx::Error` → [`BackendError`], the same rules for both stores: transient errors
//! ([`Dialect::is_transient`]) are `unavailable`, a broken uniqueness rule is the `conflict`
//! its operation names, anything else is `internal`.

use super::Dialect;
use crate::backend::BackendError;

/// `unavailable` when `e` is transient on `DB`, `internal` otherwise.
pub(crate) fn backend_error<DB: Dialect>(e: sqlx::Error) -> BackendError {
    if DB::is_transient(&e) {
        BackendError::unavailable(DB::BACKEND, e)
    } else {
        BackendError::internal(DB::BACKEND, e)
    }
}

/// Whether `e` is a broken UNIQUE constraint (or primary key).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The `conflict` of a new user whose username is taken: by the same name
/// (`username_key`), or by one that looks like it (`username_skeleton`; SQLite names the
/// column in its message, PostgreSQL the constraint `users_username_skeleton_key`).
pub(crate) fn username_conflict(e: &sqlx::Error, username: &str) -> BackendError {
    let looks_alike = matches!(e, sqlx::Error::Database(db)
        if db.message().contains("username_skeleton")
            || db.constraint().is_some_and(|c| c.contains("skeleton")));
    BackendError::Conflict(crate::text::username_conflict_message(
        username,
        looks_alike,
    ))
}

/// The `conflict` of a new group whose name is taken.
pub(crate) fn group_conflict(name: &str) -> BackendError {
    BackendError::Conflict(format!("a group named `{name}` exists"))
}
