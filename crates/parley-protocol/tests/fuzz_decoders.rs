//! Fuzz targets of the client-facing decoders (see `fuzz/harness.rs` for how they run):
//! - `ws_frame`: a WebSocket text frame into an op (`parse_client_frame`);
//! - `rest_body`: a JSON body into each REST request type.
//!
//! Properties: no input panics; a frame or body that parses serializes to one that parses
//! to the same value (parse → serialize → parse); every ID parsed is within `0..=i64::MAX`.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use parley_protocol::Id;
use parley_protocol::rest::{
    CreateChannelRequest, DmRequest, LoginRequest, MediaRequest, ReadRequest, RegisterRequest,
    SendMessageRequest,
};
use parley_protocol::ws::{ClientFrame, ClientOp, parse_client_frame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn in_range(ids: impl IntoIterator<Item = Id>, input: &str) {
    for id in ids {
        assert!(
            id <= Id::MAX,
            "ID {id} above i64::MAX parsed from {input:?}"
        );
    }
}

/// The frame as JSON, the way a client would send it.
fn frame_json(f: &ClientFrame) -> Value {
    let d = match &f.op {
        ClientOp::Hello(h) => serde_json::to_value(h),
        ClientOp::Ping => Ok(json!({})),
        ClientOp::Send(s) => serde_json::to_value(s),
        ClientOp::Typing(t) => serde_json::to_value(t),
        ClientOp::Read(r) => serde_json::to_value(r),
        ClientOp::History(h) => serde_json::to_value(h),
    }
    .unwrap();
    json!({"op": f.op.name(), "ref": f.r#ref, "d": d})
}

fn ids(op: &ClientOp) -> Vec<Id> {
    match op {
        ClientOp::Hello(h) => h.resume_after.into_iter().collect(),
        ClientOp::Ping => vec![],
        ClientOp::Send(s) => [s.channel_id]
            .into_iter()
            .chain(s.attachments.iter().copied())
            .chain(s.reply_to)
            .collect(),
        ClientOp::Typing(t) => vec![t.channel_id],
        ClientOp::Read(r) => vec![r.channel_id, r.message_id],
        ClientOp::History(h) => [h.channel_id]
            .into_iter()
            .chain(h.before)
            .chain(h.after)
            .collect(),
    }
}

fn check_ws_frame(input: &[u8]) {
    // Text frames are UTF-8: the WebSocket layer refuses others before parsing.
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match parse_client_frame(text) {
        Ok(frame) => {
            in_range(ids(&frame.op), text);
            let again = frame_json(&frame).to_string();
            let reparsed = parse_client_frame(&again)
                .unwrap_or_else(|e| panic!("{again:?} (from {text:?}) does not parse: {e}"));
            assert_eq!(reparsed, frame, "round trip of {text:?} through {again:?}");
        }
        Err(e) => assert!(
            !e.message.is_empty(),
            "an error without a message for {text:?}"
        ),
    }
}

/// `T` from `input`; when it parses: serialize → parse → serialize gives the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(input: &[u8]) -> Option<Value> {
    let t: T = serde_json::from_slice(input).ok()?;
    let first = serde_json::to_value(&t).unwrap();
    let again: T = serde_json::from_str(&first.to_string()).unwrap_or_else(|e| {
        panic!(
            "{} re-serialized as {first} does not parse: {e}",
            std::any::type_name::<T>()
        )
    });
    assert_eq!(serde_json::to_value(&again).unwrap(), first);
    Some(first)
}

fn check_rest_body(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    round_trip::<RegisterRequest>(input);
    round_trip::<LoginRequest>(input);
    round_trip::<CreateChannelRequest>(input);
    round_trip::<MediaRequest>(input);
    if let Ok(r) = serde_json::from_slice::<DmRequest>(input) {
        in_range([r.user_id], &text);
    }
    round_trip::<DmRequest>(input);
    if let Ok(r) = serde_json::from_slice::<ReadRequest>(input) {
        in_range([r.message_id], &text);
    }
    round_trip::<ReadRequest>(input);
    if let Ok(r) = serde_json::from_slice::<SendMessageRequest>(input) {
        in_range(r.attachments.iter().copied().chain(r.reply_to), &text);
    }
    round_trip::<SendMessageRequest>(input);
}

/// Pieces of frames and bodies: keys, ID edge cases, awkward strings.
const JSON_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "0",
    "-1",
    "1e400",
    "1.5",
    "\"op\"",
    "\"ref\"",
    "\"d\"",
    "\"hello\"",
    "\"ping\"",
    "\"send\"",
    "\"typing\"",
    "\"read\"",
    "\"history\"",
    "\"token\"",
    "\"resume_after\"",
    "\"channel_id\"",
    "\"text\"",
    "\"client_msg_id\"",
    "\"attachments\"",
    "\"reply_to\"",
    "\"message_id\"",
    "\"before\"",
    "\"after\"",
    "\"limit\"",
    "\"username\"",
    "\"password\"",
    "\"display_name\"",
    "\"name\"",
    "\"user_id\"",
    "\"filename\"",
    "\"content_type\"",
    "\"size\"",
    "\"1\"",
    "\"0\"",
    "\"007\"",
    "\"9223372036854775807\"",
    "\"9223372036854775808\"",
    "\"18446744073709551615\"",
    "\"18446744073709551616\"",
    "\"-1\"",
    "\"+1\"",
    "\" 1\"",
    "\"1e3\"",
    "\"\"",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "\"\u{200b}\"",
    "\"\u{feff}x\"",
];

/// Well-formed frames with random values in the right places.
fn frames() -> proptest::strategy::BoxedStrategy<Vec<u8>> {
    use proptest::prelude::*;
    let id = prop_oneof![
        any::<u64>().prop_map(|n| json!(n.to_string())),
        Just(json!("9223372036854775808")),
        Just(json!("9223372036854775807")),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,8}".prop_map(|s| json!(s)),
        Just(Value::Null),
    ];
    let op =
        proptest::sample::select(&["hello", "ping", "send", "typing", "read", "history", "x"][..]);
    let key = proptest::sample::select(
        &[
            "token",
            "resume_after",
            "channel_id",
            "text",
            "client_msg_id",
            "attachments",
            "reply_to",
            "message_id",
            "before",
            "after",
            "limit",
        ][..],
    );
    let value = prop_oneof![
        3 => id.clone(),
        1 => ".{0,16}".prop_map(|s| json!(s)),
        1 => proptest::collection::vec(id, 0..4).prop_map(Value::Array),
        1 => any::<u32>().prop_map(|n| json!(n)),
    ];
    let reference = prop_oneof![
        Just(Value::Null),
        ".{0,8}".prop_map(|s| json!(s)),
        any::<i32>().prop_map(|n| json!(n)),
    ];
    (
        op,
        reference,
        proptest::collection::btree_map(key, value, 0..6),
    )
        .prop_map(|(op, r, d)| {
            let d: serde_json::Map<String, Value> =
                d.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            json!({"op": op, "ref": r, "d": d}).to_string().into_bytes()
        })
        .boxed()
}

