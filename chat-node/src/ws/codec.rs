//! The server side of RFC 6455 WebSocket framing as a pure state machine: no I/O, no
//! read buffer of its own.
//!
//! ```text
//!   read into a buffer ─► Decoder::decode(&buf[pos..])
//!     Incomplete        keep buf[pos..], read more (nothing consumed)
//!     Fragment(n)       pos += n (a non-final fragment, held by the decoder)
//!     Message(n, msg)   pos += n, hand msg on
//!     Err(e)            fail the connection with e.close_code() (§7.1.7)
//!
//!   Message ─► encode ─► (OpCode, payload) ─► Header::new(opcode, payload.len()) ─► write
//!              header, then payload
//! ```
//!
//! The decoder reads client frames (§5.2), which must be masked (§5.1, §5.3); it holds a
//! buffer only while a fragmented message (§5.4) is in progress. Every refusal that the
//! header alone decides (reserved bits, opcode, mask bit, lengths, the message limit) is
//! made as soon as the bytes that decide it are present, so the caller never buffers a
//! frame that will be refused. The server writes unfragmented, unmasked frames.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::{BufMut as _, Bytes, BytesMut};
use parley_protocol::ws::close;

/// Close code 1007 (§7.4.1): data inconsistent with the message type (UTF-8 here).
const INVALID_PAYLOAD: u16 = 1007;
/// The most payload bytes a control frame may carry (§5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Bit 7 of byte 0: FIN (§5.2).
const FIN: u8 = 0x80;
/// Bits 6–4 of byte 0: RSV1–RSV3 (§5.2).
const RSV: u8 = 0x70;
/// Bits 3–0 of byte 0: the opcode (§5.2).
const OPCODE: u8 = 0x0F;
/// Bit 7 of byte 1: MASK (§5.2).
const MASK: u8 = 0x80;
/// Bits 6–0 of byte 1: the 7-bit payload length (§5.2).
const LEN7: u8 = 0x7F;
/// The 7-bit length meaning "the next 2 bytes are the length" (§5.2).
const LEN_16: u8 = 126;
/// The 7-bit length meaning "the next 8 bytes are the length" (§5.2).
const LEN_64: u8 = 127;

/// Opcodes, RFC 6455 §5.2. 0x3–0x7 and 0xB–0xF are reserved and have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpCode {
    /// 0x0: a later fragment of a fragmented data message (§5.4).
    Continuation = 0x0,
    /// 0x1: a text message, UTF-8 (§5.6).
    Text = 0x1,
    /// 0x2: a binary message (§5.6).
    Binary = 0x2,
    /// 0x8: Close, payload empty or a 2-byte big-endian code then a UTF-8 reason (§5.5.1).
    Close = 0x8,
    /// 0x9: Ping, payload ≤ 125 bytes (§5.5.2).
    Ping = 0x9,
    /// 0xA: Pong, payload ≤ 125 bytes (§5.5.3).
    Pong = 0xA,
}

impl OpCode {
    /// The opcode of the low 4 bits `bits` (§5.2); `None` for a reserved one (0x3–0x7,
    /// 0xB–0xF).
    fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// Whether this is a control opcode (most significant bit of the 4 set, §5.5).
    fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

/// Why the client's frames cannot be read; each has a close code (§7.4.1) to fail the
/// connection with (§7.1.7). After an error the decoder is not to be used again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum WireError {
    /// A frame breaks RFC 6455 framing (§5); the text says which rule. Close code 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A data message (all its fragments together) over the decoder's `max_message`
    /// bytes of payload. Close code 1009.
    #[error("message too large")]
    TooLarge,
    /// A text message or a close reason that is not UTF-8 (§5.6, §5.5.1, §8.1). Close
    /// code 1007.
    #[error("invalid UTF-8")]
    InvalidUtf8,
}

impl WireError {
    /// The close code to fail the connection with (§7.4.1): 1002 for
    /// [`Protocol`](Self::Protocol), 1009 for [`TooLarge`](Self::TooLarge), 1007 for
    /// [`InvalidUtf8`](Self::InvalidUtf8).
    pub(super) fn close_code(&self) -> u16 {
        match self {
            Self::Protocol(_) => close::PROTOCOL_ERROR,
            Self::TooLarge => close::TOO_LARGE,
            Self::InvalidUtf8 => INVALID_PAYLOAD,
        }
    }
}

/// What [`Decoder::decode`] found at the start of the buffer.
#[derive(Debug)]
pub(super) enum Decoded {
    /// Only part of a frame: keep the bytes, read more. Nothing consumed. Never returned
    /// for a frame whose header (as far as present) is already refused.
    Incomplete,
    /// A frame of this many bytes (header and payload) was consumed; it completes no
    /// message (a non-final fragment, §5.4). Always ≥ 6.
    Fragment(usize),
    /// A frame of this many bytes (header and payload) was consumed and completes this
    /// message: a data message (its last fragment, or an unfragmented frame) or a control
    /// frame. Always ≥ 6.
    Message(usize, Message),
}

/// Reads client frames (RFC 6455 §5) one at a time out of the caller's buffer.
///
/// Holds the limit and, only while a fragmented data message is in progress (§5.4), its
/// opcode and the unmasked payload received so far; between messages it holds no buffer.
#[derive(Debug)]
pub(super) struct Decoder {
    /// The most payload bytes one data message (all its fragments together) may carry.
    max_message: usize,
    /// The fragmented message in progress: whether it is text, and its payload so far
    /// (unmasked; for text, UTF-8 so far except perhaps an unfinished code point).
    partial: Option<(bool, Vec<u8>)>,
}

/// The parsed header of one client frame (§5.2).
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    /// FIN: the last frame of its message.
    fin: bool,
    /// The frame's opcode.
    opcode: OpCode,
    /// The masking key (§5.3).
    key: [u8; 4],
    /// Bytes of header: 6, 8 or 14 (2, then 0, 2 or 8 of extended length, then 4 of key).
    header_len: usize,
    /// Bytes of payload, within the limit (control frames ≤ 125).
    payload_len: usize,
}

