//! One session's transport: the two halves of a WebSocket as a [`Sink`] of frames and a
//! [`Stream`] of read results, so a session runs on an upgraded socket or, in tests, on
//! channels.
//!
//! ```text
//!   Socket ─ sink:   every write bounded by PARLEY_WS_WRITE_TIMEOUT_MS, cut short when the
//!          │         hub's Closer fires; a write that fails or stalls breaks the socket
//!          └ stream: frames in; a read error becomes a close code (1009, 1002)
//! ```

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use parley_protocol::ws::close;
use tokio::time::Instant;

use crate::hub::Closer;

/// How long a write in progress may still finish once the session is told to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long the close handshake waits for the client's close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Why a session ends: a close code and its reason.
pub(super) type CloseReason = (u16, &'static str);

/// The transport of one session. Writes are bounded by `bound` and cut short (after
/// [`CLOSE_GRACE`]) once the [`Closer`] fires. A write that fails or cannot progress
/// breaks the socket: later writes fail at once and the session ends without a close
/// handshake.
pub(super) struct Socket<S, R> {
    sink: S,
    stream: R,
    bound: Duration,
    closer: Option<Closer>,
    broken: bool,
}

/// One write: a frame flushed at once, a frame buffered, or a flush of what is buffered.
enum Write {
    Send(WsMessage),
    Feed(WsMessage),
    Flush,
}

impl<S, R, E> Socket<S, R>
where
    S: Sink<WsMessage> + Unpin,
    R: Stream<Item = Result<WsMessage, E>> + Unpin,
    E: std::fmt::Display,
{
    /// A socket whose writes may each take at most `bound`.
    pub(super) fn new(sink: S, stream: R, bound: Duration) -> Self {
        Self {
            sink,
            stream,
            bound,
            closer: None,
            broken: false,
        }
    }

    /// From now on, a write in progress when `closer` fires gets only [`CLOSE_GRACE`].
    pub(super) fn watch(&mut self, closer: Closer) {
        self.closer = Some(closer);
    }

    /// Whether a write failed or could not progress (no close handshake is possible).
    pub(super) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Writes `msg` and flushes it. `false`: the socket is broken.
    pub(super) async fn send(&mut self, msg: WsMessage) -> bool {
        self.write(Write::Send(msg)).await
    }

    /// Buffers `msg` (a [`flush`](Self::flush) follows). `false`: the socket is broken.
    pub(super) async fn feed(&mut self, msg: WsMessage) -> bool {
        self.write(Write::Feed(msg)).await
    }

    /// Flushes what [`feed`](Self::feed) buffered. `false`: the socket is broken.
    pub(super) async fn flush(&mut self) -> bool {
        self.write(Write::Flush).await
    }

    async fn write(&mut self, w: Write) -> bool {
        if self.broken {
            return false;
        }
        let (bound, closer, sink) = (self.bound, self.closer.as_ref(), &mut self.sink);
        let ok = match w {
            Write::Send(msg) => bounded(bound, closer, sink.send(msg)).await,
            Write::Feed(msg) => bounded(bound, closer, sink.feed(msg)).await,
            Write::Flush => bounded(bound, closer, sink.flush()).await,
        };
        self.broken = !ok;
        ok
    }

    /// The next frame from the client (`None`: the stream ended).
    pub(super) async fn next(&mut self) -> Option<Result<WsMessage, E>> {
        self.stream.next().await
    }

    /// Reads until a text frame (a binary frame reads as empty text); `Ok(None)` when the
    /// client closed, `Err` with the close code to use for a frame over `max` bytes or a
    /// read error.
    pub(super) async fn next_text(&mut self, max: usize) -> Result<Option<String>, CloseReason> {
        loop {
            match self.stream.next().await {
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

    /// Sends a close frame, then reads (up to [`CLOSE_HANDSHAKE`]) until the client answers
    /// it, so the connection ends with a clean close handshake. Nothing when the socket is
    /// broken.
    pub(super) async fn close_with(&mut self, (code, reason): CloseReason) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_owned()),
        };
        if !self.send(WsMessage::Close(Some(frame))).await {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(msg)) = self.stream.next().await {
                if matches!(msg, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
        if !self.broken {
            let _ = bounded(self.bound, None, self.sink.close()).await;
        }
    }
}

/// Runs the write `op` for at most `bound`; when `closer` fires meanwhile, a socket that
/// takes writes finishes this one (the close frame follows) and a stuck one is given up
/// after [`CLOSE_GRACE`]. `true`: the write completed.
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
    // Biased, the write first: it usually completes on its first poll, and then neither
    // the timer nor the closer is polled (no timer entry registered and removed per write).
    tokio::select! {
        biased;
        r = &mut op => return r.is_ok(),
        () = told => {}
        () = tokio::time::sleep_until(deadline) => return false,
    }
    let grace = deadline.min(Instant::now() + CLOSE_GRACE);
    matches!(tokio::time::timeout_at(grace, op).await, Ok(Ok(())))
}

/// A read error's close code: tungstenite refuses frames over the size limit with a
/// capacity error ("Message too long" / "Space limit exceeded"); anything else is a
/// protocol error.
pub(super) fn read_error(e: &impl std::fmt::Display) -> CloseReason {
    let text = e.to_string();
    tracing::debug!("websocket read error: {text}");
    if text.contains("too long") || text.contains("Space limit") || text.contains("too big") {
        (close::TOO_LARGE, "frame too large")
    } else {
        (close::PROTOCOL_ERROR, "protocol error")
    }
}
