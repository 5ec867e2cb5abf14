//! One session's transport: a [`Transport`] (a [`Sink`] of frames and a [`Stream`] of read
//! results: an upgraded connection's [`WsStream`](super::stream::WsStream), or channels in
//! tests) with bounded writes and the close handshake.
//!
//! ```text
//!   Socket ─ writes: every write bounded by PARLEY_WS_WRITE_TIMEOUT_MS, cut short when the
//!          │         hub's Closer fires; a write that fails or stalls breaks the socket
//!          └ reads:  frames in (gated: see `gate`); a read error becomes a close code
//!                    (1009, 1007, 1002)
//! ```

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use parley_protocol::ws::close;
use tokio::time::Instant;

use super::gate::Gate;
use super::stream::ReadError;
use crate::hub::Closer;

/// How long a write in progress may still finish once the session is told to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long the close handshake waits for the client's close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Why a session ends: a close code and its reason.
pub(super) type CloseReason = (u16, &'static str);

/// What a session runs on: a [`Sink`] of frames out and a [`Stream`] of frames in, in one
/// object (one task owns both directions, so no lock splits them).
pub(super) trait Transport:
    Sink<WsMessage> + Stream<Item = Result<WsMessage, ReadError>> + Unpin
{
}

impl<T> Transport for T where
    T: Sink<WsMessage> + Stream<Item = Result<WsMessage, ReadError>> + Unpin
{
}

/// The transport of one session. Writes are bounded by `bound` and cut short (after
/// [`CLOSE_GRACE`]) once the [`Closer`] fires. A write that fails or cannot progress
/// breaks the socket: later writes fail at once and the session ends without a close
/// handshake. Reads are gated ([`Gate`]): a turn of the session's loop that an event woke
/// does not attempt a read.
pub(super) struct Socket<T> {
    io: Gate<T>,
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

impl<T: Transport> Socket<T> {
    /// A socket whose writes may each take at most `bound`.
    pub(super) fn new(io: T, bound: Duration) -> Self {
        Self {
            io: Gate::new(io),
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
        let (bound, closer, sink) = (self.bound, self.closer.as_ref(), &mut self.io);
        let ok = match w {
            Write::Send(msg) => bounded(bound, closer, sink.send(msg)).await,
            Write::Feed(msg) => bounded(bound, closer, sink.feed(msg)).await,
            Write::Flush => bounded(bound, closer, sink.flush()).await,
        };
        self.broken = !ok;
        ok
    }

    /// The next frame from the client (`None`: the stream ended).
    pub(super) async fn next(&mut self) -> Option<Result<WsMessage, ReadError>> {
        self.io.next().await
    }

    /// Reads until a text frame (a binary frame reads as empty text); `Ok(None)` when the
    /// client closed, `Err` with the close code to use for a frame over `max` bytes or a
    /// read error.
    pub(super) async fn next_text(&mut self, max: usize) -> Result<Option<String>, CloseReason> {
        loop {
            match self.io.next().await {
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

    /// After the client closed: writes what is queued (the echo of its close) and shuts
    /// the connection down, for at most [`CLOSE_HANDSHAKE`]. Nothing when the socket is
    /// broken.
    pub(super) async fn finish(&mut self) {
        if !self.broken {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, self.io.close()).await;
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
            while let Some(Ok(msg)) = self.io.next().await {
                if matches!(msg, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
        if !self.broken {
            let _ = bounded(self.bound, None, self.io.close()).await;
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

/// A read error's close code and reason (1009, 1007 or 1002).
pub(super) fn read_error(e: &ReadError) -> CloseReason {
    tracing::debug!("websocket read error: {e}");
    e.close_reason()
}
