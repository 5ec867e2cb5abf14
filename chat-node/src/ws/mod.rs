//! The WebSocket endpoint (`GET /v1/ws`): one session per connection.
//!
//! ```text
//!   hello ─► attach to the hub ─► ready ─► missed messages (resume_after) ─► live:
//!     client frames ──► ops (send, typing, read, history, ping) ──► replies
//!     hub queue ──────► events (deduplicated against the replayed backlog)
//! ```
//! One task per session handles both directions, so replies and events leave in order.
//!
//! Bounds: every write to the socket is bounded (`PARLEY_WS_WRITE_TIMEOUT_MS`), and a close
//! the hub asks for (full queue 4008, expired heartbeat 4002) is seen even while a write is
//! stuck: a client that stops reading is dropped and forgotten. A user holds at most
//! `PARLEY_WS_MAX_SESSIONS_PER_USER` sessions per node, resume replays and typing events
//! draw on per-user budgets, and a session ends with 4003 when its token expires. No
//! WebSocket is upgraded while the node drains (503 `unavailable`).

mod origin;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use parley_protocol::rest::HistoryQuery;
use parley_protocol::ws::{
    ClientFrame, ClientOp, Hello, Pong, Ready, Reconnect, ResyncRequired, SendOk, ServerFrame,
    close, event, parse_client_frame,
};
use parley_protocol::{ErrorBody, ErrorCode, Id, Timestamp, limits};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::AppState;
use crate::chat::SendInput;
use crate::error::ApiError;
use crate::http::server::LocalAddr;
use crate::hub::{Budget, Closer, ConnId, Outbound, SessionSlot};
use crate::ratelimit::RateLimiter;

/// Per-session and per-user bounds of the WebSocket endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct WsLimits {
    /// How long one write to a WebSocket may take, in milliseconds. A client that stops
    /// reading fills its socket's buffers; its next write then cannot progress, and when
    /// this passes the connection is dropped (no close handshake is possible any more) and
    /// forgotten. The client reconnects with `resume_after`.
    #[arg(long, env = "PARLEY_WS_WRITE_TIMEOUT_MS", value_name = "PARLEY_WS_WRITE_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub ws_write_timeout_ms: u64,

    /// WebSocket sessions one user may hold open on one node. The next `hello` is answered
    /// with `error` `rate_limited` and close 4008.
    #[arg(long, env = "PARLEY_WS_MAX_SESSIONS_PER_USER", value_name = "PARLEY_WS_MAX_SESSIONS_PER_USER",
          default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ws_max_sessions_per_user: u32,

    /// Messages a user's `hello`s with `resume_after` may replay per minute (sustained), on
    /// one node. A `hello` that finds the user's budget spent is answered with `error`
    /// `rate_limited` (saying when to retry) and close 4008.
    #[arg(long, env = "PARLEY_WS_RESUME_PER_MINUTE", value_name = "PARLEY_WS_RESUME_PER_MINUTE",
          default_value_t = 3_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_resume_per_minute: u32,

    /// Messages a user's resumes may replay in a burst (the budget when full).
    #[arg(long, env = "PARLEY_WS_RESUME_BURST", value_name = "PARLEY_WS_RESUME_BURST",
          default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_resume_burst: u32,

    /// `typing` ops per second one user may send, over all their sessions on one node;
    /// over it the op is answered `rate_limited` and nothing is delivered.
    #[arg(long, env = "PARLEY_WS_TYPING_RATE", value_name = "PARLEY_WS_TYPING_RATE",
          default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_typing_rate: u32,

    /// Burst of `typing` ops one user may send.
    #[arg(long, env = "PARLEY_WS_TYPING_BURST", value_name = "PARLEY_WS_TYPING_BURST",
          default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_typing_burst: u32,
}

impl WsLimits {
    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_write_timeout_ms)
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

