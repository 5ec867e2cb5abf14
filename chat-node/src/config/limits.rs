//! Protocol limits: message, frame and upload sizes and per-connection rates.

use parley_crd::env;

/// Protocol limits (PROTOCOL.md's defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Longest message text, in Unicode scalar values after trimming.
    #[arg(long, env = env::MAX_TEXT_CHARS, value_name = env::MAX_TEXT_CHARS, default_value_t = 4000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_text_chars: u32,

    /// Largest WebSocket frame, in bytes.
    #[arg(long, env = env::MAX_FRAME_BYTES, value_name = env::MAX_FRAME_BYTES, default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_frame_bytes: u32,

    /// Attachments per message.
    #[arg(
        long,
        env = env::MAX_ATTACHMENTS,
        value_name = env::MAX_ATTACHMENTS,
        default_value_t = 10
    )]
    pub max_attachments: u32,

    /// Largest image/video/audio upload, in bytes.
    #[arg(long, env = env::MAX_MEDIA_BYTES, value_name = env::MAX_MEDIA_BYTES, default_value_t = 16 * 1024 * 1024)]
    pub max_media_bytes: u64,

    /// Largest upload of any other type, in bytes.
    #[arg(long, env = env::MAX_DOCUMENT_BYTES, value_name = env::MAX_DOCUMENT_BYTES, default_value_t = 100 * 1024 * 1024)]
    pub max_document_bytes: u64,

    /// Frames per second one WebSocket may send (any op).
    #[arg(long, env = env::WS_FRAME_RATE, value_name = env::WS_FRAME_RATE, default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_frame_rate: u32,

    /// Burst of frames one WebSocket may send.
    #[arg(long, env = env::WS_FRAME_BURST, value_name = env::WS_FRAME_BURST, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_frame_burst: u32,

    /// Sustained sends per user per second.
    #[arg(long, env = env::SEND_RATE, value_name = env::SEND_RATE, default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub send_rate: u32,

    /// Burst of sends per user.
    #[arg(long, env = env::SEND_BURST, value_name = env::SEND_BURST, default_value_t = 40,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub send_burst: u32,
}
