//! Accounts ([`Accounts`]): registration, login, session tokens and user lookups. Password
//! hashing and the sign-in limits go through the [`AuthGate`].

use std::sync::Arc;

use parley_protocol::rest::AuthResponse;
use parley_protocol::{ErrorCode, Id, Timestamp, User};

use super::Ids;
use super::auth_limits::AuthGate;
use crate::auth::{Tokens, hash_password_in, verify_password_in};
use crate::backend::{UserRecord, UserStore};
use crate::error::ApiError;

const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=1024;
const DISPLAY_NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=64;

/// Checks a username: 3..=32 of ASCII letters, digits, `_`, `.`, `-` (the v1 contract;
/// usernames stay ASCII, so a look-alike letter of another script is refused here). Two
/// usernames are the same when their `text::name_key`s are equal, and one that looks like a
/// taken one (`text::confusable_skeleton`) is refused by the store with `conflict`.
pub(super) fn validate_username(username: &str) -> Result<(), ApiError> {
    let ok = USERNAME_CHARS.contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "a username is 3 to 32 letters, digits, `_`, `.` or `-`",
        ))
    }
}

/// A display name as stored: trimmed, NFC-normalized, 1..=64 characters, no control
/// characters, not blank (only White_Space and default-ignorable code points such as
/// U+200B); none given: the username.
fn clean_display_name(name: Option<&str>, username: &str) -> Result<String, ApiError> {
    let Some(name) = name.map(|n| crate::text::nfc(n.trim())) else {
        return Ok(username.to_owned());
    };
    if !DISPLAY_NAME_CHARS.contains(&name.chars().count())
        || name.chars().any(char::is_control)
        || crate::text::is_blank(&name)
    {
        return Err(ApiError::bad_request(
            "a display name is 1 to 64 characters, not only invisible ones, without control \
             characters",
        ));
    }
    Ok(name)
}

/// Users and their sessions.
#[derive(Debug)]
pub struct Accounts {
    users: Arc<dyn UserStore>,
    tokens: Tokens,
    gate: AuthGate,
    ids: Ids,
    /// A hash of no password, so logins for unknown users cost as much as wrong passwords.
    dummy_hash: String,
}

impl Accounts {
    /// Accounts in `users`, signed in with `tokens`, hashing through `gate`.
    pub fn new(users: Arc<dyn UserStore>, tokens: Tokens, gate: AuthGate, ids: Ids) -> Self {
        // Through a hash slot like every hash: its buffer is the first of the pool.
        let dummy_hash = gate.hash_now(|m| hash_password_in("no account has this password", m));
        Self {
            users,
            tokens,
            gate,
            ids,
            dummy_hash,
        }
    }

    /// Password hashing and the rate limits of `/v1/auth/*`.
    pub fn gate(&self) -> &AuthGate {
        &self.gate
    }

    /// Signs and checks session tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The user a bearer token belongs to (`unauthorized` when it is not valid).
    pub fn authenticate(&self, token: &str) -> Result<Id, ApiError> {
        self.tokens
            .verify(token)
            .map_err(|e| ApiError::unauthorized(e.to_string()))
    }

    /// Creates a user and signs them in. Errors: `bad_request` for a username, password or
    /// display name out of shape, `conflict` for a taken username, `rate_limited` when no
    /// hash slot frees up in time.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<AuthResponse, ApiError> {
        validate_username(username)?;
        if !PASSWORD_BYTES.contains(&password.len()) {
            return Err(ApiError::bad_request("a password is 8 to 1024 bytes"));
        }
        let display_name = clean_display_name(display_name, username)?;
        if self.users.user_by_username(username).await?.is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the username `{username}` is taken"),
            ));
        }
        let password = password.to_owned();
        let password_hash = self
            .gate
            .hash(move |memory| hash_password_in(&password, memory))
            .await?;
        let now = Timestamp::now();
        let record = UserRecord {
            id: self.ids.next().await?,
            username: username.to_owned(),
            display_name,
            password_hash,
            created_at: now,
        };
        self.users.create_user(&record).await?;
        Ok(AuthResponse {
            token: self.tokens.issue(record.id, now),
            user: User::from(&record),
        })
    }

    /// Signs `username` in. An unknown username costs one hash like a wrong password (against
    /// a dummy hash), so the answer's timing does not tell which usernames exist.
    pub async fn login(&self, username: &str, password: &str) -> Result<AuthResponse, ApiError> {
        let record = self.users.user_by_username(username).await?;
        let hash = record
            .as_ref()
            .map_or(self.dummy_hash.clone(), |r| r.password_hash.clone());
        let password = password.to_owned();
        let ok = self
            .gate
            .hash(move |memory| verify_password_in(&password, &hash, memory))
            .await?;
        match record {
            Some(r) if ok => Ok(AuthResponse {
                token: self.tokens.issue(r.id, Timestamp::now()),
                user: User::from(&r),
            }),
            _ => Err(ApiError::unauthorized("wrong username or password")),
        }
    }

    /// A fresh token for `user`, who holds a valid one (`POST /v1/auth/refresh`).
    pub async fn refresh(&self, user: Id) -> Result<AuthResponse, ApiError> {
        let record = self
            .users
            .user(user)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
        Ok(AuthResponse {
            token: self.tokens.issue(record.id, Timestamp::now()),
            user: User::from(&record),
        })
    }

    /// The user `id`; `not_found` when there is none.
    pub async fn user(&self, id: Id) -> Result<User, ApiError> {
        self.users
            .user(id)
            .await?
            .map(|r| User::from(&r))
            .ok_or_else(|| ApiError::not_found("no such user"))
    }

    /// The user named `username` (compared by name key); `not_found` when there is none.
    pub async fn user_by_username(&self, username: &str) -> Result<User, ApiError> {
        self.users
            .user_by_username(username)
            .await?
            .map(|r| User::from(&r))
            .ok_or_else(|| ApiError::not_found("no such user"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in [
            "bob",
            "alice_1",
            "a.b-c",
            "x23456789012345678901234567890yz",
        ] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "with space",
            "émile",
            "x234567890123456789012345678901yz",
            "semi;colon",
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(clean_display_name(None, "bob").unwrap(), "bob");
        assert_eq!(
            clean_display_name(Some("  Bob B.  "), "bob").unwrap(),
            "Bob B."
        );
        assert!(clean_display_name(Some("   "), "bob").is_err());
        assert!(clean_display_name(Some("a\u{7}b"), "bob").is_err());
        assert!(clean_display_name(Some(" \u{200b}\u{2060} "), "bob").is_err());
        assert!(clean_display_name(Some("\u{ad}\u{3164}"), "bob").is_err());
        assert_eq!(
            clean_display_name(Some("Rene\u{301}"), "bob").unwrap(),
            "Ren\u{e9}",
            "NFC"
        );
    }
}