/// How long a client has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Events queued for one connection before it counts as too slow and is closed.
const QUEUE: usize = 1024;
/// Frames over the rate before the connection is closed with 4008.
const MAX_OVER_RATE: u32 = 100;
/// How long a write in progress may still finish once the session is told to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

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
    let local = local.map_or(chat.config.listen, |Extension(LocalAddr(a))| a);
    if let Err(e) = origin::check(
        &headers,
        &chat.config.allowed_origins,
        chat.config.public_url.as_deref(),
        local,
    ) {
        return e.into_response();
    }
    if chat.shutdown.is_cancelled() {
        return ApiError::unavailable("the node is shutting down").into_response();
    }
    if chat.drain.is_draining() {
        // Not upgraded: an upgraded socket would hold a connection the drain then has to
        // close again.
        return ApiError::unavailable("the node is draining: connect to another node")
            .into_response();
    }
    // tungstenite's own cap is above the protocol limit: a frame it refuses is left unread
    // and the close turns into a reset, while one it reads can be refused with a clean 1009.
    let cap = (chat.config.limits.max_frame_bytes as usize * 4).max(1 << 20);
    ws.max_frame_size(cap)
        .max_message_size(cap)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| {
            let tracker = chat.sessions.clone();
            tracker.track_future(run(socket, chat))
        })
}

type Sink = futures_util::stream::SplitSink<WebSocket, WsMessage>;

fn frame<T: Serialize>(t: &str, r#ref: Option<&str>, d: &T) -> WsMessage {
    let text =
        serde_json::to_string(&ServerFrame { t, r#ref, d }).expect("server frames serialize");
    WsMessage::Text(text.into())
}

type Stream = futures_util::stream::SplitStream<WebSocket>;

/// The writing half of a session's socket: every write is bounded by the write timeout,
/// and cut short (after [`CLOSE_GRACE`]) when the hub tells the session to close. A write
/// that fails or cannot progress breaks it: later writes fail at once and the session ends
/// without a close handshake.
struct Out {
    sink: Sink,
    bound: Duration,
    closer: Option<Closer>,
    broken: bool,
}

impl Out {
    fn new(sink: Sink, bound: Duration) -> Self {
        Self {
            sink,
            bound,
            closer: None,
            broken: false,
        }
    }

    async fn bounded<E>(
        bound: Duration,
        closer: Option<&Closer>,
        op: impl Future<Output = Result<(), E>>,
    ) -> bool {
        let deadline = Instant::now() + bound;
        let mut op = std::pin::pin!(op);
        let told = async {
            match closer {
                Some(c) => {
                    c.closed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut op => return r.is_ok(),
            () = tokio::time::sleep_until(deadline) => return false,
            () = told => {}
        }
        // Told to close mid-write: a socket that takes writes finishes this one (the close
        // frame follows); a stuck one is dropped.
        let grace = deadline.min(Instant::now() + CLOSE_GRACE);
        matches!(tokio::time::timeout_at(grace, op).await, Ok(Ok(())))
    }

    async fn send(&mut self, msg: WsMessage) -> bool {
        if self.broken {
            return false;
        }
        let ok = Self::bounded(self.bound, self.closer.as_ref(), self.sink.send(msg)).await;
        self.broken = !ok;
        ok
    }

    async fn feed(&mut self, msg: WsMessage) -> bool {
        if self.broken {
            return false;
        }
        let ok = Self::bounded(self.bound, self.closer.as_ref(), self.sink.feed(msg)).await;
        self.broken = !ok;
        ok
    }

    async fn flush(&mut self) -> bool {
        if self.broken {
            return false;
        }
        let ok = Self::bounded(self.bound, self.closer.as_ref(), self.sink.flush()).await;
        self.broken = !ok;
        ok
    }

    async fn close(&mut self) {
        if !self.broken {
            let _ = Self::bounded(self.bound, None, self.sink.close()).await;
        }
    }
}

/// Sends a close frame, then reads (up to a second) until the client answers it, so the
/// connection ends with a clean close handshake. Nothing when the socket is broken.
async fn close_with(out: &mut Out, stream: &mut Stream, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    };
    if !out.send(WsMessage::Close(Some(frame))).await {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, WsMessage::Close(_)) {
                break;
            }
        }
    })
    .await;
    out.close().await;
}

