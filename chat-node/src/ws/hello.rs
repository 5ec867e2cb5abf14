//! The start of a session: the `hello` (first frame, within 10 s, with a valid token), the
//! per-user limits it must pass, then `ready` and, with `resume_after`, the missed messages.
//!
//! ```text
//!   greet ──► first text frame ──► a hello? ──► token valid? ──► Greeting
//!              (none in 10 s, bad frame or bad token: close 4001)
//!   admit ──► session cap, resume budget ──► SessionSlot (else error + close 4008)
//!   start ──► hub attach (subscribed first) ──► ready ──► missed messages ──► resync_required
//! ```

use std::collections::HashMap;
use std::time::Duration;

use parley_protocol::ws::{
    ChannelCursor, ClientFrame, ClientOp, Ready, ResyncRequired, close, event, parse_client_frame,
};
use parley_protocol::{Id, Message, Timestamp, limits};
use tokio::time::Instant;

use super::frame;
use super::ops::error_frame;
use super::session::{Go, Session, drained};
use super::socket::{CloseReason, Socket, Transport};
use crate::error::ApiError;
use crate::http::AppState;
use crate::hub::{Closer, EventSender, SessionSlot};

/// How long a client has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A valid hello: who said it, what they asked for, and when their token expires.
#[derive(Debug)]
pub(super) struct Greeting {
    /// The hello's `ref`, echoed by `ready` (or the refusal).
    pub r#ref: Option<String>,
    pub resume_after: Option<Id>,
    /// Presence as `presence_batch` frames (hello's `presence_batch`).
    pub presence_batch: bool,
    pub user: Id,
    /// When the token expires, on the runtime's clock: the session closes with 4003 then.
    pub expires: Instant,
}

/// Waits for the hello. `None`: the session is over (closed with 4001 or another code,
/// drained, or the client went away).
pub(super) async fn greet<T: Transport>(
    socket: &mut Socket<T>,
    chat: &AppState,
    go: &mut Go,
) -> Option<Greeting> {
    let max = chat.config().limits.max_frame_bytes as usize;
    let said = tokio::select! {
        said = tokio::time::timeout(HELLO_TIMEOUT, socket.next_text(max)) => said,
        after_ms = &mut *go => {
            drained(socket, after_ms).await;
            return None;
        }
    };
    let checked = match said {
        Err(_) => Err((close::BAD_HELLO, "no hello within 10 s")),
        Ok(Err(reason)) => Err(reason),
        Ok(Ok(None)) => return None,
        Ok(Ok(Some(text))) => check(chat, &text),
    };
    match checked {
        Ok(greeting) => Some(greeting),
        Err(reason) => {
            socket.close_with(reason).await;
            None
        }
    }
}

/// Checks the first frame: a hello with a valid token.
fn check(chat: &AppState, text: &str) -> Result<Greeting, CloseReason> {
    let Ok(ClientFrame {
        r#ref,
        op: ClientOp::Hello(hello),
    }) = parse_client_frame(text)
    else {
        return Err((close::BAD_HELLO, "the first frame must be a valid hello"));
    };
    let Ok((user, exp)) = chat.accounts().tokens().verify_with_expiry(&hello.token) else {
        return Err((close::BAD_HELLO, "invalid or expired token"));
    };
    Ok(Greeting {
        r#ref,
        resume_after: hello.resume_after,
        presence_batch: hello.presence_batch,
        user,
        expires: expiry_instant(exp),
    })
}

/// When a token that expires at `exp` (Unix seconds) does, on the runtime's clock.
fn expiry_instant(exp: i64) -> Instant {
    let left_ms = exp
        .saturating_mul(1000)
        .saturating_sub(Timestamp::now().unix_millis());
    Instant::now() + Duration::from_millis(left_ms.max(0) as u64)
}

/// The per-user limits a hello must pass: the sessions a user may hold on this node, and,
/// for a resume, the replay budget. Errors: `rate_limited`.
pub(super) fn admit(chat: &AppState, greeting: &Greeting) -> Result<SessionSlot, ApiError> {
    let limits = &chat.config().ws;
    let Some(slot) = chat
        .hub()
        .admit(greeting.user, limits.ws_max_sessions_per_user)
    else {
        return Err(ApiError::rate_limited(format!(
            "at most {} WebSocket sessions per user (PARLEY_WS_MAX_SESSIONS_PER_USER); close one first",
            limits.ws_max_sessions_per_user
        )));
    };
    if greeting.resume_after.is_some()
        && let Err(wait) = chat.hub().may_resume(greeting.user, limits.resume_budget())
    {
        return Err(ApiError::rate_limited(format!(
            "too many messages replayed by resume_after lately (PARLEY_WS_RESUME_PER_MINUTE); \
             retry after {} s, or say hello without resume_after and fetch history",
            wait.as_secs() + 1
        )));
    }
    Ok(slot)
}