/// Well-formed bodies of every request type with random values.
fn bodies() -> proptest::strategy::BoxedStrategy<Vec<u8>> {
    use proptest::prelude::*;
    let key = proptest::sample::select(
        &[
            "username",
            "password",
            "display_name",
            "name",
            "user_id",
            "text",
            "client_msg_id",
            "attachments",
            "reply_to",
            "message_id",
            "filename",
            "content_type",
            "size",
        ][..],
    );
    let value = prop_oneof![
        any::<u64>().prop_map(|n| json!(n.to_string())),
        Just(json!("9223372036854775808")),
        any::<u64>().prop_map(|n| json!(n)),
        ".{0,16}".prop_map(|s| json!(s)),
        proptest::collection::vec(any::<u64>().prop_map(|n| json!(n.to_string())), 0..3)
            .prop_map(Value::Array),
        Just(Value::Null),
    ];
    proptest::collection::btree_map(key, value, 0..6)
        .prop_map(|m| {
            let m: serde_json::Map<String, Value> =
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            Value::Object(m).to_string().into_bytes()
        })
        .boxed()
}

#[test]
fn ws_frame_corpus() {
    harness::replay(DIR, "ws_frame", check_ws_frame);
}

#[test]
fn ws_frame_fuzz() {
    let generated = proptest::strategy::Strategy::boxed(proptest::prop_oneof![
        frames(),
        harness::text_of(JSON_PIECES, 48),
    ]);
    harness::fuzz(DIR, "ws_frame", check_ws_frame, generated);
}

#[test]
fn rest_body_corpus() {
    harness::replay(DIR, "rest_body", check_rest_body);
}

#[test]
fn rest_body_fuzz() {
    let generated = proptest::strategy::Strategy::boxed(proptest::prop_oneof![
        bodies(),
        harness::text_of(JSON_PIECES, 48),
    ]);
    harness::fuzz(DIR, "rest_body", check_rest_body, generated);
}
