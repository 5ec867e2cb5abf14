//! Bodies of the REST endpoints under `/v1`.

use serde::{Deserialize, Serialize};

use crate::{Attachment, Channel, Id, Message, Presence, Timestamp, User};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// Answer of register and login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthResponse {
    pub token: String,
    pub user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateChannelRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelList {
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberList {
    pub members: Vec<User>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DmRequest {
    pub user_id: Id,
}

/// `POST /v1/channels/{id}/messages`; the `send` op carries the same fields plus `channel_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessageRequest {
    pub text: String,
    #[serde(default)]
    pub client_msg_id: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Id>,
    #[serde(default)]
    pub reply_to: Option<Id>,
}

/// `GET /v1/channels/{id}/messages` query, and the `history` op.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    pub before: Option<Id>,
    #[serde(default)]
    pub after: Option<Id>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRequest {
    pub message_id: Id,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncQuery {
    #[serde(default)]
    pub after: Option<Id>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRequest {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
}

/// Where and how the client uploads the bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadTarget {
    pub method: String,
    pub url: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaResponse {
    pub attachment: Attachment,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upload: Option<UploadTarget>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceList {
    pub presence: Vec<Presence>,
}

/// `GET /v1/limits` (no token needed): the limits this node enforces, from its configuration,
/// so a client checks them before it sends instead of hard-coding the protocol's defaults
/// (`crate::limits`). Sizes in bytes, text lengths in Unicode scalar values, rates per
/// second. Fields may be added; none is renamed or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest message text, in Unicode scalar values after trimming (default 4000).
    pub text_max_chars: u32,
    /// Largest WebSocket frame a client may send, in bytes (default 65536); a larger one is
    /// closed with 1009.
    pub frame_max_bytes: u32,
    /// Attachments per message (default 10).
    pub attachments_max: u32,
    /// Largest upload, in bytes, by kind.
    pub upload_max_bytes: UploadLimits,
    /// Longest group name, in characters (64).
    pub group_name_max_chars: u32,
    /// History pages: the `limit` used when none is given (50)...
    pub history_page_default: u32,
    /// ...and the largest `limit` accepted (100).
    pub history_page_max: u32,
    /// Sustained sends per user per second (default 20); over it `rate_limited`.
    pub send_rate_per_s: u32,
    /// Sends a user may make at once before the rate applies (default 40).
    pub send_burst: u32,
    /// Sustained interval between a user's `typing` ops, in milliseconds (1000 / the node's
    /// typing rate; default 1000); sooner ones beyond a small burst are refused.
    pub typing_min_interval_ms: u64,
}

/// Largest upload (`POST /v1/media` `size`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadLimits {
    /// `image/*`, `video/*` and `audio/*` (default 16 MiB).
    pub media: u64,
    /// Every other content type (default 100 MiB).
    pub document: u64,
}

/// The body of every REST error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: crate::ErrorBody,
}