/// Reads until a text frame (or the end); `Err` carries the close code to use.
async fn next_text(stream: &mut Stream, max: usize) -> Result<Option<String>, (u16, &'static str)> {
    loop {
        match stream.next().await {
            None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
            Some(Ok(WsMessage::Text(t))) if t.len() > max => {
                return Err((close::TOO_LARGE, "frame too large"));
            }
            Some(Ok(WsMessage::Text(t))) => return Ok(Some(t.to_string())),
            Some(Ok(WsMessage::Binary(_))) => return Ok(Some(String::new())),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(read_error(&e)),
        }
    }
}

/// A read error's close code: tungstenite refuses frames over the size limit with a
/// capacity error ("Message too long" / "Space limit exceeded").
fn read_error(e: &axum::Error) -> (u16, &'static str) {
    let text = e.to_string();
    tracing::debug!("websocket read error: {text}");
    if text.contains("too long") || text.contains("Space limit") || text.contains("too big") {
        (close::TOO_LARGE, "frame too large")
    } else {
        (1002, "protocol error")
    }
}

/// Resolves with `after_ms` when the drain tells this session to go; never if the drain
/// was abandoned (the hard shutdown closes the session then).
type Go = std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send>>;

fn go_when_told(rx: tokio::sync::oneshot::Receiver<u64>) -> Go {
    Box::pin(async move {
        match rx.await {
            Ok(after_ms) => after_ms,
            Err(_) => std::future::pending().await,
        }
    })
}

/// What a draining node says before it closes: `reconnect` {after_ms}, then close 4010.
async fn drained(out: &mut Out, stream: &mut Stream, after_ms: u64) {
    out.send(frame(event::RECONNECT, None, &Reconnect { after_ms }))
        .await;
    close_with(
        out,
        stream,
        close::NODE_DRAINING,
        "node draining; reconnect with resume_after",
    )
    .await;
}

async fn run(socket: WebSocket, chat: AppState) {
    let (sink, mut stream) = socket.split();
    let mut out = Out::new(sink, chat.config.ws.write_timeout());
    let conn = chat.next_conn_id();
    let (go, _guard) = match chat.drain.enrol(conn) {
        crate::drain::Enrolled::Draining(after_ms) => {
            // Upgraded just before the drain began.
            return drained(&mut out, &mut stream, after_ms).await;
        }
        crate::drain::Enrolled::Live { go, guard } => (go, guard),
    };
    let mut go = go_when_told(go);
    session(out, stream, &chat, conn, &mut go).await;
    chat.drain.leave(conn);
}

