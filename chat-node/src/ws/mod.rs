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

mod codec;
mod gate;
mod handshake;
mod hello;
mod ops;
mod origin;
mod session;
mod socket;
mod stream;
#[cfg(test)]
mod tests;

use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::Message as WsMessage;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
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
/// `unavailable`: the client goes to another node), checks the opening handshake (400
/// `bad_request`), then answers 101 and runs the session on the upgraded connection.
pub async fn upgrade(
    State(chat): State<AppState>,
    local: Option<Extension<LocalAddr>>,
    mut req: Request<Body>,
) -> Response {
    // The address the connection reached (from the server), or the configured one when the
    // router runs without it.
    let local = local.map_or(chat.config().listen, |Extension(LocalAddr(a))| a);
    let headers = req.headers();
    if let Err(e) = origin::check(
        headers,
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
    let accept = match handshake::check(headers) {
        Ok(accept) => accept,
        Err(refusal) => {
            let mut res = ApiError::bad_request(refusal.message()).into_response();
            if refusal == handshake::Refusal::Version {
                res.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(handshake::VERSION),
                );
            }
            return res;
        }
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        // A request that did not come over an HTTP/1.1 connection hyper can upgrade.
        return ApiError::bad_request("this connection cannot be upgraded").into_response();
    };
    // The decoder's limit is above the protocol's: a message over the limit but under this
    // is read whole and refused with a clean 1009 (the session checks); past this, the
    // read fails at its header, also 1009, without reading the payload.
    let max_message = (chat.config().limits.max_frame_bytes as usize * 4).max(1 << 20);
    // Tracked from now: a shutdown waits for a session whose upgrade is still under way.
    let sessions = chat.lifecycle().sessions().clone();
    sessions.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = stream::WsStream::new(TokioIo::new(upgraded), max_message);
                session::run(io, chat).await;
            }
            Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
        }
    });
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// A server frame `{"t", "ref", "d"}` as a text message.
fn frame<T: Serialize>(t: &str, r#ref: Option<&str>, d: &T) -> WsMessage {
    let text =
        serde_json::to_string(&ServerFrame { t, r#ref, d }).expect("server frames serialize");
    WsMessage::Text(text.into())
}
