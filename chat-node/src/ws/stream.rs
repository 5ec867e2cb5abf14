//! [`WsStream`]: a WebSocket over its upgraded connection (RFC 6455, server side), a
//! [`Stream`] of the client's messages and a [`Sink`] of the server's, that holds no buffer
//! while the connection is idle.
//!
//! ```text
//!   read:  poll_read into READ_CHUNK bytes on the poll's stack ─► codec::Decoder
//!            whole frames ─► messages (a ping queues its pong, a close its echo)
//!            the tail of a frame ─► `partial` (allocated only until the frame completes)
//!   write: start_send ─► `out`: (header, payload) per frame, the payload's Bytes shared
//!            with every other connection it goes to (no copy)
//!          poll_flush ─► one vectored write (writev) of up to 32 frames at a time;
//!            `out` is released once empty
//! ```
//!
//! Why not tungstenite: its codec keeps a read buffer (4 KiB here, 128 KiB by default) and
//! an output buffer that keeps its largest size for the life of every connection, and it
//! copies each event into that buffer per connection. An idle connection here holds the
//! decoder's limit and a few empty collections; a frame in flight is copied nowhere.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use parley_protocol::ws::close;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::codec::{self, Decoded, Decoder, Header, WireError};
use super::socket::CloseReason;

/// Bytes read per attempt, into a buffer on the stack of the poll (never kept).
const READ_CHUNK: usize = 4096;
/// Bytes queued past which [`Sink::poll_ready`] writes them out before taking more.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Slices per vectored write: a header and a payload per frame. Below Linux's `IOV_MAX`
/// (1024).
const MAX_SLICES: usize = 64;

/// Why the client's side of a WebSocket cannot be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// The client broke the framing, sent a message over the limit, or text that is not
    /// UTF-8.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The connection failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The close code and reason to end the session with: the codec's code (1002, 1007,
    /// 1009), or 1002 for a failed connection (the close will not reach the client).
    pub(super) fn close_reason(&self) -> CloseReason {
        match self {
            Self::Wire(WireError::TooLarge) => (close::TOO_LARGE, "frame too large"),
            Self::Wire(e @ WireError::InvalidUtf8) => (e.close_code(), "invalid UTF-8"),
            Self::Wire(WireError::Protocol(_)) | Self::Io(_) => {
                (close::PROTOCOL_ERROR, "protocol error")
            }
        }
    }
}

/// Where the read side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadSide {
    Open,
    /// The client's close frame was read, the connection ended, or a read failed: the
    /// stream yields nothing more.
    Done,
}

/// One frame waiting to be written.
struct Chunk {
    header: Header,
    payload: Bytes,
}

impl Chunk {
    fn len(&self) -> usize {
        self.header.as_bytes().len() + self.payload.len()
    }
}

/// A server-side WebSocket over `io`, the connection after its opening handshake. See the
/// module's doc. Reads fail with [`ReadError`]; writes with the connection's
/// [`io::Error`], and once one failed every later one fails too.
pub(super) struct WsStream<T> {
    io: T,
    decoder: Decoder,
    /// Bytes read and not yet decoded, from `start`: the frames after the first of a read,
    /// or a frame's beginning. Empty, with no allocation, between frames.
    partial: Vec<u8>,
    /// Where in `partial` the next frame begins (decoded frames are not moved out one by
    /// one; what is left moves to the front before the next read).
    start: usize,
    read: ReadSide,
    /// Frames waiting to be written; empty, with no allocation, once all are written.
    out: VecDeque<Chunk>,
    /// Bytes of `out`'s first frame already written.
    written: usize,
    /// Bytes in `out` not yet written.
    queued: usize,
    /// A close frame was queued: nothing may be sent after it (§5.5.1).
    close_queued: bool,
    /// A write failed: every later one fails.
    write_failed: bool,
}

impl<T> WsStream<T> {
    /// The WebSocket on `io`, whose client may send messages of at most `max_message`
    /// payload bytes (fragments together; over it the read fails with 1009).
    pub(super) fn new(io: T, max_message: usize) -> Self {
        Self {
            io,
            decoder: Decoder::new(max_message),
            partial: Vec::new(),
            start: 0,
            read: ReadSide::Open,
            out: VecDeque::new(),
            written: 0,
            queued: 0,
            close_queued: false,
            write_failed: false,
        }
    }