/// An `error` frame (counted in the metrics).
fn error_frame(chat: &AppState, r#ref: Option<&str>, e: &ApiError) -> WsMessage {
    chat.metrics.error(e.code);
    let body = ErrorBody {
        code: e.code,
        message: e.message.clone(),
    };
    frame(event::ERROR, r#ref, &body)
}

/// Answers a hello over a per-user limit: `error` `rate_limited`, then close 4008.
async fn refuse(
    out: &mut Out,
    stream: &mut Stream,
    chat: &AppState,
    r#ref: Option<&str>,
    message: String,
) {
    let e = ApiError::new(ErrorCode::RateLimited, message);
    out.send(error_frame(chat, r#ref, &e)).await;
    close_with(out, stream, close::POLICY, "over a per-user limit").await;
}

/// When a token that expires at `exp` (Unix seconds) does, on the runtime's clock.
fn expiry_instant(exp: i64) -> Instant {
    let left_ms = exp
        .saturating_mul(1000)
        .saturating_sub(Timestamp::now().unix_millis());
    Instant::now() + Duration::from_millis(left_ms.max(0) as u64)
}

/// One connection from its hello to its close.
async fn session(mut out: Out, mut stream: Stream, chat: &AppState, conn: ConnId, go: &mut Go) {
    let max = chat.config.limits.max_frame_bytes as usize;
    let said = tokio::select! {
        said = tokio::time::timeout(HELLO_TIMEOUT, next_text(&mut stream, max)) => said,
        after_ms = &mut *go => return drained(&mut out, &mut stream, after_ms).await,
    };
    let hello = match said {
        Err(_) => {
            return close_with(
                &mut out,
                &mut stream,
                close::BAD_HELLO,
                "no hello within 10 s",
            )
            .await;
        }
        Ok(Err((code, reason))) => return close_with(&mut out, &mut stream, code, reason).await,
        Ok(Ok(None)) => return,
        Ok(Ok(Some(text))) => text,
    };
    let (r#ref, hello) = match parse_client_frame(&hello) {
        Ok(ClientFrame {
            r#ref,
            op: ClientOp::Hello(h),
        }) => (r#ref, h),
        _ => {
            return close_with(
                &mut out,
                &mut stream,
                close::BAD_HELLO,
                "the first frame must be a valid hello",
            )
            .await;
        }
    };
    let (user, expires) = match chat.tokens.verify_with_expiry(&hello.token) {
        Ok((u, exp)) => (u, expiry_instant(exp)),
        Err(_) => {
            return close_with(
                &mut out,
                &mut stream,
                close::BAD_HELLO,
                "invalid or expired token",
            )
            .await;
        }
    };
    let limits = &chat.config.ws;
    let Some(slot) = chat.hub.admit(user, limits.ws_max_sessions_per_user) else {
        let message = format!(
            "at most {} WebSocket sessions per user (PARLEY_WS_MAX_SESSIONS_PER_USER); close one first",
            limits.ws_max_sessions_per_user
        );
        return refuse(&mut out, &mut stream, chat, r#ref.as_deref(), message).await;
    };
    if hello.resume_after.is_some()
        && let Err(wait) = chat.hub.may_resume(user, limits.resume_budget())
    {
        let message = format!(
            "too many messages replayed by resume_after lately (PARLEY_WS_RESUME_PER_MINUTE); \
             retry after {} s, or say hello without resume_after and fetch history",
            wait.as_secs() + 1
        );
        return refuse(&mut out, &mut stream, chat, r#ref.as_deref(), message).await;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let closer = Closer::default();
    out.closer = Some(closer.clone());
    let mut session = Session {
        chat: chat.clone(),
        user,
        conn,
        out,
        sent_upto: HashMap::new(),
        limiter: RateLimiter::new(
            chat.config.limits.ws_frame_rate,
            chat.config.limits.ws_frame_burst,
        ),
        over: 0,
        _slot: slot,
    };
    match session
        .start(r#ref.as_deref(), &hello, tx, closer.clone())
        .await
    {
        Ok(()) => session.live(&mut stream, rx, &closer, go, expires).await,
        Err(e) => {
            session.reply_error(r#ref.as_deref(), &e).await;
            close_with(&mut session.out, &mut stream, 1011, "backend unavailable").await;
        }
    }
    chat.hub.detach(conn).await;
    chat.presence_disconnected(user, conn).await;
}

struct Session {
    chat: AppState,
    user: Id,
    conn: ConnId,
    out: Out,
    /// Highest message id replayed per channel, so live duplicates are skipped.
    sent_upto: HashMap<Id, Id>,
    limiter: RateLimiter<()>,
    over: u32,
    /// The session's place under the per-user cap, until it ends.
    _slot: SessionSlot,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

impl Session {
    async fn send(&mut self, msg: WsMessage) -> bool {
        self.out.send(msg).await
    }

    async fn reply_error(&mut self, r#ref: Option<&str>, e: &ApiError) {
        let msg = error_frame(&self.chat, r#ref, e);
        self.send(msg).await;
    }

    async fn reply_ok<T: Serialize>(&mut self, r#ref: Option<&str>, d: &T) {
        // Ops without a ref get no ok (errors are always answered).
        if r#ref.is_some() {
            self.send(frame(event::OK, r#ref, d)).await;
        }
    }

    /// Attach, `ready`, then the missed messages (charged to the user's replay budget).
    async fn start(
        &mut self,
        r#ref: Option<&str>,
        hello: &Hello,
        tx: mpsc::Sender<Outbound>,
        closer: Closer,
    ) -> Result<(), ApiError> {
        let chat = self.chat.clone();
        let channels: Vec<Id> = chat
            .channels_of(self.user)
            .await?
            .iter()
            .map(|c| c.id)
            .collect();
        // Subscribed before reading the backlog, so nothing falls between the two.
        chat.hub
            .attach(self.conn, self.user, &channels, tx, closer)
            .await?;
        chat.presence_connected(self.user, self.conn).await;
        let ready = Ready {
            user_id: self.user,
            session_id: format!("{}-{}", chat.config.node_name, self.conn),
            node: chat.config.node_name.clone(),
            heartbeat_interval_ms: chat.config.heartbeat_interval_ms,
            channels: chat.cursors(&channels).await?,
        };
        let cursors = ready.channels.clone();
        self.send(frame(event::READY, r#ref, &ready)).await;
        let Some(after) = hello.resume_after else {
            return Ok(());
        };
        let (missed, has_more) = chat
            .messages_after(&channels, after, limits::MAX_RESUME as u32)
            .await?;
        // One for the query, one per message replayed.
        chat.hub.charge_resume(
            self.user,
            1 + missed.len() as u32,
            chat.config.ws.resume_budget(),
        );
        for m in &missed {
            self.sent_upto.insert(m.channel_id, m.id);
            self.chat.metrics.messages_out.inc();
            if !self.send(frame(event::MESSAGE, None, m)).await {
                return Ok(());
            }
        }
        if has_more {
            // Channels with messages that were not replayed: the client refetches their
            // history.
            let mut replayed: HashMap<Id, u64> = HashMap::new();
            for m in &missed {
                replayed.insert(m.channel_id, m.seq);
            }
            for c in cursors {
                let behind = match replayed.get(&c.id) {
                    Some(seq) => c.last_seq > *seq,
                    None => !chat.messages_after(&[c.id], after, 1).await?.0.is_empty(),
                };
                if behind {
                    self.send(frame(
                        event::RESYNC_REQUIRED,
                        None,
                        &ResyncRequired { channel_id: c.id },
                    ))
                    .await;
                }
            }
        }
        Ok(())
    }

    async fn live(
        &mut self,
        stream: &mut Stream,
        mut rx: mpsc::Receiver<Outbound>,
        closer: &Closer,
        go: &mut Go,
        expires: Instant,
    ) {
        let shutdown = self.chat.shutdown.clone();
        let max = self.chat.config.limits.max_frame_bytes as usize;
        let expiry = tokio::time::sleep_until(expires);
        tokio::pin!(expiry);
        loop {
            if self.out.broken {
                // A write failed or could not progress: no close handshake is possible.
                tracing::debug!(conn = self.conn, "websocket dropped: its writes are stuck");
                return;
            }
            let flow = tokio::select! {
                biased;
                () = shutdown.cancelled() => Flow::Close(close::GOING_AWAY, "node shutting down; reconnect with resume_after"),
                after_ms = &mut *go => {
                    // Events still queued are not written: the client resumes after the
                    // last message it got.
                    return drained(&mut self.out, stream, after_ms).await;
                }
                (code, reason) = closer.closed() => Flow::Close(code, reason),
                () = &mut expiry => Flow::Close(close::TOKEN_EXPIRED, "token expired; reconnect with a fresh token"),
                out = rx.recv() => match out {
                    Some(out) => self.events(out, &mut rx).await,
                    None => Flow::Close(1011, "internal error"),
                },
                incoming = stream.next() => match incoming {
                    None | Some(Ok(WsMessage::Close(_))) => return,
                    Some(Ok(WsMessage::Text(t))) if t.len() > max => Flow::Close(close::TOO_LARGE, "frame too large"),
                    Some(Ok(WsMessage::Text(t))) => self.frame(&t).await,
                    Some(Ok(WsMessage::Binary(_))) => {
                        self.reply_error(None, &ApiError::bad_request("frames are JSON text, not binary")).await;
                        Flow::Continue
                    }
                    Some(Ok(_)) => Flow::Continue,
                    Some(Err(e)) => {
                        let (code, reason) = read_error(&e);
                        Flow::Close(code, reason)
                    }
                },
            };
            if let Flow::Close(code, reason) = flow {
                close_with(&mut self.out, stream, code, reason).await;
                return;
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), with one flush: one
    /// write per batch instead of one per event.
    async fn events(&mut self, first: Outbound, rx: &mut mpsc::Receiver<Outbound>) -> Flow {
        const BATCH: usize = 256;
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            match out {
                Outbound::Close(code, reason) => {
                    self.out.flush().await;
                    return Flow::Close(code, reason);
                }
                Outbound::Frame { bytes, message } => {
                    let duplicate = message.is_some_and(|(channel, id)| {
                        self.sent_upto.get(&channel).is_some_and(|upto| id <= *upto)
                    });
                    if !duplicate {
                        if message.is_some() {
                            self.chat.metrics.messages_out.inc();
                        }
                        match Utf8Bytes::try_from(bytes) {
                            Ok(text) => {
                                if !self.out.feed(WsMessage::Text(text)).await {
                                    return Flow::Continue;
                                }
                            }
                            Err(_) => tracing::error!("a non-UTF-8 event was dropped"),
                        }
                    }
                }
            }
            n += 1;
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.out.flush().await;
        Flow::Continue
    }

    async fn frame(&mut self, text: &str) -> Flow {
        let parsed = parse_client_frame(text);
        if !self.limiter.allow((), Timestamp::now().unix_millis()) {
            self.over += 1;
            if self.over > MAX_OVER_RATE {
                return Flow::Close(close::POLICY, "too many frames");
            }
            let limits = &self.chat.config.limits;
            let e = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} frames per second (bursts of {})",
                    limits.ws_frame_rate, limits.ws_frame_burst
                ),
            );
            // The reply still echoes the ref, so the client can match it to its op.
            let r#ref = match &parsed {
                Ok(f) => f.r#ref.clone(),
                Err(e) => e.r#ref.clone(),
            };
            self.reply_error(r#ref.as_deref(), &e).await;
            return Flow::Continue;
        }
        self.over = 0;
        let parsed = match parsed {
            Ok(f) => f,
            Err(e) => {
                self.reply_error(e.r#ref.as_deref(), &ApiError::bad_request(e.message))
                    .await;
                return Flow::Continue;
            }
        };
        let r#ref = parsed.r#ref.as_deref();
        let chat = self.chat.clone();
        let user = self.user;
        let result: Result<(), ApiError> = match parsed.op {
            ClientOp::Hello(_) => Err(ApiError::bad_request(
                "hello was already said on this connection",
            )),
            ClientOp::Ping => {
                chat.presence_ping(user, self.conn).await;
                self.send(frame(
                    event::PONG,
                    r#ref,
                    &Pong {
                        server_time: Timestamp::now(),
                    },
                ))
                .await;
                return Flow::Continue;
            }
            ClientOp::Send(s) => {
                let input = SendInput {
                    text: s.text,
                    client_msg_id: Some(s.client_msg_id),
                    attachments: s.attachments,
                    reply_to: s.reply_to,
                };
                match chat.send(user, s.channel_id, input).await {
                    Ok(message) => {
                        // The event of this message may already be queued: the ok goes first
                        // and the event still arrives, as for every other member.
                        self.reply_ok(r#ref, &SendOk { message }).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            ClientOp::Typing(t) => {
                // Per user, over all their sessions: more sessions do not multiply typing.
                match chat.hub.allow_typing(user, chat.config.ws.typing_budget()) {
                    Err(_) => Err(ApiError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "at most {} typing events per second per user (bursts of {})",
                            chat.config.ws.ws_typing_rate, chat.config.ws.ws_typing_burst
                        ),
                    )),
                    Ok(()) => match chat.typing(user, t.channel_id).await {
                        Ok(()) => {
                            self.reply_ok(r#ref, &serde_json::json!({})).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                }
            }
            ClientOp::Read(r) => match chat.mark_read(user, r.channel_id, r.message_id).await {
                Ok(()) => {
                    self.reply_ok(r#ref, &serde_json::json!({})).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ClientOp::History(h) => {
                let q = HistoryQuery {
                    before: h.before,
                    after: h.after,
                    limit: h.limit,
                };
                match chat.history(user, h.channel_id, &q).await {
                    Ok(page) => {
                        self.reply_ok(r#ref, &page).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            self.reply_error(r#ref, &e).await;
        }
        Flow::Continue
    }
}
