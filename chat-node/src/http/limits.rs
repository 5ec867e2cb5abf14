//! `GET /v1/limits`: the limits this node enforces, read from its [`Config`], so a client
//! (the web page among them) takes them from the server instead of hard-coding the
//! protocol's defaults. No token is needed: the limits say nothing about any user, and a
//! page may read them before anyone signs in.
//!
//! ```text
//! Config { limits, ws } ──limits_of──► parley_protocol::rest::Limits ──► JSON
//! ```

use axum::Json;
use axum::extract::State;
use parley_protocol::limits as defaults;
use parley_protocol::rest::{Limits, UploadLimits};

use crate::config::Config;
use crate::http::AppState;

/// `GET /v1/limits`: 200 with [`Limits`]; never fails.
pub(super) async fn limits(State(chat): State<AppState>) -> Json<Limits> {
    Json(limits_of(chat.config()))
}

/// The limits a node with this configuration enforces. History page sizes and group
/// names are fixed by the protocol; everything else comes from `PARLEY_*` settings.
fn limits_of(config: &Config) -> Limits {
    let l = &config.limits;
    Limits {
        text_max_chars: l.max_text_chars,
        frame_max_bytes: l.max_frame_bytes,
        attachments_max: l.max_attachments,
        upload_max_bytes: UploadLimits {
            media: l.max_media_bytes,
            document: l.max_document_bytes,
        },
        group_name_max_chars: u32::try_from(defaults::MAX_GROUP_NAME_CHARS).unwrap_or(u32::MAX),
        history_page_default: defaults::DEFAULT_PAGE,
        history_page_max: defaults::MAX_PAGE,
        send_rate_per_s: l.send_rate,
        send_burst: l.send_burst,
        // The typing rate is at least 1 per second (the setting's range), so this is at most 1 s.
        typing_min_interval_ms: 1000_u64.div_ceil(u64::from(config.ws.ws_typing_rate.max(1))),
    }
}