    /// Queues `msg` to be written.
    fn queue(&mut self, msg: WsMessage) {
        let (opcode, payload) = codec::encode(msg);
        if opcode == codec::OpCode::Close {
            self.close_queued = true;
        }
        let chunk = Chunk {
            header: Header::new(opcode, payload.len()),
            payload,
        };
        self.queued += chunk.len();
        self.out.push_back(chunk);
    }

    /// `n` bytes of `out` were written.
    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let left = self.out[0].len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.out.pop_front();
            self.written = 0;
        }
    }

    /// The bytes of `partial` not yet decoded.
    fn pending(&self) -> &[u8] {
        &self.partial[self.start..]
    }

    /// `consumed` more bytes of `partial` were decoded.
    fn consume(&mut self, consumed: usize) {
        self.start += consumed;
        if self.start == self.partial.len() {
            // Released: an idle connection holds no read buffer.
            self.partial = Vec::new();
            self.start = 0;
        } else if self.partial.capacity() > 2 * READ_CHUNK && self.pending().len() <= READ_CHUNK {
            // A large frame was read and a small tail stays: its room is given back now,
            // not after the next read (which may be long in coming).
            self.partial.drain(..self.start);
            self.start = 0;
            self.partial.shrink_to(READ_CHUNK);
        }
    }

    /// Appends `bytes` read to what is pending, moving that to the front first, and gives
    /// back the room a large frame took once it is no longer needed.
    fn append(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.partial.drain(..self.start);
            self.start = 0;
        }
        let want = (self.partial.len() + bytes.len()).max(READ_CHUNK);
        if self.partial.capacity() > 2 * want {
            self.partial.shrink_to(want);
        }
        self.partial.extend_from_slice(bytes);
    }

    /// What a message read means to the connection: a ping queues its pong (§5.5.2), a
    /// close its echo (§5.5.1) and ends the read side.
    fn received(&mut self, msg: &WsMessage) {
        match msg {
            WsMessage::Ping(payload) if !self.close_queued && !self.write_failed => {
                self.queue(WsMessage::Pong(payload.clone()));
            }
            WsMessage::Close(frame) => {
                self.read = ReadSide::Done;
                if !self.close_queued {
                    let echo = frame.as_ref().map(|f| CloseFrame {
                        code: f.code,
                        reason: Utf8Bytes::from_static(""),
                    });
                    self.queue(WsMessage::Close(echo));
                }
            }
            _ => {}
        }
    }
}

