//! Default limits of the protocol (each configurable on the node).

/// Message text, in Unicode scalar values after trimming.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Largest WebSocket frame.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Attachments per message.
pub const MAX_ATTACHMENTS: usize = 10;
/// Uploads of image/*, video/* and audio/*.
pub const MAX_MEDIA_BYTES: u64 = 16 * 1024 * 1024;
/// Uploads of any other type (documents).
pub const MAX_DOCUMENT_BYTES: u64 = 100 * 1024 * 1024;
/// Sustained sends per user per second.
pub const SEND_RATE_PER_SEC: u32 = 20;
/// Burst of sends per user.
pub const SEND_BURST: u32 = 40;
/// Group names, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 64;
/// History page size: default and maximum.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 100;
/// Messages replayed on resume before `resync_required`.
pub const MAX_RESUME: usize = 1000;
/// Presence is fanned out in groups of at most this many members.
pub const PRESENCE_FANOUT_MAX_MEMBERS: u32 = 1000;
