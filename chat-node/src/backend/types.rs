//! Records the backends store. They differ from the wire objects where the wire adds
//! something computed per request (download URLs, member counts).

use parley_protocol::{Id, Timestamp};
use serde::{Deserialize, Serialize};

/// A user as stored, with the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Id,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at: Timestamp,
}

/// An uploaded (or announced) object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub id: Id,
    pub owner_id: Id,
    /// The object key in the blob store.
    pub key: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub created_at: Timestamp,
}

/// A message as it travels through the log and sits in the store (no URLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: Id,
    pub channel_id: Id,
    pub seq: u64,
    pub author_id: Id,
    pub text: String,
    pub client_msg_id: Option<String>,
    pub attachments: Vec<AttachmentRecord>,
    pub reply_to: Option<Id>,
    pub created_at: Timestamp,
    pub moderated: bool,
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
