//! What the message log's records hold ([`LogEntry`]): a message, stamped with the owner term
//! its sequencer held, or a fence record a new owner appends when it takes a channel over
//! (docs/reliability.md, "Fencing"). The sequencer encodes, the persister decodes.
//!
//! ```text
//!   message   {"id":"..","channel_id":"..","seq":..,...,"term":17}   (StoredMessage + term)
//!   fence     {"fence":"<channel id>"}
//! ```
//!
//! A message of term 0 is written without `"term"`, byte for byte as before fencing, and a
//! record without it reads as term 0: records of older versions decode, and a node that
//! fences nothing (the embedded one) writes what it always wrote.

use parley_protocol::Id;
use serde::{Deserialize, Serialize};

use super::StoredMessage;

/// One record of the message log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// A sequenced message and the owner term of the node that sequenced it (0: a node that
    /// fences nothing, or an older version).
    Message { message: StoredMessage, term: u64 },
    /// A new owner of `channel` starts here: a message of `channel` further on in the log
    /// whose term is below this record's (its offset + 1) comes from an owner fenced out.
    Fence { channel: Id },
}

/// The wire form of a message record (the message's own fields, and `term` unless 0).
#[derive(Serialize)]
struct MessageOut<'a> {
    #[serde(flatten)]
    message: &'a StoredMessage,
    #[serde(skip_serializing_if = "is_zero")]
    term: u64,
}

#[derive(Deserialize)]
struct MessageIn {
    #[serde(flatten)]
    message: StoredMessage,
    #[serde(default)]
    term: u64,
}

#[derive(Serialize, Deserialize)]
struct FenceWire {
    fence: Id,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Fence(FenceWire),
    Message(MessageIn),
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LogEntry {
    /// The JSON payload of a message record of `term`. Errors: serde_json's (none is
    /// expected: the message is strings, numbers and IDs).
    pub fn encode_message(
        message: &StoredMessage,
        term: u64,
    ) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&MessageOut { message, term })
    }

    /// The JSON payload of a fence record of `channel`. Errors: as
    /// [`LogEntry::encode_message`].
    pub fn encode_fence(channel: Id) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&FenceWire { fence: channel })
    }

    /// Reads a record's payload. Errors: JSON that is neither a fence nor a message (the
    /// message's own decoding error is reported).
    pub fn decode(payload: &[u8]) -> Result<LogEntry, serde_json::Error> {
        match serde_json::from_slice::<Wire>(payload) {
            Ok(Wire::Fence(f)) => Ok(LogEntry::Fence { channel: f.fence }),
            Ok(Wire::Message(m)) => Ok(LogEntry::Message {
                message: m.message,
                term: m.term,
            }),
            // Untagged enums report only that nothing matched: say why it is no message.
            Err(_) => serde_json::from_slice::<MessageIn>(payload).map(|m| LogEntry::Message {
                message: m.message,
                term: m.term,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use parley_protocol::Timestamp;

    use super::*;

    fn message() -> StoredMessage {
        StoredMessage {
            id: Id(5),
            channel_id: Id(1),
            seq: 3,
            author_id: Id(2),
            text: "hi".into(),
            client_msg_id: Some("c-1".into()),
            attachments: vec![],
            reply_to: Some(Id(4)),
            created_at: Timestamp(1_700_000_000_000),
            moderated: false,
        }
    }

    #[test]
    fn messages_and_fences_round_trip() {
        let m = message();
        for term in [0, 1, 42, u64::MAX] {
            assert_eq!(
                LogEntry::decode(&LogEntry::encode_message(&m, term).unwrap()).unwrap(),
                LogEntry::Message {
                    message: m.clone(),
                    term
                }
            );
        }
        let fence = LogEntry::encode_fence(Id(77)).unwrap();
        assert_eq!(fence, br#"{"fence":"77"}"#);
        assert_eq!(
            LogEntry::decode(&fence).unwrap(),
            LogEntry::Fence { channel: Id(77) }
        );
    }

    #[test]
    fn a_term_0_message_is_written_as_before_fencing_and_old_records_read_as_term_0() {
        let m = message();
        let before = serde_json::to_vec(&m).unwrap();
        assert_eq!(LogEntry::encode_message(&m, 0).unwrap(), before);
        assert_eq!(
            LogEntry::decode(&before).unwrap(),
            LogEntry::Message {
                message: m.clone(),
                term: 0
            }
        );
        let with_term = String::from_utf8(LogEntry::encode_message(&m, 9).unwrap()).unwrap();
        assert!(with_term.ends_with(r#","term":9}"#), "{with_term}");
        // An older node reads the message of a newer one (it ignores `term`).
        assert_eq!(
            serde_json::from_str::<StoredMessage>(&with_term).unwrap(),
            m
        );
    }

    #[test]
    fn garbage_is_an_error_naming_what_the_message_lacks() {
        let err = LogEntry::decode(br#"{"id":"5"}"#).unwrap_err().to_string();
        assert!(err.contains("missing field"), "{err}");
        assert!(LogEntry::decode(b"not json").is_err());
        // The lenient reply_to still applies inside a record.
        let m = String::from_utf8(LogEntry::encode_message(&message(), 3).unwrap())
            .unwrap()
            .replace(r#""reply_to":"4""#, r#""reply_to":"18446744073709551615""#);
        let LogEntry::Message { message, term } = LogEntry::decode(m.as_bytes()).unwrap() else {
            panic!("a message");
        };
        assert_eq!((message.reply_to, term), (None, 3));
    }
}
