//! The WebSocket endpoint (`GET /v1/ws`): one session per connection.
//!
//! ```text
//!   upgrade (Origin, drain) ─► session::run(sink, stream)
//!     hello::greet ─► hello::admit ─► Session::start: attach to the hub ─► ready
//!       ─► missed messages (resume_after) ─► live:
//!     client frames ──► ops::dispatch (send, typing, read, history, ping)
//!                         ──► Result<Reply, ApiError> ──► ops::answer ──► ok / pong / error
//!     hub queue ──────► events (deduplicated against the replayed backlog)
//! ```
//! Modules: [`socket`] (bounded writes, close handshake), [`hello`] (hello, per-user
//! limits, ready and resume), [`session`] (the live loop), [`ops`] (one dispatch of the
//! ops), [`origin`] (the Origin check). A session is written against a `Sink` of frames and
//! a `Stream` of reads, so its tests drive it through channels instead of a socket.
//! One task per session handles both directions, so replies and events leave in order.
//!
//! Bounds: every write to the socket is bounded (`PARLEY_WS_WRITE_TIMEOUT_MS`), and a close
//! the hub asks for (full queue 4008, expired heartbeat 4002) is seen even while a write is
//! stuck: a client that stops reading is dropped and forgotten. A user holds at most
//! `PARLEY_WS_MAX_SESSIONS_PER_USER` sessions per node, resume replays and typing events
//! draw on per-user budgets, and a session ends with 4003 when its token expires. No
//! WebSocket is upgraded while the node drains (503 `unavailable`).

mod gate;
mod hello;
mod ops;
mod origin;
mod session;
mod socket;
#[cfg(test)]
mod tests;

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use parley_protocol::ws::ServerFrame;
use serde::Serialize;

use crate::config::WsLimits;
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::server::LocalAddr;
use crate::hub::Budget;

impl WsLimits {
    fn write_timeout(&self) -> Duration {
        self.ws_write_timeout
    }

    fn resume_budget(&self) -> Budget {
        Budget {
            per_sec: f64::from(self.ws_resume_per_minute) / 60.0,
            burst: f64::from(self.ws_resume_burst),
        }
    }

    fn typing_budget(&self) -> Budget {
        Budget {
            per_sec: f64::from(self.ws_typing_rate),
            burst: f64::from(self.ws_typing_burst),
        }
    }
}

/// `GET /v1/ws`: checks the Origin, refuses while the node drains or stops (503
/// `unavailable`: the client goes to another node), then upgrades.
pub async fn upgrade(
    State(chat): State<AppState>,
    local: Option<Extension<LocalAddr>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // The address the connection reached (from the server), or the configured one when the
    // router runs without it.
    let local = local.map_or(chat.config().listen, |Extension(LocalAddr(a))| a);
    if let Err(e) = origin::check(
        &headers,
        &chat.config().allowed_origins,
        chat.config().public_base_url(),
        local,
    ) {
        return e.into_response();
    }
    if chat.lifecycle().shutdown().is_cancelled() {
        return ApiError::unavailable("the node is shutting down").into_response();
    }
    if chat.lifecycle().drain().is_draining() {
        // Not upgraded: an upgraded socket would hold a connection the drain then has to
        // close again.
        return ApiError::unavailable("the node is draining: connect to another node")
            .into_response();
    }
    // tungstenite's own cap is above the protocol limit: a frame it refuses is left unread
    // and the close turns into a reset, while one it reads can be refused with a clean 1009.
    let cap = (chat.config().limits.max_frame_bytes as usize * 4).max(1 << 20);
    ws.max_frame_size(cap)
        .max_message_size(cap)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| {
            let tracker = chat.lifecycle().sessions().clone();
            tracker.track_future(run(socket, chat))
        })
}

/// Runs the session of an upgraded socket.
async fn run(socket: WebSocket, chat: AppState) {
    let (sink, stream) = socket.split();
    session::run(sink, stream, chat).await;
}

/// A server frame `{"t", "ref", "d"}` as a text message.
fn frame<T: Serialize>(t: &str, r#ref: Option<&str>, d: &T) -> WsMessage {
    let text =
        serde_json::to_string(&ServerFrame { t, r#ref, d }).expect("server frames serialize");
    WsMessage::Text(text.into())
}
