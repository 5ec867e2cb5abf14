//! The columns the shared SQL selects, and the row types that are not records themselves.
//! `UserRecord`, `AttachmentRecord` and `StoredMessage` derive `FromRow` where they are
//! defined (`backend/types.rs`); each `*_COLUMNS` here lists exactly their fields.

use parley_protocol::{Channel, ChannelKind, Id, Timestamp};

/// The columns of a [`UserRecord`](crate::backend::UserRecord), from table `users`.
pub(crate) const USER_COLUMNS: &str = "id, username, display_name, password_hash, created_at";

/// The columns of an [`AttachmentRecord`](crate::backend::AttachmentRecord), from table
/// `attachments`.
pub(crate) const ATTACHMENT_COLUMNS: &str =
    "id, owner_id, key, filename, content_type, size, created_at";

/// The columns of a [`StoredMessage`](crate::backend::StoredMessage), from table `messages`.
/// `attachments` is JSON (SQLite `TEXT`, PostgreSQL `jsonb`). A negative `reply_to` was an
/// ID wrapped by a node from before the range check: it named no message, so it reads as
/// none.
pub(crate) const MESSAGE_COLUMNS: &str = "channel_id, id, seq, author_id, text, client_msg_id, \
     attachments, CASE WHEN reply_to >= 0 THEN reply_to END AS reply_to, created_at, moderated";

/// The columns of a [`ChannelRow`], from `channels c`.
pub(crate) const CHANNEL_COLUMNS: &str = "c.id, c.kind, c.name, c.created_by, c.created_at, \
     (SELECT COUNT(*) FROM members m WHERE m.channel_id = c.id) AS member_count";

/// A channel as selected by [`CHANNEL_COLUMNS`]; the wire's [`Channel`] is protocol-only.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChannelRow {
    pub id: Id,
    /// `group` or `dm`.
    pub kind: String,
    pub name: Option<String>,
    pub created_by: Id,
    pub created_at: Timestamp,
    #[sqlx(try_from = "i64")]
    pub member_count: u32,
}

impl From<ChannelRow> for Channel {
    fn from(row: ChannelRow) -> Self {
        Channel {
            id: row.id,
            kind: if row.kind == "dm" {
                ChannelKind::Dm
            } else {
                ChannelKind::Group
            },
            name: row.name,
            created_by: row.created_by,
            created_at: row.created_at,
            member_count: row.member_count,
        }
    }
}

/// The stored owner term of one channel (table `channel_terms`).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChannelTerm {
    pub channel_id: Id,
    #[sqlx(try_from = "i64")]
    pub generation: u64,
    #[sqlx(try_from = "i64")]
    pub term: u64,
}

/// The newest seq and the highest ID of one channel
/// (`SELECT channel_id, MAX(seq) AS seq, MAX(id) AS id ... GROUP BY`).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LastSeq {
    pub channel_id: Id,
    #[sqlx(try_from = "i64")]
    pub seq: u64,
    pub id: Id,
}
