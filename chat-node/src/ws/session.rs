//! One session from its upgrade to its close, written against a [`Sink`] of frames and a
//! [`Stream`] of read results (an upgraded socket's halves, or channels in tests).
//!
//! ```text
//!   run ─► drain enrolment ─► hello::greet ─► hello::admit ─► Session::start ─► live loop:
//!            │ (draining:            (4001)          (4008)      attach, ready,
//!            │  reconnect + 4010)                                 missed messages
//!            ▼
//!   live: one task, one select over
//!     control (gated) ─────► node shutdown: close 1001; drain's go: reconnect + close 4010;
//!                            hub's Closer: close 4008 / 4002; token expiry: close 4003
//!     hub queue ───────────► events, batched, one flush per batch (replayed ones skipped;
//!                            a presence batch as `presence` frames or `presence_batch`)
//!     client frames (gated) ► parse ─► frame rate ─► ops::dispatch ─► ops::answer ─► socket
//! ```
//!
//! Gated ([`super::gate`]): polled only once woken, not on each of the turns that events
//! wake the loop for.
//!
//! Replies and events leave through the one task, so they are written in order. The
//! heartbeat is the client's `ping` (it keeps the user's presence); a connection that stops
//! pinging is told to close (4002) by the presence tracker through the hub's [`Closer`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use bytes::Bytes;
use futures_util::StreamExt as _;
use parley_protocol::ws::{Reconnect, close, event, parse_client_frame};
use parley_protocol::{Id, Timestamp};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::frame;
use super::gate::Gate;
use super::hello;
use super::ops::{self, Caller, Reply};
use super::socket::{CloseReason, Socket, Transport, read_error};
use super::stream::ReadError;
use crate::drain::Enrolled;
use crate::error::ApiError;
use crate::http::AppState;
use crate::hub::presence_batch::{self, PresenceFrame};
use crate::hub::{Closer, ConnId, EventReceiver, Outbound, SessionSlot};
use crate::ratelimit::RateLimiter;

/// Events queued for one connection before it counts as too slow and is closed.
const QUEUE: usize = 1024;
/// Frames over the rate before the connection is closed with 4008.
const MAX_OVER_RATE: u32 = 100;
/// Events written per flush.
const BATCH: usize = 256;

/// Resolves with `after_ms` when the drain tells this session to go; never if the drain
/// was abandoned (the hard shutdown closes the session then).
pub(super) type Go = Pin<Box<dyn Future<Output = u64> + Send>>;

fn go_when_told(rx: oneshot::Receiver<u64>) -> Go {
    Box::pin(async move {
        match rx.await {
            Ok(after_ms) => after_ms,
            Err(_) => std::future::pending().await,
        }
    })
}

/// Runs one connection, given its transport, until it closes.
///
/// Its task's size is what every idle connection costs, so what is large and short-lived
/// is boxed and awaited (the hello, the start, a close, each batch of events, each op), and
/// the socket is boxed once (moved from step to step, it would otherwise take room in the
/// task at each).
pub(super) async fn run<T: Transport>(io: T, chat: AppState) {
    let mut socket = Box::new(Socket::new(io, chat.config().ws.write_timeout()));
    let conn = chat.hub().next_conn_id();
    let (go, _guard) = match chat.lifecycle().drain().enrol(conn) {
        // Upgraded just before the drain began.
        Enrolled::Draining(after_ms) => return Box::pin(drained(&mut socket, after_ms)).await,
        Enrolled::Live { go, guard } => (go, guard),
    };
    let mut go = go_when_told(go);
    session(socket, &chat, conn, &mut go).await;
    chat.lifecycle().drain().leave(conn);
}

/// What a draining node says before it closes: `reconnect` {after_ms}, then close 4010.
pub(super) async fn drained<T: Transport>(socket: &mut Socket<T>, after_ms: u64) {
    socket
        .send(frame(event::RECONNECT, None, &Reconnect { after_ms }))
        .await;
    socket
        .close_with((
            close::NODE_DRAINING,
            "node draining; reconnect with resume_after",
        ))
        .await;
}