impl<T: AsyncWrite + Unpin> WsStream<T> {
    /// Writes everything queued: `Ready(Ok)` once `out` is empty (and released).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write failed",
            )));
        }
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            let mut skip = self.written;
            'frames: for chunk in &self.out {
                for part in [chunk.header.as_bytes(), &chunk.payload[..]] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    if n == MAX_SLICES {
                        break 'frames;
                    }
                    slices[n] = IoSlice::new(&part[skip..]);
                    skip = 0;
                    n += 1;
                }
            }
            // Every frame has a header: something is left to write.
            debug_assert!(n > 0);
            let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(r) => r,
            };
            match written {
                Ok(w) => self.advance(w),
                Err(e) => {
                    self.write_failed = true;
                    return Poll::Ready(Err(e));
                }
            }
        }
        // Released: an idle connection holds no write buffer.
        self.out = VecDeque::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for WsStream<T> {
    type Item = Result<WsMessage, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.read == ReadSide::Done {
            return Poll::Ready(None);
        }
        // Pongs and a close echo go out while the session only reads. Past the high-water
        // mark nothing more is read until they did: a client that pings and never reads
        // cannot grow the queue. A write that failed ends the reads too.
        if !this.out.is_empty() {
            match this.poll_write_out(cx) {
                Poll::Pending if this.queued >= WRITE_HIGH_WATER => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.read = ReadSide::Done;
                    return Poll::Ready(Some(Err(ReadError::Io(e))));
                }
                _ => {}
            }
        }
        loop {
            if !this.pending().is_empty() {
                match this.decoder.decode(&this.partial[this.start..]) {
                    Err(e) => return Poll::Ready(Some(Err(this.failed(e)))),
                    Ok(Decoded::Incomplete) => {}
                    Ok(Decoded::Fragment(n)) => {
                        this.consume(n);
                        continue;
                    }
                    Ok(Decoded::Message(n, msg)) => {
                        this.consume(n);
                        return Poll::Ready(Some(Ok(this.deliver(msg, cx))));
                    }
                }
            }
            let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut buf);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.read = ReadSide::Done;
                    return Poll::Ready(Some(Err(ReadError::Io(e))));
                }
                Poll::Ready(Ok(())) => {}
            }
            let got = read.filled();
            if got.is_empty() {
                // The client went away (mid-frame or not): nothing more to read.
                this.read = ReadSide::Done;
                return Poll::Ready(None);
            }
            if !this.pending().is_empty() {
                this.append(got);
                continue;
            }
            // Between frames (the usual case): decode straight from the stack, and keep
            // only a tail that is not a whole frame.
            let mut pos = 0;
            while pos < got.len() {
                match this.decoder.decode(&got[pos..]) {
                    Err(e) => return Poll::Ready(Some(Err(this.failed(e)))),
                    Ok(Decoded::Incomplete) => break,
                    Ok(Decoded::Fragment(n)) => pos += n,
                    Ok(Decoded::Message(n, msg)) => {
                        this.append(&got[pos + n..]);
                        return Poll::Ready(Some(Ok(this.deliver(msg, cx))));
                    }
                }
            }
            this.append(&got[pos..]);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> WsStream<T> {
    /// A message read: its effect on the connection, then the message.
    fn deliver(&mut self, msg: WsMessage, cx: &mut Context<'_>) -> WsMessage {
        self.received(&msg);
        if !self.out.is_empty() {
            let _ = self.poll_write_out(cx);
        }
        msg
    }

    /// The framing failed: the read side ends.
    fn failed(&mut self, e: WireError) -> ReadError {
        self.read = ReadSide::Done;
        self.partial = Vec::new();
        self.start = 0;
        ReadError::Wire(e)
    }
}

