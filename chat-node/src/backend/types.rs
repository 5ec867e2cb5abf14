//! Records the backends store. They differ from the wire objects where the wire adds
//! something computed per request (download URLs, member counts). The SQL stores read them
//! with `FromRow` (the columns are `backend::sql::rows`'s `*_COLUMNS`).

use parley_protocol::{Id, Timestamp};
use serde::{Deserialize, Serialize};

/// A user as stored, with the password hash (a PHC string; `Debug` prints it redacted).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRecord {
    pub id: Id,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("password_hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// An uploaded (or announced) object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AttachmentRecord {
    pub id: Id,
    pub owner_id: Id,
    /// The object key in the blob store.
    pub key: String,
    pub filename: String,
    pub content_type: String,
    /// Bytes.
    #[sqlx(try_from = "i64")]
    pub size: u64,
    pub created_at: Timestamp,
}

/// A message as it travels through the log and sits in the store (no URLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: Id,
    pub channel_id: Id,
    #[sqlx(try_from = "i64")]
    pub seq: u64,
    pub author_id: Id,
    pub text: String,
    pub client_msg_id: Option<String>,
    /// A JSON array in the stores.
    #[sqlx(json)]
    pub attachments: Vec<AttachmentRecord>,
    /// Read leniently: a `reply_to` beyond [`Id::MAX`], which a node from before the range
    /// check accepted and logged, reads as none (it named no message) instead of making the
    /// whole record undecodable (the persister would skip an acknowledged message).
    #[serde(default, deserialize_with = "lenient_reply_to")]
    pub reply_to: Option<Id>,
    pub created_at: Timestamp,
    pub moderated: bool,
}

fn lenient_reply_to<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Id>, D::Error> {
    use serde::de::Error as _;
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => match s.parse::<Id>() {
            Ok(id) => Ok(Some(id)),
            Err(parley_protocol::ParseIdError::OutOfRange) => Ok(None),
            Err(e) => Err(D::Error::custom(e)),
        },
    }
}

/// Which page of a channel's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest `limit` messages, newest first.
    Latest { limit: u32 },
    /// The newest `limit` messages with id < `id`, newest first.
    Before { id: Id, limit: u32 },
    /// The oldest `limit` messages with id > `id`, oldest first.
    After { id: Id, limit: u32 },
}

impl Page {
    pub fn limit(self) -> u32 {
        match self {
            Page::Latest { limit } | Page::Before { limit, .. } | Page::After { limit, .. } => {
                limit
            }
        }
    }

    /// The same page asking for `limit` messages.
    pub fn with_limit(self, limit: u32) -> Page {
        match self {
            Page::Latest { .. } => Page::Latest { limit },
            Page::Before { id, .. } => Page::Before { id, limit },
            Page::After { id, .. } => Page::After { id, limit },
        }
    }

    /// Whether `id` falls in the page's range (ignoring the limit).
    pub fn admits(self, id: Id) -> bool {
        match self {
            Page::Latest { .. } => true,
            Page::Before { id: b, .. } => id < b,
            Page::After { id: a, .. } => id > a,
        }
    }

    /// Newest first?
    pub fn descending(self) -> bool {
        !matches!(self, Page::After { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_reply_to_beyond_the_id_range_reads_as_none() {
        let m = |reply_to: &str| {
            format!(
                r#"{{"id":"5","channel_id":"1","seq":1,"author_id":"2","text":"t","client_msg_id":null,
                "attachments":[],"reply_to":{reply_to},"created_at":"2026-01-01T00:00:00.000Z","moderated":false}}"#
            )
        };
        let read = |r: &str| serde_json::from_str::<StoredMessage>(&m(r));
        assert_eq!(read("\"18446744073709551615\"").unwrap().reply_to, None);
        assert_eq!(read("\"4\"").unwrap().reply_to, Some(Id(4)));
        assert_eq!(read("null").unwrap().reply_to, None);
        assert!(read("\"x\"").is_err());
    }
}

/// A channel's highest stored seq and highest stored message ID ([`super::MessageStore::high_water`]).
/// The ID is the highest of any message of the channel, not necessarily the last seq's: a
/// new owner's IDs go above every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HighWater {
    pub seq: u64,
    pub id: Id,
}