/// Answers a hello over a per-user limit: the `error`, then close 4008.
pub(super) async fn refuse<T: Transport>(
    socket: &mut Socket<T>,
    chat: &AppState,
    r#ref: Option<&str>,
    e: &ApiError,
) {
    socket.send(error_frame(chat, r#ref, e)).await;
    socket
        .close_with((close::POLICY, "over a per-user limit"))
        .await;
}

impl<T: Transport> Session<T> {
    /// Attaches to the hub, sends `ready`, then the missed messages (charged to the
    /// user's replay budget). Errors: a backend failed (the session closes with 1011).
    pub(super) async fn start(
        &mut self,
        r#ref: Option<&str>,
        resume_after: Option<Id>,
        tx: EventSender,
        closer: Closer,
    ) -> Result<(), ApiError> {
        let chat = self.chat.clone();
        let channels: Vec<Id> = chat
            .channels()
            .channels_of(self.user)
            .await?
            .iter()
            .map(|c| c.id)
            .collect();
        // Subscribed before reading the backlog, so nothing falls between the two.
        chat.hub()
            .attach(self.conn, self.user, &channels, tx, closer)
            .await?;
        chat.presence().connected(self.user, self.conn).await;
        let (cursors, missed) = match resume_after {
            Some(after) => {
                let (cursors, missed, has_more) = chat
                    .history()
                    .resume(&channels, after, limits::MAX_RESUME as u32)
                    .await?;
                (cursors, Some((after, missed, has_more)))
            }
            None => (chat.history().cursors(&channels).await?, None),
        };
        let ready = Ready {
            user_id: self.user,
            session_id: format!("{}-{}", chat.config().node_name, self.conn),
            node: chat.config().node_name.clone(),
            heartbeat_interval_ms: chat.config().heartbeat_interval.as_millis() as u64,
            channels: cursors,
        };
        self.socket.send(frame(event::READY, r#ref, &ready)).await;
        match missed {
            Some((after, missed, has_more)) => {
                self.replay(after, missed, has_more, ready.channels).await
            }
            None => Ok(()),
        }
    }

    /// Sends `missed`, the messages after `after` (at most [`limits::MAX_RESUME`]), then,
    /// where there were more (`has_more`), `resync_required` for each channel with more.
    async fn replay(
        &mut self,
        after: Id,
        missed: Vec<Message>,
        has_more: bool,
        cursors: Vec<ChannelCursor>,
    ) -> Result<(), ApiError> {
        let chat = self.chat.clone();
        // One for the query, one per message replayed.
        chat.hub().charge_resume(
            self.user,
            1 + missed.len() as u32,
            chat.config().ws.resume_budget(),
        );
        for m in &missed {
            self.sent_upto.insert(m.channel_id, m.id);
            chat.metrics().messages_out.inc();
            if !self.socket.send(frame(event::MESSAGE, None, m)).await {
                return Ok(());
            }
        }
        if has_more {
            self.resync(&missed, after, cursors).await?;
        }
        Ok(())
    }

    /// `resync_required` for each channel with messages the replay left out: the client
    /// refetches their history.
    async fn resync(
        &mut self,
        missed: &[Message],
        after: Id,
        cursors: Vec<ChannelCursor>,
    ) -> Result<(), ApiError> {
        let replayed: HashMap<Id, u64> = missed.iter().map(|m| (m.channel_id, m.seq)).collect();
        for c in cursors {
            let behind = match replayed.get(&c.id) {
                Some(seq) => c.last_seq > *seq,
                None => !self
                    .chat
                    .history()
                    .messages_after(&[c.id], after, 1)
                    .await?
                    .0
                    .is_empty(),
            };
            if behind {
                let resync = ResyncRequired { channel_id: c.id };
                self.socket
                    .send(frame(event::RESYNC_REQUIRED, None, &resync))
                    .await;
            }
        }
        Ok(())
    }
}
