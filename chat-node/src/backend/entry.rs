//! What the message log's records hold ([`LogEntry`]): a message, stamped with the owner term
//! its sequencer held, or a fence record a new owner appends when it takes a channel over
//! (docs/reliability.md, "Fencing"). The sequencer encodes, the persister decodes.
//!
//! ```text
//!   message   {"id":"..","channel_id":"..","seq":..,...,"term":17,"gen":4}
//!                                                  (StoredMessage + the owner term)
//!   fence     {"fence":"<channel id>","gen":4}
//! ```
//!
//! A message of term 0 is written without `"term"` and `"gen"`, byte for byte as before
//! fencing, and a record without them reads as term 0 (generation 0): records of older
//! versions decode, and a node that fences nothing (the embedded one) writes what it always
//! wrote. A fence or message without `"gen"` (written before fences carried their
//! generation) reads as generation 0.

use parley_protocol::Id;
use serde::{Deserialize, Serialize};

use super::StoredMessage;

/// The term an owner holds a channel in: the generation its reserve got (unique per
/// channel, rising with each take-over) and the term of its fence record (the fence's log
/// offset + 1). `{0, 0}`: nothing is fenced (the embedded node). Ordered by generation,
/// then term: the order in which the persisters put terms in force, and in which the
/// stored term of a channel only rises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerTerm {
    pub generation: u64,
    pub term: u64,
}

/// One record of the message log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// A sequenced message and the owner term of the node that sequenced it (term 0: a
    /// node that fences nothing, or an older version; generation 0: a version whose
    /// records carried no generation).
    Message {
        message: StoredMessage,
        term: OwnerTerm,
    },
    /// A new owner of `channel`, of reserve `generation`, starts here (its term is this
    /// record's offset + 1). The persisters put it in force only if `generation` is above
    /// the one in force (a contender that lost the race may append its fence after the
    /// winner's); 0: a version whose fences carried no generation.
    Fence { channel: Id, generation: u64 },
}

/// The wire form of a message record (the message's own fields, and `term` and `gen`
/// unless 0).
#[derive(Serialize)]
struct MessageOut<'a> {
    #[serde(flatten)]
    message: &'a StoredMessage,
    #[serde(skip_serializing_if = "is_zero")]
    term: u64,
    #[serde(skip_serializing_if = "is_zero")]
    r#gen: u64,
}

#[derive(Deserialize)]
struct MessageIn {
    #[serde(flatten)]
    message: StoredMessage,
    #[serde(default)]
    term: u64,
    #[serde(default)]
    r#gen: u64,
}

#[derive(Serialize, Deserialize)]
struct FenceWire {
    fence: Id,
    #[serde(default, skip_serializing_if = "is_zero")]
    r#gen: u64,
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

impl MessageIn {
    fn entry(self) -> LogEntry {
        LogEntry::Message {
            message: self.message,
            term: OwnerTerm {
                generation: self.r#gen,
                term: self.term,
            },
        }
    }
}

impl LogEntry {
    /// The JSON payload of a message record of owner term `term`. Errors: serde_json's
    /// (none is expected: the message is strings, numbers and IDs).
    pub fn encode_message(
        message: &StoredMessage,
        term: OwnerTerm,
    ) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&MessageOut {
            message,
            term: term.term,
            r#gen: term.generation,
        })
    }

    /// The JSON payload of a fence record of `channel` by the owner of reserve
    /// `generation`. Errors: as [`LogEntry::encode_message`].
    pub fn encode_fence(channel: Id, generation: u64) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&FenceWire {
            fence: channel,
            r#gen: generation,
        })
    }

    /// Reads a record's payload. Errors: JSON that is neither a fence nor a message (the
    /// message's own decoding error is reported).
    pub fn decode(payload: &[u8]) -> Result<LogEntry, serde_json::Error> {
        match serde_json::from_slice::<Wire>(payload) {
            Ok(Wire::Fence(f)) => Ok(LogEntry::Fence {
                channel: f.fence,
                generation: f.r#gen,
            }),
            Ok(Wire::Message(m)) => Ok(m.entry()),
            // Untagged enums report only that nothing matched: say why it is no message.
            Err(_) => serde_json::from_slice::<MessageIn>(payload).map(MessageIn::entry),
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
        for (generation, term) in [(0, 0), (0, 1), (3, 42), (u64::MAX, u64::MAX)] {
            let term = OwnerTerm { generation, term };
            assert_eq!(
                LogEntry::decode(&LogEntry::encode_message(&m, term).unwrap()).unwrap(),
                LogEntry::Message {
                    message: m.clone(),
                    term
                }
            );
        }
        let fence = LogEntry::encode_fence(Id(77), 5).unwrap();
        assert_eq!(fence, br#"{"fence":"77","gen":5}"#);
        assert_eq!(
            LogEntry::decode(&fence).unwrap(),
            LogEntry::Fence {
                channel: Id(77),
                generation: 5
            }
        );
        // A fence of a version before generations reads as generation 0.
        assert_eq!(
            LogEntry::decode(br#"{"fence":"77"}"#).unwrap(),
            LogEntry::Fence {
                channel: Id(77),
                generation: 0
            }
        );
    }

    #[test]
    fn a_term_0_message_is_written_as_before_fencing_and_old_records_read_as_term_0() {
        let m = message();
        let before = serde_json::to_vec(&m).unwrap();
        assert_eq!(
            LogEntry::encode_message(&m, OwnerTerm::default()).unwrap(),
            before
        );
        assert_eq!(
            LogEntry::decode(&before).unwrap(),
            LogEntry::Message {
                message: m.clone(),
                term: OwnerTerm::default()
            }
        );
        let term = OwnerTerm {
            generation: 2,
            term: 9,
        };
        let with_term = String::from_utf8(LogEntry::encode_message(&m, term).unwrap()).unwrap();
        assert!(with_term.ends_with(r#","term":9,"gen":2}"#), "{with_term}");
        // A message of a version before generations reads as generation 0.
        let without_gen = with_term.replace(r#","gen":2"#, "");
        assert_eq!(
            LogEntry::decode(without_gen.as_bytes()).unwrap(),
            LogEntry::Message {
                message: m.clone(),
                term: OwnerTerm {
                    generation: 0,
                    term: 9
                }
            }
        );
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
        let term = OwnerTerm {
            generation: 1,
            term: 3,
        };
        let m = String::from_utf8(LogEntry::encode_message(&message(), term).unwrap())
            .unwrap()
            .replace(r#""reply_to":"4""#, r#""reply_to":"18446744073709551615""#);
        let LogEntry::Message { message, term } = LogEntry::decode(m.as_bytes()).unwrap() else {
            panic!("a message");
        };
        assert_eq!((message.reply_to, term.term), (None, 3));
    }
}
