//! The ops of a live session, in one dispatch: each op is a function returning
//! `Result<Reply, ApiError>`, and [`answer`] alone turns that into the frame the client
//! gets, echoing the op's `ref`.
//!
//! ```text
//!   ClientOp ─► dispatch ─► ping | send | typing | read | history ─► Result<Reply, ApiError>
//!                                                                        │
//!                      answer(ref, result) ─► pong / ok (only with a ref) / error
//! ```
//!
//! The ops call [`Chat`](crate::chat::Chat) exactly as the REST handlers do (a `send`
//! becomes the same [`SendInput`], a `history` the same
//! [`HistoryQuery`](parley_protocol::rest::HistoryQuery)), so both paths validate alike.

use axum::extract::ws::Message as WsMessage;
use parley_protocol::rest::MessagePage;
use parley_protocol::ws::{ClientOp, HistoryOp, Pong, ReadOp, SendOk, SendOp, TypingOp, event};
use parley_protocol::{ErrorBody, Id, Timestamp};
use serde::Serialize;

use super::frame;
use crate::chat::SendInput;
use crate::error::ApiError;
use crate::http::AppState;
use crate::hub::ConnId;

/// Who an op is run for: the session's user on its connection.
#[derive(Clone, Copy)]
pub(super) struct Caller<'a> {
    pub chat: &'a AppState,
    pub user: Id,
    pub conn: ConnId,
}

/// What an op answers when it succeeds.
#[derive(Debug)]
pub(super) enum Reply {
    /// `pong` {server_time} (`ping`): sent whether or not the op has a `ref`.
    Pong(Pong),
    /// `ok` {} (`typing`, `read`).
    Done,
    /// `ok` {message} (`send`).
    Sent(SendOk),
    /// `ok` {messages, has_more} (`history`).
    Page(MessagePage),
}

/// The `d` of an `ok` that carries nothing: `{}`.
#[derive(Serialize)]
struct Empty {}

impl Reply {
    /// The frame answering an op with `ref`; `None` for an `ok` to an op without a `ref`
    /// (the client asked for no answer; errors and pongs are always sent).
    fn frame(&self, r#ref: Option<&str>) -> Option<WsMessage> {
        match (self, r#ref) {
            (Reply::Pong(pong), _) => Some(frame(event::PONG, r#ref, pong)),
            (_, None) => None,
            (Reply::Done, _) => Some(frame(event::OK, r#ref, &Empty {})),
            (Reply::Sent(sent), _) => Some(frame(event::OK, r#ref, sent)),
            (Reply::Page(page), _) => Some(frame(event::OK, r#ref, page)),
        }
    }
}

/// The one place an op's result becomes a frame: `pong`, `ok` or `error` with the op's
/// `ref` echoed. Errors are counted in the node's metrics by code.
pub(super) fn answer(
    chat: &AppState,
    r#ref: Option<&str>,
    result: &Result<Reply, ApiError>,
) -> Option<WsMessage> {
    match result {
        Ok(reply) => reply.frame(r#ref),
        Err(e) => Some(error_frame(chat, r#ref, e)),
    }
}

/// An `error` frame {code, message} (counted in the metrics).
pub(super) fn error_frame(chat: &AppState, r#ref: Option<&str>, e: &ApiError) -> WsMessage {
    chat.metrics().error(e.code);
    let body = ErrorBody {
        code: e.code,
        message: e.message.clone(),
    };
    frame(event::ERROR, r#ref, &body)
}

/// Runs one op of a live session.
pub(super) async fn dispatch(caller: Caller<'_>, op: ClientOp) -> Result<Reply, ApiError> {
    match op {
        ClientOp::Hello(_) => Err(ApiError::bad_request(
            "hello was already said on this connection",
        )),
        ClientOp::Ping => Ok(ping(caller).await),
        ClientOp::Send(op) => send(caller, op).await,
        ClientOp::Typing(op) => typing(caller, op).await,
        ClientOp::Read(op) => read(caller, op).await,
        ClientOp::History(op) => history(caller, op).await,
    }
}

/// `ping`: the connection's heartbeat (it keeps the user's presence).
async fn ping(c: Caller<'_>) -> Reply {
    c.chat.presence().ping(c.user, c.conn).await;
    Reply::Pong(Pong {
        server_time: Timestamp::now(),
    })
}

/// `send`: answered once the message is durable. Its `message` event may already be
/// queued for this connection: the `ok` goes first and the event still arrives, as for
/// every other member.
async fn send(c: Caller<'_>, op: SendOp) -> Result<Reply, ApiError> {
    let channel = op.channel_id;
    let message = c.chat.messages().send(c.user, channel, op.into()).await?;
    Ok(Reply::Sent(SendOk { message }))
}

/// `typing`: limited per user over all their sessions (more sessions do not multiply it).
async fn typing(c: Caller<'_>, op: TypingOp) -> Result<Reply, ApiError> {
    let ws = &c.chat.config().ws;
    if c.chat
        .hub()
        .allow_typing(c.user, ws.typing_budget())
        .is_err()
    {
        return Err(ApiError::rate_limited(format!(
            "at most {} typing events per second per user (bursts of {})",
            ws.ws_typing_rate, ws.ws_typing_burst
        )));
    }
    c.chat.receipts().typing(c.user, op.channel_id).await?;
    Ok(Reply::Done)
}

/// `read`: moves the user's read marker.
async fn read(c: Caller<'_>, op: ReadOp) -> Result<Reply, ApiError> {
    c.chat
        .receipts()
        .mark_read(c.user, op.channel_id, op.message_id)
        .await?;
    Ok(Reply::Done)
}

/// `history`: a page of a channel's messages, as `GET /v1/channels/{id}/messages`.
async fn history(c: Caller<'_>, op: HistoryOp) -> Result<Reply, ApiError> {
    let page = c
        .chat
        .history()
        .page(c.user, op.channel_id, &op.query())
        .await?;
    Ok(Reply::Page(page))
}

/// A `send` op is the input a REST send makes (its `channel_id` is the path's `{id}`).
impl From<SendOp> for SendInput {
    fn from(op: SendOp) -> Self {
        Self {
            text: op.text,
            client_msg_id: Some(op.client_msg_id),
            attachments: op.attachments,
            reply_to: op.reply_to,
        }
    }
}