/// One connection from its hello to its close.
async fn session<T: Transport>(
    mut socket: Box<Socket<T>>,
    chat: &AppState,
    conn: ConnId,
    go: &mut Go,
) {
    let Some(greeting) = Box::pin(hello::greet(&mut socket, chat, go)).await else {
        return;
    };
    let r#ref = greeting.r#ref.as_deref();
    let slot = match hello::admit(chat, &greeting) {
        Ok(slot) => slot,
        Err(e) => return Box::pin(hello::refuse(&mut socket, chat, r#ref, &e)).await,
    };
    let (tx, rx) = crate::hub::queue(QUEUE);
    let closer = Closer::default();
    socket.watch(closer.clone());
    let mut session = Session::new(chat.clone(), greeting.user, conn, socket, slot);
    session.presence_batch = greeting.presence_batch;
    let started = Box::pin(session.start(r#ref, greeting.resume_after, tx, closer.clone())).await;
    match started {
        Ok(()) => session.live(rx, &closer, go, greeting.expires).await,
        Err(e) => {
            Box::pin(async {
                session.answer(r#ref, Err(e)).await;
                session
                    .socket
                    .close_with((close::INTERNAL_ERROR, "backend unavailable"))
                    .await;
            })
            .await;
        }
    }
    Box::pin(async {
        chat.hub().detach(conn).await;
        chat.presence().disconnected(greeting.user, conn).await;
    })
    .await;
}

/// What ends the live loop from outside the connection.
enum Control {
    /// The node shuts down.
    Shutdown,
    /// The drain tells this session to go (`after_ms`).
    Go(u64),
    /// The hub's [`Closer`] fired.
    Close(CloseReason),
    /// The session's token expired.
    Expired,
}

/// What the live loop does next.
enum Flow {
    Continue,
    /// Close with a handshake.
    Close(CloseReason),
    /// The client closed (its close is answered) or went away: nothing more to say.
    End,
}

/// A session after its hello: the user, their connection, and its socket.
pub(super) struct Session<T> {
    pub(super) chat: AppState,
    pub(super) user: Id,
    pub(super) conn: ConnId,
    pub(super) socket: Box<Socket<T>>,
    /// Highest message id replayed per channel, so live duplicates are skipped.
    pub(super) sent_upto: HashMap<Id, Id>,
    /// Presence changes go out as `presence_batch` frames, not `presence` (hello's choice).
    presence_batch: bool,
    rate: FrameRate,
    /// The session's place under the per-user cap, until it ends.
    _slot: SessionSlot,
}

impl<T: Transport> Session<T> {
    fn new(
        chat: AppState,
        user: Id,
        conn: ConnId,
        socket: Box<Socket<T>>,
        slot: SessionSlot,
    ) -> Self {
        let rate = FrameRate::new(&chat);
        Self {
            chat,
            user,
            conn,
            socket,
            sent_upto: HashMap::new(),
            presence_batch: false,
            rate,
            _slot: slot,
        }
    }

    /// Sends the answer to an op with `ref` (nothing for an `ok` without a `ref`).
    pub(super) async fn answer(&mut self, r#ref: Option<&str>, result: Result<Reply, ApiError>) {
        if let Some(msg) = ops::answer(&self.chat, r#ref, &result) {
            self.socket.send(msg).await;
        }
    }

    /// The live loop: until a close, events from the hub queue and ops from the client.
    async fn live(
        &mut self,
        mut rx: EventReceiver,
        closer: &Closer,
        go: &mut Go,
        expires: Instant,
    ) {
        let shutdown = self.chat.lifecycle().shutdown().clone();
        // Made once and gated: an event wakes the loop, and each turn polls every branch;
        // these are polled only when one of them was woken (see `gate`).
        let control = std::pin::pin!(async {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => Control::Shutdown,
                after_ms = &mut *go => Control::Go(after_ms),
                reason = closer.closed() => Control::Close(reason),
                () = tokio::time::sleep_until(expires) => Control::Expired,
            }
        });
        let mut control = Gate::new(control);
        loop {
            if self.socket.is_broken() {
                // A write failed or could not progress: no close handshake is possible.
                tracing::debug!(conn = self.conn, "websocket dropped: its writes are stuck");
                return;
            }
            let flow = tokio::select! {
                biased;
                c = &mut control => match c {
                    Control::Shutdown => Flow::Close((close::GOING_AWAY, "node shutting down; reconnect with resume_after")),
                    Control::Go(after_ms) => {
                        // Events still queued are not written: the client resumes after the
                        // last message it got.
                        return Box::pin(drained(&mut self.socket, after_ms)).await;
                    }
                    Control::Close(reason) => Flow::Close(reason),
                    Control::Expired => Flow::Close((close::TOKEN_EXPIRED, "token expired; reconnect with a fresh token")),
                },
                // The handlers are boxed: their futures (a write, an op and its answer) are
                // most of a session's size but exist only while they run, and a session
                // spends its life waiting here (an idle connection's task stays small).
                out = rx.next() => match out {
                    Some(out) => Box::pin(self.events(out, &mut rx)).await,
                    None => Flow::Close((close::INTERNAL_ERROR, "internal error")),
                },
                incoming = self.socket.next() => Box::pin(self.incoming(incoming)).await,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close(reason) => return Box::pin(self.socket.close_with(reason)).await,
                Flow::End => return Box::pin(self.socket.finish()).await,
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), with one flush: one
    /// write per batch instead of one per event.
    async fn events(&mut self, first: Outbound, rx: &mut EventReceiver) -> Flow {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            match out {
                Outbound::Close(code, reason) => {
                    self.socket.flush().await;
                    return Flow::Close((code, reason));
                }
                Outbound::Frame(e) => {
                    if !self.event(e.bytes.clone(), e.message).await {
                        return Flow::Continue;
                    }
                }
                Outbound::Presence(batch) => {
                    if !self.presence(&batch.take()).await {
                        return Flow::Continue;
                    }
                }
            }
            n += 1;
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.socket.flush().await;
        Flow::Continue
    }

    /// Buffers one event, unless it is a message the resume backlog already carried.
    /// `false`: the socket broke.
    async fn event(&mut self, bytes: Bytes, message: Option<(Id, Id)>) -> bool {
        let replayed = message.is_some_and(|(channel, id)| {
            self.sent_upto.get(&channel).is_some_and(|upto| id <= *upto)
        });
        if replayed {
            return true;
        }
        if message.is_some() {
            self.chat.metrics().messages_out.inc();
        }
        match Utf8Bytes::try_from(bytes) {
            Ok(text) => self.socket.feed(WsMessage::Text(text)).await,
            Err(_) => {
                tracing::error!("a non-UTF-8 event was dropped");
                true
            }
        }
    }

    /// Buffers a batch of presence changes: `presence_batch` frames of at most
    /// [`presence_batch::FRAME_MAX_PRESENCES`], or a `presence` frame each. `false`: the
    /// socket broke.
    async fn presence(&mut self, frames: &[PresenceFrame]) -> bool {
        if frames.is_empty() {
            return true;
        }
        if self.presence_batch {
            for chunk in frames.chunks(presence_batch::FRAME_MAX_PRESENCES) {
                if !self.event(presence_batch::batch_frame(chunk), None).await {
                    return false;
                }
            }
            return true;
        }
        for f in frames {
            if !self.event(f.frame.clone(), None).await {
                return false;
            }
        }
        true
    }

    /// One read from the client.
    async fn incoming(&mut self, incoming: Option<Result<WsMessage, ReadError>>) -> Flow {
        let max = self.chat.config().limits.max_frame_bytes as usize;
        match incoming {
            None | Some(Ok(WsMessage::Close(_))) => Flow::End,
            Some(Ok(WsMessage::Text(t))) if t.len() > max => {
                Flow::Close((close::TOO_LARGE, "frame too large"))
            }
            Some(Ok(WsMessage::Text(t))) => self.text(&t).await,
            Some(Ok(WsMessage::Binary(_))) => {
                let e = ApiError::bad_request("frames are JSON text, not binary");
                self.answer(None, Err(e)).await;
                Flow::Continue
            }
            Some(Ok(_)) => Flow::Continue,
            Some(Err(e)) => Flow::Close(read_error(&e)),
        }
    }

    /// One text frame: counted against the frame rate, parsed, dispatched, answered. A
    /// bad frame is answered with an error and the session goes on.
    async fn text(&mut self, text: &str) -> Flow {
        // Parsed before the rate check, so even a refusal echoes the ref.
        let (r#ref, op) = match parse_client_frame(text) {
            Ok(f) => (f.r#ref, Ok(f.op)),
            Err(e) => (e.r#ref, Err(ApiError::bad_request(e.message))),
        };
        let result = match self.rate.admit(&self.chat) {
            Admission::Close => return Flow::Close((close::POLICY, "too many frames")),
            Admission::Refuse(e) => Err(e),
            Admission::Allow => match op {
                Ok(op) => {
                    let caller = Caller {
                        chat: &self.chat,
                        user: self.user,
                        conn: self.conn,
                    };
                    // Boxed: a dispatch's future (a send through the log and the store)
                    // exists only while an op runs.
                    Box::pin(ops::dispatch(caller, op)).await
                }
                Err(e) => Err(e),
            },
        };
        self.answer(r#ref.as_deref(), result).await;
        Flow::Continue
    }
}

/// The per-session frame rate: frames over it are refused, and past [`MAX_OVER_RATE`] in a
/// row the connection is closed.
struct FrameRate {
    limiter: RateLimiter<()>,
    over: u32,
}

/// Whether a frame may be handled.
enum Admission {
    Allow,
    /// Answered with this error (`rate_limited`).
    Refuse(ApiError),
    /// Too many refused in a row: close 4008.
    Close,
}

impl FrameRate {
    fn new(chat: &AppState) -> Self {
        let limits = &chat.config().limits;
        Self {
            limiter: RateLimiter::new(limits.ws_frame_rate, limits.ws_frame_burst),
            over: 0,
        }
    }

    fn admit(&mut self, chat: &AppState) -> Admission {
        if self.limiter.allow((), Timestamp::now().unix_millis()) {
            self.over = 0;
            return Admission::Allow;
        }
        self.over += 1;
        if self.over > MAX_OVER_RATE {
            return Admission::Close;
        }
        let limits = &chat.config().limits;
        Admission::Refuse(ApiError::rate_limited(format!(
            "at most {} frames per second (bursts of {})",
            limits.ws_frame_rate, limits.ws_frame_burst
        )))
    }
}
