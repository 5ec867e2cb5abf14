//! Fuzz targets of the client-facing decoders (see `fuzz/harness.rs` for how they run):
//! - `ws_frame`: a WebSocket text frame into an op (`parse_client_frame`);
//! - `rest_body`: a JSON body into each REST request type.
//!
//! The properties are in `fuzz/checks/protocol.rs` (shared with `cargo fuzz`).

#[path = "../../../fuzz/harness.rs"]
mod harness;

#[path = "../../../fuzz/checks/protocol.rs"]
mod checks;

use checks::{check_rest_body, check_ws_frame};
use serde_json::{Value, json};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

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
