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

/// The body of every REST error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: crate::ErrorBody,
}