impl Decoder {
    /// A decoder with no message in progress. `max_message`: the most payload bytes one
    /// message (all its fragments together) may carry; a data frame that would exceed it
    /// is refused with [`WireError::TooLarge`] as soon as its length is known. Control
    /// frames are bounded by 125 bytes (§5.5) instead.
    pub(super) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
        }
    }

    /// Decodes the frame at the start of `buf` (client→server, so it must be masked,
    /// §5.1). Returns [`Decoded::Incomplete`] while the frame is not all there (nothing
    /// consumed), else the frame's length in bytes and what it completes. Bytes past the
    /// frame are not looked at.
    ///
    /// Errors: [`WireError::Protocol`] for RSV bits set (§5.2), a reserved opcode (§5.2),
    /// an unmasked frame (§5.1), a 64-bit length with its most significant bit set
    /// (§5.2), a fragmented or over-125-byte control frame (§5.5), a continuation with no
    /// message in progress or a new data frame inside one (§5.4), a 1-byte close payload
    /// or a close code not valid to receive (§5.5.1, §7.4); [`WireError::TooLarge`] for a
    /// data frame that takes its message past `max_message` (§10.4), decided from the
    /// header before the payload arrives; [`WireError::InvalidUtf8`] for text that is not
    /// UTF-8 (§5.6, §8.1: checked per fragment, split code points allowed) or a close
    /// reason that is not (§5.5.1).
    pub(super) fn decode(&mut self, buf: &[u8]) -> Result<Decoded, WireError> {
        let Some(head) = self.parse_head(buf)? else {
            return Ok(Decoded::Incomplete);
        };
        let end = head.header_len + head.payload_len;
        let Some(payload) = buf.get(head.header_len..end) else {
            // A close code is refused as soon as its 2 bytes are present.
            if head.opcode == OpCode::Close
                && let Some(&[hi, lo]) = buf.get(head.header_len..head.header_len + 2)
            {
                check_close_code(u16::from_be_bytes([hi ^ head.key[0], lo ^ head.key[1]]))?;
            }
            return Ok(Decoded::Incomplete);
        };
        let message = match head.opcode {
            OpCode::Continuation => {
                let Some((text, held)) = self.partial.as_mut() else {
                    return Err(WireError::Protocol("continuation without a message"));
                };
                let from = held.len();
                held.extend_from_slice(payload);
                unmask(&mut held[from..], head.key);
                if !head.fin {
                    if *text {
                        check_utf8_prefix(held, from)?;
                    }
                    return Ok(Decoded::Fragment(end));
                }
                let Some((text, data)) = self.partial.take() else {
                    return Err(WireError::Protocol("continuation without a message"));
                };
                data_message(text, data)?
            }
            OpCode::Text | OpCode::Binary => {
                let text = head.opcode == OpCode::Text;
                let data = unmasked(payload, head.key);
                if !head.fin {
                    if text {
                        check_utf8_prefix(&data, 0)?;
                    }
                    self.partial = Some((text, data));
                    return Ok(Decoded::Fragment(end));
                }
                data_message(text, data)?
            }
            OpCode::Ping => Message::Ping(Bytes::from(unmasked(payload, head.key))),
            OpCode::Pong => Message::Pong(Bytes::from(unmasked(payload, head.key))),
            OpCode::Close => close_message(unmasked(payload, head.key))?,
        };
        Ok(Decoded::Message(end, message))
    }

    /// Whether a fragmented message is in progress (its first frame read, its last not).
    #[cfg(test)]
    fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Parses and checks the header at the start of `buf` (§5.2): `None` while it is not
    /// all there. Each rule is checked as soon as the bytes it needs are present, so a
    /// refused header is refused however little of it has arrived.
    fn parse_head(&self, buf: &[u8]) -> Result<Option<FrameHead>, WireError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        if b0 & RSV != 0 {
            return Err(WireError::Protocol("reserved bit set"));
        }
        let opcode =
            OpCode::from_bits(b0 & OPCODE).ok_or(WireError::Protocol("reserved opcode"))?;
        let fin = b0 & FIN != 0;
        match opcode {
            _ if opcode.is_control() && !fin => {
                return Err(WireError::Protocol("fragmented control frame"));
            }
            OpCode::Continuation if self.partial.is_none() => {
                return Err(WireError::Protocol("continuation without a message"));
            }
            OpCode::Text | OpCode::Binary if self.partial.is_some() => {
                return Err(WireError::Protocol(
                    "data frame inside a fragmented message",
                ));
            }
            _ => {}
        }

        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        if b1 & MASK == 0 {
            return Err(WireError::Protocol("unmasked frame"));
        }
        let len7 = b1 & LEN7;
        if opcode.is_control() {
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(WireError::Protocol("control frame over 125 bytes"));
            }
            if opcode == OpCode::Close && len7 == 1 {
                return Err(WireError::Protocol("close payload of 1 byte"));
            }
        }

        // The length, or while its extended bytes are partly there, the least it can be
        // (the missing low bytes taken as 0).
        let ext = match len7 {
            LEN_16 => 2,
            LEN_64 => 8,
            _ => 0,
        };
        let present = &buf[2..buf.len().min(2 + ext)];
        if ext == 8 && present.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(WireError::Protocol(
                "payload length with its most significant bit set",
            ));
        }
        let len = if ext == 0 {
            u64::from(len7)
        } else {
            let mut be = [0u8; 8];
            be[8 - ext..8 - ext + present.len()].copy_from_slice(present);
            u64::from_be_bytes(be)
        };
        if !opcode.is_control() {
            let held = self.partial.as_ref().map_or(0, |(_, data)| data.len());
            if (held as u64).saturating_add(len) > self.max_message as u64 {
                return Err(WireError::TooLarge);
            }
        }
        if present.len() < ext {
            return Ok(None);
        }

        let header_len = 2 + ext + 4;
        let Some(&[k0, k1, k2, k3]) = buf.get(2 + ext..header_len) else {
            return Ok(None);
        };
        let payload_len = usize::try_from(len).map_err(|_| WireError::TooLarge)?;
        Ok(Some(FrameHead {
            fin,
            opcode,
            key: [k0, k1, k2, k3],
            header_len,
            payload_len,
        }))
    }
}

/// `payload` unmasked with `key` (§5.3) into a fresh vector: its one allocation.
fn unmasked(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut data = payload.to_vec();
    unmask(&mut data, key);
    data
}