impl<T: AsyncWrite + Unpin> Sink<WsMessage> for WsStream<T> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.queued >= WRITE_HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, msg: WsMessage) -> io::Result<()> {
        let this = self.get_mut();
        if this.close_queued || this.write_failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WebSocket is closing",
            ));
        }
        this.queue(msg);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::io::DuplexStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message as TMessage;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame as TCloseFrame, Role};

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// A server `WsStream` and a tungstenite client over an in-memory pipe of `pipe` bytes
    /// each way.
    async fn pair(
        pipe: usize,
        max: usize,
    ) -> (WsStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (server, client) = tokio::io::duplex(pipe);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (WsStream::new(server, max), client)
    }

    async fn next<S: Stream + Unpin>(s: &mut S) -> S::Item {
        tokio::time::timeout(WAIT, s.next())
            .await
            .expect("in time")
            .expect("not ended")
    }

    fn holds_no_buffer<T>(ws: &WsStream<T>) -> bool {
        ws.partial.capacity() == 0 && ws.out.capacity() == 0
    }

    #[tokio::test]
    async fn text_goes_both_ways_and_an_idle_socket_holds_no_buffer() {
        let (mut server, mut client) = pair(64 * 1024, 1 << 20).await;
        client.send(TMessage::text("hello")).await.unwrap();
        match next(&mut server).await.unwrap() {
            WsMessage::Text(t) => assert_eq!(t.as_str(), "hello"),
            other => panic!("{other:?}"),
        }
        // A batch of events, fed and flushed once, arrives whole and in order.
        for i in 0..100 {
            server
                .feed(WsMessage::text(format!("event {i}")))
                .await
                .unwrap();
        }
        server.flush().await.unwrap();
        for i in 0..100 {
            assert_eq!(
                next(&mut client).await.unwrap(),
                TMessage::text(format!("event {i}"))
            );
        }
        assert!(holds_no_buffer(&server));
    }

    #[tokio::test]
    async fn a_slow_pipe_gets_every_byte_through_partial_writes() {
        // 7 bytes at a time: writes stop inside headers and payloads.
        let (mut server, mut client) = pair(7, 1 << 20).await;
        let sizes = [0usize, 1, 125, 126, 300, 65_535, 65_536, 70_000];
        let writer = tokio::spawn(async move {
            for n in sizes {
                server
                    .feed(WsMessage::binary(vec![n as u8; n]))
                    .await
                    .unwrap();
            }
            server.flush().await.unwrap();
            server
        });
        for n in sizes {
            assert_eq!(
                next(&mut client).await.unwrap(),
                TMessage::binary(vec![n as u8; n])
            );
        }
        let server = writer.await.unwrap();
        assert!(holds_no_buffer(&server));
    }

    #[tokio::test]
    async fn a_message_larger_than_a_read_is_assembled_then_released() {
        let (mut server, mut client) = pair(1000, 1 << 20).await;
        let big = "x".repeat(200_000);
        let sent = big.clone();
        let sender = tokio::spawn(async move {
            client.send(TMessage::text(sent)).await.unwrap();
            client.send(TMessage::text("after")).await.unwrap();
            client
        });
        assert_eq!(next(&mut server).await.unwrap(), WsMessage::text(big));
        assert_eq!(next(&mut server).await.unwrap(), WsMessage::text("after"));
        let _client = sender.await.unwrap();
        assert!(holds_no_buffer(&server));
    }

    #[tokio::test]
    async fn a_large_frame_s_room_is_given_back_when_a_small_tail_stays() {
        let (mut server, mut raw) = tokio::io::duplex(1 << 20).map_server();
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&300_000u64.to_be_bytes());
        frame.extend_from_slice(&mask);
        frame.extend(std::iter::repeat_n(0u8, 300_000));
        // One byte of the next frame follows.
        frame.push(0x81);
        tokio::io::AsyncWriteExt::write_all(&mut raw, &frame)
            .await
            .unwrap();
        assert!(
            matches!(next(&mut server).await.unwrap(), WsMessage::Binary(b) if b.len() == 300_000)
        );
        // The byte is read with the next read (the pipe has nothing more yet).
        assert!(
            tokio::time::timeout(Duration::from_millis(100), server.next())
                .await
                .is_err()
        );
        assert!(
            server.partial.capacity() <= 2 * READ_CHUNK,
            "{} bytes kept for one",
            server.partial.capacity()
        );
    }

    #[tokio::test]
    async fn several_frames_in_one_read_come_out_one_by_one() {
        let (mut server, mut client) = pair(64 * 1024, 1 << 20).await;
        for i in 0..50 {
            client
                .feed(TMessage::text(format!("op {i}")))
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        for i in 0..50 {
            assert_eq!(
                next(&mut server).await.unwrap(),
                WsMessage::text(format!("op {i}"))
            );
        }
        assert!(holds_no_buffer(&server));
    }

    #[tokio::test]
    async fn a_ping_is_answered_while_the_server_only_reads() {
        let (mut server, mut client) = pair(64 * 1024, 1 << 20).await;
        client
            .send(TMessage::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        client.send(TMessage::text("then this")).await.unwrap();
        assert!(matches!(
            next(&mut server).await.unwrap(),
            WsMessage::Ping(_)
        ));
        assert_eq!(
            next(&mut server).await.unwrap(),
            WsMessage::text("then this")
        );
        assert_eq!(
            next(&mut client).await.unwrap(),
            TMessage::Pong(Bytes::from_static(b"are you there"))
        );
    }

    #[tokio::test]
    async fn a_client_that_pings_and_never_reads_stops_being_read() {
        let (mut server, client) = tokio::io::duplex(4096).map_server();
        let (_read, mut write) = tokio::io::split(client);
        let mask = [9u8, 8, 7, 6];
        let mut ping = vec![0x89, 0x80 | 125];
        ping.extend_from_slice(&mask);
        ping.extend(std::iter::repeat_n(0u8, 125));
        let pinger = tokio::spawn(async move {
            // Far more pongs than the high-water mark, if they were all read.
            for _ in 0..10_000 {
                if tokio::io::AsyncWriteExt::write_all(&mut write, &ping)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut pings = 0;
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(300), server.next()).await
        {
            assert!(matches!(m.unwrap(), WsMessage::Ping(_)));
            pings += 1;
        }
        assert!(pings < 10_000, "every ping was read: {pings}");
        assert!(
            server.queued < WRITE_HIGH_WATER + 200,
            "{} bytes of pongs queued",
            server.queued
        );
        pinger.abort();
    }

    #[tokio::test]
    async fn a_client_close_is_echoed_and_ends_the_reads() {
        let (mut server, mut client) = pair(64 * 1024, 1 << 20).await;
        client
            .send(TMessage::Close(Some(TCloseFrame {
                code: 1000u16.into(),
                reason: "bye".into(),
            })))
            .await
            .unwrap();
        match next(&mut server).await.unwrap() {
            WsMessage::Close(Some(f)) => assert_eq!((f.code, f.reason.as_str()), (1000, "bye")),
            other => panic!("{other:?}"),
        }
        // The echo went out while reading; the client's close handshake completes.
        match next(&mut client).await.unwrap() {
            TMessage::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
            other => panic!("{other:?}"),
        }
        assert!(
            tokio::time::timeout(WAIT, server.next())
                .await
                .unwrap()
                .is_none()
        );
        // Nothing may follow the close.
        assert!(server.send(WsMessage::text("late")).await.is_err());
    }

    #[tokio::test]
    async fn a_message_over_the_limit_fails_the_read_with_1009_before_its_payload() {
        let (mut server, mut client) = pair(64 * 1024, 1000).await;
        client.send(TMessage::text("y".repeat(999))).await.unwrap();
        assert!(matches!(
            next(&mut server).await.unwrap(),
            WsMessage::Text(_)
        ));
        // Only the header reaches the server before it refuses: the pipe holds 64 KiB,
        // the frame is larger, and the client's write completes only as the server reads.
        let sender = tokio::spawn(async move {
            let _ = client.send(TMessage::text("y".repeat(1001))).await;
        });
        let e = next(&mut server).await.unwrap_err();
        assert_eq!(e.close_reason(), (close::TOO_LARGE, "frame too large"));
        assert!(
            server.partial.capacity() < 8 * 1024,
            "the payload was not buffered"
        );
        assert!(
            tokio::time::timeout(WAIT, server.next())
                .await
                .unwrap()
                .is_none()
        );
        drop(server);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn bad_framing_and_bad_text_get_their_close_codes() {
        // An unmasked client frame (a server-style frame): 1002.
        let (mut server, mut raw) = tokio::io::duplex(1024).map_server();
        tokio::io::AsyncWriteExt::write_all(&mut raw, &[0x81, 0x02, b'h', b'i'])
            .await
            .unwrap();
        let e = next(&mut server).await.unwrap_err();
        assert_eq!(e.close_reason().0, close::PROTOCOL_ERROR);
        // Text that is not UTF-8: 1007.
        let (mut server, mut raw) = tokio::io::duplex(1024).map_server();
        let mask = [1u8, 2, 3, 4];
        let payload: Vec<u8> = [0xffu8, 0xfe]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        let mut frame = vec![0x81, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend_from_slice(&payload);
        tokio::io::AsyncWriteExt::write_all(&mut raw, &frame)
            .await
            .unwrap();
        let e = next(&mut server).await.unwrap_err();
        assert_eq!(e.close_reason().0, 1007);
    }

    /// A pipe's first end as a server socket, the second as raw bytes.
    trait MapServer {
        fn map_server(self) -> (WsStream<DuplexStream>, DuplexStream);
    }

    impl MapServer for (DuplexStream, DuplexStream) {
        fn map_server(self) -> (WsStream<DuplexStream>, DuplexStream) {
            (WsStream::new(self.0, 1 << 20), self.1)
        }
    }
}
