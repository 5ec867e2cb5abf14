//! WebSocket frames: `{"op", "ref", "d"}` from the client, `{"t", "ref", "d"}` from the server.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::rest::HistoryQuery;
use crate::{Channel, Id, Message, Timestamp};

/// Default interval at which a connection must ping.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 15_000;

/// Close codes of the protocol: the standard ones a node uses (RFC 6455 §7.4.1) and the
/// protocol's own 4xxx codes.
pub mod close {
    /// Node stopping at once (a hard shutdown: a second signal, or a drain window of 0);
    /// reconnect with `resume_after`.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol itself (a frame the server could not read).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Frame larger than the limit.
    pub const TOO_LARGE: u16 = 1009;
    /// The server failed (a backend unavailable at `hello`, a session lost by the hub):
    /// reconnect with `resume_after`.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// No `hello` in time, or a bad one.
    pub const BAD_HELLO: u16 = 4001;
    /// Heartbeat expired.
    pub const HEARTBEAT_EXPIRED: u16 = 4002;
    /// The session's token expired (v1.1): reconnect with a fresh token.
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// Rate or policy limit.
    pub const POLICY: u16 = 4008;
    /// Node draining (v1.1): sent after a [`Reconnect`](super::Reconnect) event; wait its
    /// `after_ms`, then reconnect (to any node) with `resume_after`.
    pub const NODE_DRAINING: u16 = 4010;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub token: String,
    #[serde(default)]
    pub resume_after: Option<Id>,
    /// Presence changes as `presence_batch` {presences: [Presence]} frames instead of one
    /// `presence` frame each (an extension of PROTOCOL.md; docs/protocol.md).
    #[serde(default)]
    pub presence_batch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOp {
    pub channel_id: Id,
    pub text: String,
    pub client_msg_id: String,
    #[serde(default)]
    pub attachments: Vec<Id>,
    #[serde(default)]
    pub reply_to: Option<Id>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingOp {
    pub channel_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOp {
    pub channel_id: Id,
    pub message_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOp {
    pub channel_id: Id,
    #[serde(default)]
    pub before: Option<Id>,
    #[serde(default)]
    pub after: Option<Id>,
    #[serde(default)]
    pub limit: Option<u32>,
}

impl HistoryOp {
    /// The same query `GET /v1/channels/{channel_id}/messages` takes.
    pub fn query(&self) -> HistoryQuery {
        HistoryQuery {
            before: self.before,
            after: self.after,
            limit: self.limit,
        }
    }
}

/// A client operation with its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    Hello(Hello),
    Ping,
    Send(SendOp),
    Typing(TypingOp),
    Read(ReadOp),
    History(HistoryOp),
}

impl ClientOp {
    pub const fn name(&self) -> &'static str {
        match self {
            ClientOp::Hello(_) => "hello",
            ClientOp::Ping => "ping",
            ClientOp::Send(_) => "send",
            ClientOp::Typing(_) => "typing",
            ClientOp::Read(_) => "read",
            ClientOp::History(_) => "history",
        }
    }
}

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    pub r#ref: Option<String>,
    pub op: ClientOp,
}

/// Why a text frame is not a valid client frame. `ref` is kept when it could be read,
/// so the error reply can echo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub r#ref: Option<String>,
    pub message: String,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FrameError {}

#[derive(Deserialize)]
struct Envelope {
    op: Option<serde_json::Value>,
    #[serde(rename = "ref")]
    r#ref: Option<serde_json::Value>,
    d: Option<serde_json::Value>,
}

fn payload<T: DeserializeOwned>(
    op: &str,
    d: Option<serde_json::Value>,
    r#ref: &Option<String>,
) -> Result<T, FrameError> {
    let d = match d {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Some(d) => d,
    };
    serde_json::from_value(d).map_err(|e| FrameError {
        r#ref: r#ref.clone(),
        message: format!("bad `d` for op `{op}`: {e}"),
    })
}

/// Parses one text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| FrameError {
        r#ref: None,
        message: format!("a frame is one JSON object: {e}"),
    })?;
    let r#ref = match envelope.r#ref {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => {
            return Err(FrameError {
                r#ref: None,
                message: "`ref` must be a string".into(),
            });
        }
    };
    let op = match envelope.op {
        Some(serde_json::Value::String(op)) => op,
        Some(_) => {
            return Err(FrameError {
                r#ref,
                message: "`op` must be a string".into(),
            });
        }
        None => {
            return Err(FrameError {
                r#ref,
                message: "missing `op`".into(),
            });
        }
    };
    let d = envelope.d;
    let op = match op.as_str() {
        "hello" => ClientOp::Hello(payload(&op, d, &r#ref)?),
        "ping" => {
            if let Some(d) = &d
                && !(d.is_object() || d.is_null())
            {
                return Err(FrameError {
                    r#ref,
                    message: "bad `d` for op `ping`: expected an object".into(),
                });
            }
            ClientOp::Ping
        }
        "send" => ClientOp::Send(payload(&op, d, &r#ref)?),
        "typing" => ClientOp::Typing(payload(&op, d, &r#ref)?),
        "read" => ClientOp::Read(payload(&op, d, &r#ref)?),
        "history" => ClientOp::History(payload(&op, d, &r#ref)?),
        other => {
            return Err(FrameError {
                message: format!(
                    "unknown op `{}`; ops are hello, ping, send, typing, read, history",
                    other.chars().take(64).collect::<String>()
                ),
                r#ref,
            });
        }
    };
    Ok(ClientFrame { r#ref, op })
}

/// A server frame, serialized once and shared.
#[derive(Debug, Clone, Serialize)]
pub struct ServerFrame<'a, T> {
    pub t: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<&'a str>,
    pub d: T,
}

/// A server frame as a client reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnyServerFrame {
    pub t: String,
    #[serde(rename = "ref", default)]
    pub r#ref: Option<String>,
    #[serde(default)]
    pub d: serde_json::Value,
}

/// Server frame types.
pub mod event {
    pub const READY: &str = "ready";
    pub const PONG: &str = "pong";
    pub const OK: &str = "ok";
    pub const ERROR: &str = "error";
    pub const MESSAGE: &str = "message";
    pub const TYPING: &str = "typing";
    pub const READ: &str = "read";
    pub const CHANNEL_JOINED: &str = "channel_joined";
    pub const MEMBER_JOINED: &str = "member_joined";
    pub const MEMBER_LEFT: &str = "member_left";
    pub const PRESENCE: &str = "presence";
    /// Several users' presence in one frame, for a client that asked in its hello.
    pub const PRESENCE_BATCH: &str = "presence_batch";
    pub const RESYNC_REQUIRED: &str = "resync_required";
    /// v1.1: the node is draining; the close (4010) follows.
    pub const RECONNECT: &str = "reconnect";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCursor {
    pub id: Id,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub user_id: Id,
    pub session_id: String,
    pub node: String,
    pub heartbeat_interval_ms: u64,
    pub channels: Vec<ChannelCursor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub server_time: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOk {
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    pub channel_id: Id,
    pub user_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEvent {
    pub channel_id: Id,
    pub user_id: Id,
    pub message_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelJoined {
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    pub channel_id: Id,
    pub user_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncRequired {
    pub channel_id: Id,
}

/// `reconnect` (v1.1): the node is draining and closes this connection with
/// [`close::NODE_DRAINING`] right after. The client waits `after_ms` milliseconds (a
/// jittered delay, so a node's clients do not all come back at once), then reconnects to
/// any node with `resume_after` set to the last message id it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconnect {
    pub after_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_has_the_v1_1_shape() {
        let f = ServerFrame {
            t: event::RECONNECT,
            r#ref: None,
            d: &Reconnect { after_ms: 1250 },
        };
        let v: serde_json::Value = serde_json::to_value(&f).unwrap();
        assert_eq!(v["t"], "reconnect");
        assert_eq!(v["d"], serde_json::json!({"after_ms": 1250}));
        let back: Reconnect = serde_json::from_value(v["d"].clone()).unwrap();
        assert_eq!(back.after_ms, 1250);
        assert_eq!(close::NODE_DRAINING, 4010);
    }

    #[test]
    fn parses_every_op() {
        let f =
            parse_client_frame(r#"{"op":"hello","ref":"1","d":{"token":"t","resume_after":"5"}}"#)
                .unwrap();
        assert_eq!(f.r#ref.as_deref(), Some("1"));
        assert_eq!(
            f.op,
            ClientOp::Hello(Hello {
                token: "t".into(),
                resume_after: Some(Id(5)),
                presence_batch: false,
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"op":"ping"}"#).unwrap().op,
            ClientOp::Ping
        );
        assert_eq!(
            parse_client_frame(r#"{"op":"ping","d":{}}"#).unwrap().op,
            ClientOp::Ping
        );
        let f = parse_client_frame(
            r#"{"op":"send","d":{"channel_id":"7","text":"hi","client_msg_id":"c1"}}"#,
        )
        .unwrap();
        assert!(matches!(
            f.op,
            ClientOp::Send(SendOp {
                channel_id: Id(7),
                ..
            })
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"typing","d":{"channel_id":"7"}}"#)
                .unwrap()
                .op,
            ClientOp::Typing(_)
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"read","d":{"channel_id":"7","message_id":"9"}}"#)
                .unwrap()
                .op,
            ClientOp::Read(_)
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"history","d":{"channel_id":"7","limit":10}}"#)
                .unwrap()
                .op,
            ClientOp::History(HistoryOp {
                limit: Some(10),
                ..
            })
        ));
    }

    #[test]
    fn errors_keep_the_ref_when_they_can() {
        let e = parse_client_frame("not json").unwrap_err();
        assert_eq!(e.r#ref, None);
        let e = parse_client_frame(r#"{"op":"fly","ref":"r9"}"#).unwrap_err();
        assert_eq!(e.r#ref.as_deref(), Some("r9"));
        assert!(e.message.contains("unknown op"));
        let e = parse_client_frame(r#"{"op":"send","ref":"r1","d":{"channel_id":7}}"#).unwrap_err();
        assert_eq!(e.r#ref.as_deref(), Some("r1"));
        assert!(e.message.contains("send"), "{}", e.message);
        let e = parse_client_frame(r#"{"op":"ping","ref":5}"#).unwrap_err();
        assert!(e.message.contains("ref"));
        assert!(parse_client_frame(r#"[1,2]"#).is_err());
        assert!(parse_client_frame(r#"{"ref":"x"}"#).is_err());
        assert!(parse_client_frame(r#"{"op":"ping","d":3}"#).is_err());
    }

    #[test]
    fn server_frames_serialize_with_optional_ref() {
        let frame = ServerFrame {
            t: event::PONG,
            r#ref: None,
            d: Pong {
                server_time: Timestamp(0),
            },
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"t":"pong","d":{"server_time":"1970-01-01T00:00:00.000Z"}}"#
        );
        let frame = ServerFrame {
            t: event::OK,
            r#ref: Some("a"),
            d: serde_json::json!({}),
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"t":"ok","ref":"a","d":{}}"#
        );
    }
}