/// XORs `data` in place with `key` repeated (§5.3: octet i with key octet i mod 4);
/// `data` must start at the first payload byte of its frame. 8 bytes at a time so the
/// compiler can vectorise it.
fn unmask(data: &mut [u8], key: [u8; 4]) {
    let [k0, k1, k2, k3] = key;
    let wide = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so at key octet 0.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Checks that `data` can still begin a UTF-8 text (§8.1: fail as soon as it cannot):
/// valid except perhaps an unfinished code point at its end. `data[..from]` was checked
/// already, so only the bytes from the code point `from` may be inside of are read again.
fn check_utf8_prefix(data: &[u8], from: usize) -> Result<(), WireError> {
    // An unfinished code point has at most 3 bytes; its first is not 0b10xx_xxxx.
    let start = (from.saturating_sub(3)..from)
        .rev()
        .find(|&i| data[i] & 0xC0 != 0x80)
        .unwrap_or(from);
    match std::str::from_utf8(&data[start..]) {
        Err(e) if e.error_len().is_some() => Err(WireError::InvalidUtf8),
        _ => Ok(()),
    }
}

/// The complete data message of payload `data`: `Message::Text` if `text` (whole-message
/// UTF-8 check, §5.6), else `Message::Binary`. Reuses `data`'s allocation.
fn data_message(text: bool, data: Vec<u8>) -> Result<Message, WireError> {
    if text {
        let text = String::from_utf8(data).map_err(|_| WireError::InvalidUtf8)?;
        Ok(Message::Text(Utf8Bytes::from(text)))
    } else {
        Ok(Message::Binary(Bytes::from(data)))
    }
}

/// The close message of unmasked payload `data` (§5.5.1): empty → `Close(None)`; else a
/// big-endian code valid to receive (§7.4) and a UTF-8 reason → `Close(Some(_))`.
fn close_message(data: Vec<u8>) -> Result<Message, WireError> {
    let code = match data[..] {
        [] => return Ok(Message::Close(None)),
        [_] => return Err(WireError::Protocol("close payload of 1 byte")),
        [hi, lo, ..] => u16::from_be_bytes([hi, lo]),
    };
    check_close_code(code)?;
    let reason =
        Utf8Bytes::try_from(Bytes::from(data).slice(2..)).map_err(|_| WireError::InvalidUtf8)?;
    Ok(Message::Close(Some(CloseFrame { code, reason })))
}

/// Checks that a close code received from the client is valid (§7.4.1, §7.4.2): 1000–1003,
/// 1007–1011 (defined by §7.4.1), 1012–1014 (registered in IANA's WebSocket Close Code
/// Number Registry since: service restart, try again later, bad gateway), 3000–4999
/// (registered, and private use). 0–999, 1004–1006 and 1015 (reserved, or never sent in a
/// frame), 1016–2999 (reserved for this and future RFCs) and ≥ 5000 are refused with
/// [`WireError::Protocol`].
fn check_close_code(code: u16) -> Result<(), WireError> {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => Ok(()),
        _ => Err(WireError::Protocol("invalid close code")),
    }
}

/// The header of one server frame (§5.2): FIN set, RSV 0, unmasked (§5.1: a server must
/// not mask), 2, 4 or 10 bytes: the payload length in 7 bits below 126, as 126 then 2
/// bytes big-endian up to 65535, else as 127 then 8 bytes big-endian (the minimal form).
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    /// The header's bytes; only the first `len` are used.
    bytes: [u8; 10],
    /// How many of `bytes` are the header: 2, 4 or 10.
    len: u8,
}

impl Header {
    /// The header of an unfragmented frame of `opcode` carrying `payload_len` bytes. A
    /// control frame's payload must be ≤ 125 bytes (§5.5; [`encode`] cuts it so).
    pub(super) fn new(opcode: OpCode, payload_len: usize) -> Self {
        debug_assert!(
            !opcode.is_control() || payload_len <= MAX_CONTROL_PAYLOAD,
            "control frame over 125 bytes"
        );
        let mut bytes = [0u8; 10];
        bytes[0] = FIN | opcode as u8;
        let len = if let Ok(short) = u8::try_from(payload_len)
            && short < LEN_16
        {
            bytes[1] = short;
            2
        } else if let Ok(medium) = u16::try_from(payload_len) {
            bytes[1] = LEN_16;
            bytes[2..4].copy_from_slice(&medium.to_be_bytes());
            4
        } else {
            bytes[1] = LEN_64;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    /// The header's bytes, to be written just before the payload: 2, 4 or 10 of them.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A message as the server writes it: its opcode and payload (no copy for
/// Text/Binary/Ping/Pong: the `Bytes` inside are reused). `Close(Some(frame))` → code
/// big-endian then the reason's UTF-8 (§5.5.1); `Close(None)` → empty payload. A
/// Close/Ping/Pong payload over 125 bytes (§5.5) is cut to 125 (for a close reason, at a
/// char boundary, so to at most 123 bytes of reason).
pub(super) fn encode(msg: Message) -> (OpCode, Bytes) {
    match msg {
        Message::Text(text) => (OpCode::Text, Bytes::from(text)),
        Message::Binary(data) => (OpCode::Binary, data),
        Message::Ping(mut data) => {
            data.truncate(MAX_CONTROL_PAYLOAD);
            (OpCode::Ping, data)
        }
        Message::Pong(mut data) => {
            data.truncate(MAX_CONTROL_PAYLOAD);
            (OpCode::Pong, data)
        }
        Message::Close(None) => (OpCode::Close, Bytes::new()),
        Message::Close(Some(CloseFrame { code, reason })) => {
            let reason = reason.as_str();
            let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            let mut payload = BytesMut::with_capacity(2 + end);
            payload.put_u16(code);
            payload.put_slice(&reason.as_bytes()[..end]);
            (OpCode::Close, payload.freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use proptest::prelude::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{
        CloseCode as TsCloseCode, Data, OpCode as TsOpCode,
    };
    use tokio_tungstenite::tungstenite::protocol::frame::{
        CloseFrame as TsCloseFrame, Frame, FrameHeader,
    };

    use super::*;

    /// The masking key of the examples in RFC 6455 §5.7.
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    /// A limit no test frame reaches unless it means to.
    const LIMIT: usize = 1 << 20;

    /// A client frame written by hand (§5.2): FIN `fin`, opcode bits `opcode`, the minimal
    /// length encoding, masked with `key` (§5.3).
    fn client_frame_with(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if let Ok(short) = u8::try_from(len)
            && short < 126
        {
            out.push(0x80 | short);
        } else if let Ok(medium) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&medium.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// A client frame of `opcode` masked with [`KEY`].
    fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        client_frame_with(fin, opcode as u8, payload, KEY)
    }

    /// `frame` as tungstenite writes it from a client: masked with `key`.
    fn ts_client_frame(mut frame: Frame, key: [u8; 4]) -> Vec<u8> {
        frame.header_mut().mask = Some(key);
        let mut out = Vec::new();
        frame
            .format(&mut out)
            .expect("tungstenite formats the frame");
        out
    }

    /// `msg` as tungstenite's own (unmasked, unfragmented) frame.
    fn ts_server_frame(msg: &Message) -> Frame {
        match msg.clone() {
            Message::Text(text) => {
                Frame::message(Bytes::from(text), TsOpCode::Data(Data::Text), true)
            }
            Message::Binary(data) => Frame::message(data, TsOpCode::Data(Data::Binary), true),
            Message::Ping(data) => Frame::ping(data),
            Message::Pong(data) => Frame::pong(data),
            Message::Close(None) => Frame::close(None),
            Message::Close(Some(CloseFrame { code, reason })) => Frame::close(Some(TsCloseFrame {
                code: TsCloseCode::from(code),
                reason: reason.as_str().into(),
            })),
        }
    }

    /// Decodes a frame that must complete a message: the bytes consumed and the message.
    fn message(decoder: &mut Decoder, buf: &[u8]) -> (usize, Message) {
        match decoder.decode(buf) {
            Ok(Decoded::Message(n, msg)) => (n, msg),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Decodes a frame that must be a non-final fragment: the bytes consumed.
    fn fragment(decoder: &mut Decoder, buf: &[u8]) -> usize {
        match decoder.decode(buf) {
            Ok(Decoded::Fragment(n)) => n,
            other => panic!("expected a fragment, got {other:?}"),
        }
    }

    /// The error `decoder` refuses `buf` with.
    fn refusal_in(decoder: &mut Decoder, buf: &[u8]) -> WireError {
        match decoder.decode(buf) {
            Err(e) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The error a fresh decoder refuses `buf` with.
    fn refusal(buf: &[u8]) -> WireError {
        refusal_in(&mut Decoder::new(LIMIT), buf)
    }

    /// Whether `decoder` takes `buf` as the start of a frame still to come.
    fn incomplete(decoder: &mut Decoder, buf: &[u8]) -> bool {
        matches!(decoder.decode(buf), Ok(Decoded::Incomplete))
    }

    /// Reads `stream` as the caller does: into a buffer, `reads` bytes at a time (cycled),
    /// decoding after each read and dropping what each frame consumed. The messages, in
    /// order; the buffer must end empty.
    fn read_all(
        decoder: &mut Decoder,
        stream: &[u8],
        reads: &[usize],
    ) -> Result<Vec<Message>, WireError> {
        let mut sizes = reads.iter().copied().cycle();
        let (mut buf, mut read, mut out) = (Vec::new(), 0, Vec::new());
        loop {
            match decoder.decode(&buf)? {
                Decoded::Incomplete if read == stream.len() => break,
                Decoded::Incomplete => {
                    let n = sizes.next().unwrap_or(1).clamp(1, stream.len() - read);
                    buf.extend_from_slice(&stream[read..read + n]);
                    read += n;
                }
                Decoded::Fragment(n) => {
                    buf.drain(..n);
                }
                Decoded::Message(n, msg) => {
                    buf.drain(..n);
                    out.push(msg);
                }
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        Ok(out)
    }

    /// `len` bytes of a repeating pattern.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// A close frame's payload: `code` big-endian, then `reason`.
    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        payload
    }

    #[test]
    fn rfc_examples() {
        // §5.7: a single-frame masked text message "Hello".
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(client_frame(true, OpCode::Text, b"Hello"), hello);
        let mut decoder = Decoder::new(LIMIT);
        assert_eq!(message(&mut decoder, &hello), (11, Message::text("Hello")));
        // §5.7: the unmasked examples are what a server writes; from a client, refused.
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(refusal(&unmasked), WireError::Protocol("unmasked frame"));
        assert_eq!(Header::new(OpCode::Text, 5).as_bytes(), &unmasked[..2]);
        assert_eq!(Header::new(OpCode::Ping, 5).as_bytes(), [0x89, 0x05]);
        assert_eq!(Header::new(OpCode::Pong, 5).as_bytes(), [0x8a, 0x05]);
        assert_eq!(
            Header::new(OpCode::Binary, 256).as_bytes(),
            [0x82, 0x7e, 0x01, 0x00]
        );
        assert_eq!(
            Header::new(OpCode::Binary, 65536).as_bytes(),
            [0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0, 0]
        );
        // §5.7: "Hel" then "lo", masked here.
        assert_eq!(
            fragment(&mut decoder, &client_frame(false, OpCode::Text, b"Hel")),
            9
        );
        assert!(decoder.in_message());
        let last = client_frame(true, OpCode::Continuation, b"lo");
        assert_eq!(message(&mut decoder, &last), (8, Message::text("Hello")));
        assert!(!decoder.in_message());
    }

    #[test]
    fn every_prefix_is_incomplete_and_the_whole_frame_a_message() {
        let cases = [
            (OpCode::Text, Vec::new(), Message::text("")),
            (
                OpCode::Text,
                "é".repeat(70).into_bytes(),
                Message::text("é".repeat(70)),
            ),
            (
                OpCode::Binary,
                pattern(300),
                Message::Binary(pattern(300).into()),
            ),
            (
                OpCode::Binary,
                pattern(70_000),
                Message::Binary(pattern(70_000).into()),
            ),
            (
                OpCode::Ping,
                b"ping".to_vec(),
                Message::Ping(Bytes::from_static(b"ping")),
            ),
            (OpCode::Pong, Vec::new(), Message::Pong(Bytes::new())),
            (OpCode::Close, Vec::new(), Message::Close(None)),
            (
                OpCode::Close,
                close_payload(1000, b"bye"),
                Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "bye".into(),
                })),
            ),
        ];
        for (opcode, payload, expected) in cases {
            let frame = client_frame(true, opcode, &payload);
            let mut decoder = Decoder::new(LIMIT);
            for cut in 0..frame.len() {
                assert!(
                    incomplete(&mut decoder, &frame[..cut]),
                    "{opcode:?} of {} bytes cut at {cut}",
                    payload.len()
                );
            }
            assert_eq!(message(&mut decoder, &frame), (frame.len(), expected));
        }

        // The frames of a fragmented message, and a control frame between them.
        let mut decoder = Decoder::new(LIMIT);
        let frames = [
            client_frame(false, OpCode::Text, "añ".as_bytes()),
            client_frame(true, OpCode::Ping, b"p"),
            client_frame(false, OpCode::Continuation, &[0xcc]),
            client_frame(true, OpCode::Continuation, &[0x83, b'z']),
        ];
        for (i, frame) in frames.iter().enumerate() {
            for cut in 0..frame.len() {
                assert!(
                    incomplete(&mut decoder, &frame[..cut]),
                    "frame {i} cut at {cut}"
                );
            }
            let consumed = match decoder.decode(frame) {
                Ok(Decoded::Fragment(n)) => n,
                Ok(Decoded::Message(n, msg)) => {
                    let expected = if i == 1 {
                        Message::Ping(Bytes::from_static(b"p"))
                    } else {
                        Message::text("añ̃z")
                    };
                    assert_eq!(msg, expected);
                    n
                }
                other => panic!("frame {i}: {other:?}"),
            };
            assert_eq!(consumed, frame.len());
        }
        assert!(!decoder.in_message());
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = client_frame(true, OpCode::Text, b"one");
        buf.extend(client_frame(true, OpCode::Binary, &[2; 200]));
        buf.push(0x81); // the first byte of a third
        let mut decoder = Decoder::new(LIMIT);
        let (first, msg) = message(&mut decoder, &buf);
        assert_eq!((first, msg), (2 + 4 + 3, Message::text("one")));
        let (second, msg) = message(&mut decoder, &buf[first..]);
        assert_eq!(
            (second, msg),
            (2 + 2 + 4 + 200, Message::Binary(vec![2; 200].into()))
        );
        assert!(incomplete(&mut decoder, &buf[first + second..]));
    }

    #[test]
    fn lengths_at_the_boundaries_decode() {
        for (len, header_len) in [(0, 6), (125, 6), (126, 8), (65535, 8), (65536, 14)] {
            let payload = pattern(len);
            let expected = Message::Binary(payload.clone().into());
            let ours = client_frame(true, OpCode::Binary, &payload);
            assert_eq!(ours.len(), header_len + len);
            let theirs = ts_client_frame(
                Frame::message(payload.clone(), TsOpCode::Data(Data::Binary), true),
                [1, 2, 3, 4],
            );
            assert_eq!(theirs.len(), header_len + len);
            for frame in [ours, theirs] {
                let mut decoder = Decoder::new(LIMIT);
                assert!(incomplete(&mut decoder, &frame[..frame.len() - 1]), "{len}");
                assert_eq!(
                    message(&mut decoder, &frame),
                    (frame.len(), expected.clone())
                );
            }
        }
    }

    #[test]
    fn header_lengths_at_the_boundaries() {
        for (len, size, len7) in [
            (0, 2, 0),
            (125, 2, 125),
            (126, 4, 126),
            (65535, 4, 126),
            (65536, 10, 127),
        ] {
            let header = Header::new(OpCode::Binary, len);
            let bytes = header.as_bytes();
            assert_eq!(bytes.len(), size, "{len}");
            assert_eq!(bytes[..2], [0x82, len7], "{len}");
            let mut cursor = Cursor::new(bytes);
            let (parsed, parsed_len) = FrameHeader::parse(&mut cursor)
                .expect("tungstenite reads the header")
                .expect("the header is complete");
            assert_eq!(parsed_len, len as u64);
            assert_eq!(cursor.position(), size as u64);
            assert!(parsed.is_final && !parsed.rsv1 && !parsed.rsv2 && !parsed.rsv3);
            assert_eq!(parsed.mask, None);
            assert_eq!(parsed.opcode, TsOpCode::Data(Data::Binary));
            let mut theirs = Vec::new();
            FrameHeader {
                opcode: TsOpCode::Data(Data::Binary),
                ..FrameHeader::default()
            }
            .format(len as u64, &mut theirs)
            .expect("tungstenite formats the header");
            assert_eq!(theirs, bytes, "{len}");
        }
    }

    #[test]
    fn server_frames_parse_with_tungstenite() {
        let messages = [
            Message::text("héllo"),
            Message::Binary(pattern(300).into()),
            Message::Binary(pattern(70_000).into()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::new()),
            Message::Close(None),
            Message::Close(Some(CloseFrame {
                code: 4001,
                reason: "bad hello".into(),
            })),
        ];
        for msg in messages {
            let (opcode, payload) = encode(msg.clone());
            let mut wire = Header::new(opcode, payload.len()).as_bytes().to_vec();
            wire.extend_from_slice(&payload);

            let mut cursor = Cursor::new(&wire[..]);
            let (header, len) = FrameHeader::parse(&mut cursor)
                .expect("tungstenite reads the header")
                .expect("the header is complete");
            let theirs = ts_server_frame(&msg);
            assert_eq!(&header, theirs.header(), "{msg:?}");
            let start = usize::try_from(cursor.position()).expect("small");
            assert_eq!(len, (wire.len() - start) as u64);
            assert_eq!(&wire[start..], theirs.payload(), "{msg:?}");

            let mut their_wire = Vec::new();
            theirs
                .format(&mut their_wire)
                .expect("tungstenite formats the frame");
            assert_eq!(wire, their_wire, "{msg:?}");
        }
    }

    #[test]
    fn tungstenite_client_frames_decode() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let cases = [
            (
                Frame::message("héllo wörld", TsOpCode::Data(Data::Text), true),
                Message::text("héllo wörld"),
            ),
            (
                Frame::message(vec![0u8, 255, 1], TsOpCode::Data(Data::Binary), true),
                Message::Binary(vec![0u8, 255, 1].into()),
            ),
            (
                Frame::ping("are you there"),
                Message::Ping(Bytes::from_static(b"are you there")),
            ),
            (Frame::pong(Vec::new()), Message::Pong(Bytes::new())),
            (Frame::close(None), Message::Close(None)),
            (
                Frame::close(Some(TsCloseFrame {
                    code: TsCloseCode::Away,
                    reason: "bye".into(),
                })),
                Message::Close(Some(CloseFrame {
                    code: 1001,
                    reason: "bye".into(),
                })),
            ),
        ];
        let mut decoder = Decoder::new(LIMIT);
        for (frame, expected) in cases {
            let wire = ts_client_frame(frame, key);
            assert_eq!(message(&mut decoder, &wire), (wire.len(), expected));
        }

        let parts = [
            (Data::Text, "frag", false),
            (Data::Continue, "mé", false),
            (Data::Continue, "nts", true),
        ];
        for (data, part, fin) in parts {
            let wire = ts_client_frame(Frame::message(part, TsOpCode::Data(data), fin), key);
            match decoder.decode(&wire) {
                Ok(Decoded::Fragment(n)) if !fin => assert_eq!(n, wire.len()),
                Ok(Decoded::Message(n, msg)) if fin => {
                    assert_eq!((n, msg), (wire.len(), Message::text("fragménts")));
                }
                other => panic!("{part}: {other:?}"),
            }
        }
    }

    #[test]
    fn fragmented_text_split_inside_a_code_point() {
        let text = "a€𝄞é"; // 1 + 3 + 4 + 2 bytes
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut decoder = Decoder::new(LIMIT);
            let first = client_frame(false, OpCode::Text, &bytes[..cut]);
            assert_eq!(fragment(&mut decoder, &first), first.len(), "cut at {cut}");
            let last = client_frame(true, OpCode::Continuation, &bytes[cut..]);
            assert_eq!(
                message(&mut decoder, &last),
                (last.len(), Message::text(text))
            );
        }

        // One byte a fragment.
        let mut decoder = Decoder::new(LIMIT);
        for (i, byte) in bytes.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            if i + 1 < bytes.len() {
                assert_eq!(
                    fragment(&mut decoder, &client_frame(false, opcode, &[*byte])),
                    7
                );
            } else {
                let last = client_frame(true, opcode, &[*byte]);
                assert_eq!(message(&mut decoder, &last), (7, Message::text(text)));
            }
        }
        assert!(decoder.partial.is_none());
    }

    #[test]
    fn control_frames_between_fragments() {
        let mut decoder = Decoder::new(LIMIT);
        fragment(&mut decoder, &client_frame(false, OpCode::Binary, b"ab"));
        let controls = [
            (OpCode::Ping, Message::Ping(Bytes::from_static(b"p"))),
            (OpCode::Pong, Message::Pong(Bytes::from_static(b"p"))),
        ];
        for (opcode, expected) in controls {
            assert_eq!(
                message(&mut decoder, &client_frame(true, opcode, b"p")).1,
                expected
            );
            assert!(decoder.in_message());
        }
        fragment(
            &mut decoder,
            &client_frame(false, OpCode::Continuation, b"cd"),
        );
        let close = client_frame(true, OpCode::Close, &[]);
        assert_eq!(message(&mut decoder, &close).1, Message::Close(None));
        assert!(decoder.in_message());
        let last = client_frame(true, OpCode::Continuation, b"e");
        assert_eq!(
            message(&mut decoder, &last).1,
            Message::Binary(Bytes::from_static(b"abcde"))
        );
        assert!(!decoder.in_message());
        assert!(decoder.partial.is_none());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_header() {
        let mut decoder = Decoder::new(100);
        let at_limit = client_frame(true, OpCode::Binary, &[0; 100]);
        assert_eq!(message(&mut decoder, &at_limit).0, at_limit.len());
        let over = client_frame(true, OpCode::Text, &[b'a'; 101]);
        assert_eq!(refusal_in(&mut decoder, &over[..2]), WireError::TooLarge);

        // A 16-bit length: refused once the bytes present put it over.
        let over = client_frame(true, OpCode::Binary, &[0; 1001]); // 126, 0x03, 0xe9
        let mut decoder = Decoder::new(1000);
        assert!(
            incomplete(&mut decoder, &over[..3]),
            "at least 0x0300 = 768 bytes"
        );
        assert_eq!(refusal_in(&mut decoder, &over[..4]), WireError::TooLarge);
        assert_eq!(
            refusal_in(&mut Decoder::new(700), &over[..3]),
            WireError::TooLarge
        );
        assert_eq!(WireError::TooLarge.close_code(), 1009);
    }

    #[test]
    fn fragments_summing_over_the_limit_are_refused() {
        let start = |decoder: &mut Decoder| {
            fragment(decoder, &client_frame(false, OpCode::Text, b"12345"));
            fragment(decoder, &client_frame(false, OpCode::Continuation, b"678"));
        };
        let mut decoder = Decoder::new(10);
        start(&mut decoder);
        // A control frame does not count towards the message.
        let ping = client_frame(true, OpCode::Ping, &[0; 125]);
        assert_eq!(message(&mut decoder, &ping).0, ping.len());
        let last = client_frame(true, OpCode::Continuation, b"90");
        assert_eq!(message(&mut decoder, &last).1, Message::text("1234567890"));

        let mut decoder = Decoder::new(10);
        start(&mut decoder);
        let over = client_frame(true, OpCode::Continuation, b"901");
        assert_eq!(refusal_in(&mut decoder, &over[..2]), WireError::TooLarge);
        let mut decoder = Decoder::new(10);
        start(&mut decoder);
        let over = client_frame(false, OpCode::Continuation, b"901");
        assert_eq!(refusal_in(&mut decoder, &over[..2]), WireError::TooLarge);
    }

    #[test]
    fn a_declared_huge_frame_is_refused_at_once() {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        // The header's length bytes only: no key, no payload.
        assert_eq!(refusal(&header), WireError::TooLarge);
        // Its first length byte already puts it at 2^62 at least.
        assert_eq!(refusal(&header[..3]), WireError::TooLarge);
        // The largest length there is, on a continuation.
        let mut decoder = Decoder::new(LIMIT);
        fragment(&mut decoder, &client_frame(false, OpCode::Binary, b"held"));
        let mut header = vec![0x80, 0x80 | 127];
        header.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        assert_eq!(refusal_in(&mut decoder, &header), WireError::TooLarge);
    }

    #[test]
    fn reserved_bits_are_refused() {
        for rsv in [0x40, 0x20, 0x10] {
            let mut frame = client_frame(true, OpCode::Text, b"x");
            frame[0] |= rsv;
            assert_eq!(
                refusal(&frame[..1]),
                WireError::Protocol("reserved bit set")
            );
            assert_eq!(refusal(&frame), WireError::Protocol("reserved bit set"));
        }
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for opcode in (0x3..=0x7).chain(0xb..=0xf) {
            let frame = client_frame_with(true, opcode, b"x", KEY);
            assert_eq!(refusal(&frame[..1]), WireError::Protocol("reserved opcode"));
            assert_eq!(refusal(&frame), WireError::Protocol("reserved opcode"));
        }
    }

    #[test]
    fn unmasked_frames_are_refused() {
        for opcode in [
            OpCode::Text,
            OpCode::Binary,
            OpCode::Ping,
            OpCode::Pong,
            OpCode::Close,
        ] {
            let mut frame = client_frame(true, opcode, b"");
            frame[1] &= !0x80;
            assert_eq!(refusal(&frame[..2]), WireError::Protocol("unmasked frame"));
        }
        let mut server_style = Vec::new();
        Frame::message("hi", TsOpCode::Data(Data::Text), true)
            .format(&mut server_style)
            .expect("tungstenite formats the frame");
        assert_eq!(
            refusal(&server_style),
            WireError::Protocol("unmasked frame")
        );
    }

    #[test]
    fn a_64_bit_length_with_its_top_bit_set_is_refused() {
        for len in [1u64 << 63, u64::MAX] {
            let mut frame = vec![0x82, 0x80 | 127];
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&KEY);
            let refused = WireError::Protocol("payload length with its most significant bit set");
            assert_eq!(refusal(&frame[..3]), refused);
            assert_eq!(refusal_in(&mut Decoder::new(usize::MAX), &frame), refused);
        }
    }

    #[test]
    fn control_frames_must_be_final_and_short() {
        for opcode in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
            let frame = client_frame(false, opcode, b"");
            assert_eq!(
                refusal(&frame[..1]),
                WireError::Protocol("fragmented control frame")
            );
            let long = client_frame(true, opcode, &close_payload(1000, &[b'a'; 124]));
            assert_eq!(long[1], 0x80 | 126);
            assert_eq!(
                refusal(&long[..2]),
                WireError::Protocol("control frame over 125 bytes")
            );
            let longest = client_frame(true, opcode, &close_payload(1000, &[b'a'; 123]));
            assert_eq!(message(&mut Decoder::new(LIMIT), &longest).0, longest.len());
            let over_7_bits = [0x80 | opcode as u8, 0x80 | 127];
            let refused = WireError::Protocol("control frame over 125 bytes");
            assert_eq!(refusal(&over_7_bits), refused);
        }
    }

    #[test]
    fn a_continuation_without_a_message_is_refused() {
        let refused = WireError::Protocol("continuation without a message");
        for fin in [false, true] {
            let frame = client_frame(fin, OpCode::Continuation, b"x");
            assert_eq!(refusal(&frame[..1]), refused);
            let mut decoder = Decoder::new(LIMIT);
            message(&mut decoder, &client_frame(true, OpCode::Text, b"done"));
            assert_eq!(refusal_in(&mut decoder, &frame), refused);
        }
    }

    #[test]
    fn a_new_data_frame_inside_a_fragmented_message_is_refused() {
        for opcode in [OpCode::Text, OpCode::Binary] {
            for fin in [false, true] {
                let mut decoder = Decoder::new(LIMIT);
                fragment(&mut decoder, &client_frame(false, OpCode::Binary, b"a"));
                let frame = client_frame(fin, opcode, b"b");
                let refused = WireError::Protocol("data frame inside a fragmented message");
                assert_eq!(refusal_in(&mut decoder, &frame[..1]), refused);
            }
        }
    }

    #[test]
    fn invalid_utf8_text_is_refused() {
        let bad: [&[u8]; 6] = [
            b"\xff",
            b"a\xc3",            // cut short at the end
            b"\xc3a",            // a lead byte without its continuation
            b"\xed\xa0\x80",     // a surrogate
            b"\xc0\xaf",         // overlong
            b"\xf4\x90\x80\x80", // past U+10FFFF
        ];
        for bytes in bad {
            assert_eq!(
                refusal(&client_frame(true, OpCode::Text, bytes)),
                WireError::InvalidUtf8
            );
            let mut decoder = Decoder::new(LIMIT);
            fragment(&mut decoder, &client_frame(false, OpCode::Text, b"ok"));
            let last = client_frame(true, OpCode::Continuation, bytes);
            assert_eq!(refusal_in(&mut decoder, &last), WireError::InvalidUtf8);
        }
        // Binary is not UTF-8 checked.
        let binary = client_frame(true, OpCode::Binary, b"\xff");
        assert_eq!(
            message(&mut Decoder::new(LIMIT), &binary).1,
            Message::Binary(vec![0xff].into())
        );

        // A fragment that cannot begin UTF-8 is refused before the message ends (§8.1).
        let first = client_frame(false, OpCode::Text, b"\xff");
        assert_eq!(refusal(&first), WireError::InvalidUtf8);
        let mut decoder = Decoder::new(LIMIT);
        fragment(
            &mut decoder,
            &client_frame(false, OpCode::Text, b"a\xe2\x82"),
        );
        let next = client_frame(false, OpCode::Continuation, b"x");
        assert_eq!(refusal_in(&mut decoder, &next), WireError::InvalidUtf8);
        // A code point left unfinished when the message ends.
        let mut decoder = Decoder::new(LIMIT);
        fragment(
            &mut decoder,
            &client_frame(false, OpCode::Text, b"\xe2\x82"),
        );
        let last = client_frame(true, OpCode::Continuation, b"");
        assert_eq!(refusal_in(&mut decoder, &last), WireError::InvalidUtf8);
        assert_eq!(WireError::InvalidUtf8.close_code(), 1007);
    }

    #[test]
    fn close_codes_valid_and_invalid() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        for code in valid {
            let frame = client_frame(true, OpCode::Close, &close_payload(code, "fin".as_bytes()));
            let expected = Message::Close(Some(CloseFrame {
                code,
                reason: "fin".into(),
            }));
            assert_eq!(
                message(&mut Decoder::new(LIMIT), &frame),
                (frame.len(), expected)
            );
            let no_reason = client_frame(true, OpCode::Close, &code.to_be_bytes());
            let (_, msg) = message(&mut Decoder::new(LIMIT), &no_reason);
            assert_eq!(
                msg,
                Message::Close(Some(CloseFrame {
                    code,
                    reason: "".into()
                }))
            );
        }
        let invalid = [
            0,
            1,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            1100,
            2000,
            2999,
            5000,
            u16::MAX,
        ];
        for code in invalid {
            let frame = client_frame(true, OpCode::Close, &close_payload(code, b"reason"));
            let refused = WireError::Protocol("invalid close code");
            assert_eq!(refusal(&frame), refused, "{code}");
            // Refused from the code's 2 bytes, before the reason arrives.
            assert!(incomplete(&mut Decoder::new(LIMIT), &frame[..7]), "{code}");
            assert_eq!(refusal(&frame[..8]), refused, "{code}");
        }
        let one_byte = client_frame(true, OpCode::Close, &[0x03]);
        assert_eq!(
            refusal(&one_byte[..2]),
            WireError::Protocol("close payload of 1 byte")
        );
        let bad_reason = client_frame(true, OpCode::Close, &close_payload(1000, b"\xff"));
        assert_eq!(refusal(&bad_reason), WireError::InvalidUtf8);
    }

    #[test]
    fn encode_reuses_payloads_and_cuts_control_frames() {
        let text = Utf8Bytes::from("héllo".to_owned());
        let ptr = text.as_ptr();
        let (opcode, payload) = encode(Message::Text(text));
        assert_eq!((opcode, payload.as_ptr()), (OpCode::Text, ptr));
        assert_eq!(payload, "héllo".as_bytes());

        let data = Bytes::from(pattern(300));
        let (opcode, payload) = encode(Message::Binary(data.clone()));
        assert_eq!(
            (opcode, payload.as_ptr(), payload.len()),
            (OpCode::Binary, data.as_ptr(), 300)
        );

        for (msg, opcode) in [
            (Message::Ping(data.clone()), OpCode::Ping),
            (Message::Pong(data.clone()), OpCode::Pong),
        ] {
            let (op, payload) = encode(msg);
            assert_eq!((op, payload.as_ptr()), (opcode, data.as_ptr()));
            assert_eq!(payload, data[..125]);
        }
        let (op, payload) = encode(Message::Ping(Bytes::from_static(b"short")));
        assert_eq!((op, &payload[..]), (OpCode::Ping, &b"short"[..]));

        assert_eq!(encode(Message::Close(None)), (OpCode::Close, Bytes::new()));
        let (op, payload) = encode(Message::Close(Some(CloseFrame {
            code: 4008,
            reason: "slow down".into(),
        })));
        assert_eq!(
            (op, &payload[..]),
            (OpCode::Close, &close_payload(4008, b"slow down")[..])
        );

        // 70 × "é" is 140 bytes: cut to 61 of them (122 bytes), as 123 would split one.
        let (_, payload) = encode(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "é".repeat(70).into(),
        })));
        assert_eq!(payload.len(), 124);
        assert_eq!(payload, close_payload(1000, "é".repeat(61).as_bytes()));
        // ASCII is cut to exactly 125 bytes.
        let (_, payload) = encode(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "a".repeat(200).into(),
        })));
        assert_eq!(payload, close_payload(1000, "a".repeat(123).as_bytes()));
    }

    #[test]
    fn unmask_matches_the_byte_loop() {
        let key = [0x01, 0x80, 0xfe, 0x7f];
        for len in 0..40 {
            let original = pattern(len);
            let mut fast = original.clone();
            unmask(&mut fast, key);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "{len}");
        }
    }

    /// One data message to send: text or binary, its payload, where it is cut into
    /// fragments, and whether a ping follows each non-final fragment.
    fn sent_message() -> impl Strategy<Value = (bool, Vec<u8>, Vec<prop::sample::Index>, bool)> {
        let text = prop::collection::vec(any::<char>(), 0..200)
            .prop_map(|chars| (true, String::from_iter(chars).into_bytes()));
        let binary = prop_oneof![
            9 => prop::collection::vec(any::<u8>(), 0..400),
            1 => prop::collection::vec(any::<u8>(), 65_000..70_000),
        ]
        .prop_map(|bytes| (false, bytes));
        (
            prop_oneof![text, binary],
            prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            any::<bool>(),
        )
            .prop_map(|((text, payload), cuts, pings)| (text, payload, cuts, pings))
    }

    proptest! {
        #[test]
        fn random_fragmentations_round_trip(
            messages in prop::collection::vec(sent_message(), 1..5),
            keys in prop::collection::vec(any::<[u8; 4]>(), 1..4),
            reads in prop::collection::vec(prop_oneof![1usize..16, 1usize..80_000], 1..6),
            tungstenite in any::<bool>(),
        ) {
            let mut keys = keys.iter().copied().cycle();
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            let mut frame = |fin: bool, opcode: OpCode, payload: &[u8], key: [u8; 4]| {
                if tungstenite {
                    let opcode = TsOpCode::from(opcode as u8);
                    let frame = match opcode {
                        TsOpCode::Data(_) => Frame::message(payload.to_vec(), opcode, fin),
                        _ => Frame::ping(payload.to_vec()),
                    };
                    stream.extend(ts_client_frame(frame, key));
                } else {
                    stream.extend(client_frame_with(fin, opcode as u8, payload, key));
                }
            };
            for (text, payload, cuts, pings) in &messages {
                let mut cuts: Vec<usize> =
                    cuts.iter().map(|cut| cut.index(payload.len() + 1)).collect();
                cuts.sort_unstable();
                cuts.push(payload.len());
                let mut from = 0;
                for (i, &to) in cuts.iter().enumerate() {
                    let fin = i + 1 == cuts.len();
                    let opcode = match (i, text) {
                        (0, true) => OpCode::Text,
                        (0, false) => OpCode::Binary,
                        _ => OpCode::Continuation,
                    };
                    let key = keys.next().unwrap_or(KEY);
                    frame(fin, opcode, &payload[from..to], key);
                    from = to;
                    if !fin && *pings {
                        let ping = [i as u8; 3];
                        frame(true, OpCode::Ping, &ping, key);
                        expected.push(Message::Ping(ping.to_vec().into()));
                    }
                }
                expected.push(if *text {
                    Message::text(String::from_utf8(payload.clone()).expect("text is UTF-8"))
                } else {
                    Message::Binary(payload.clone().into())
                });
            }
            let mut decoder = Decoder::new(LIMIT);
            prop_assert_eq!(read_all(&mut decoder, &stream, &reads), Ok(expected));
            prop_assert!(decoder.partial.is_none());
        }

        #[test]
        fn arbitrary_bytes_never_overrun(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            in_message in any::<bool>(),
        ) {
            let mut decoder = Decoder::new(32);
            if in_message {
                fragment(&mut decoder, &client_frame(false, OpCode::Text, b"a"));
            }
            match decoder.decode(&bytes) {
                Ok(Decoded::Fragment(n) | Decoded::Message(n, _)) => {
                    prop_assert!((6..=bytes.len()).contains(&n));
                }
                Ok(Decoded::Incomplete) | Err(_) => {}
            }
        }
    }
}
