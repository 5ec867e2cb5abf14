//! The properties of the `ws_frame` and `rest_body` fuzz targets: `check_*(&[u8])` panics
//! when one fails. Included (`#[path]`) by `crates/parley-protocol/tests/fuzz_decoders.rs`
//! (the stable harness) and by `fuzz/fuzz_targets/` (cargo fuzz).
//!
//! Properties: no input panics; a frame or body that parses serializes to one that parses
//! to the same value (parse → serialize → parse); every ID parsed is within `0..=i64::MAX`.

use parley_protocol::Id;
use parley_protocol::rest::{
    CreateChannelRequest, DmRequest, LoginRequest, MediaRequest, ReadRequest, RegisterRequest,
    SendMessageRequest,
};
use parley_protocol::ws::{ClientFrame, ClientOp, parse_client_frame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

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

pub(crate) fn check_ws_frame(input: &[u8]) {
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

pub(crate) fn check_rest_body(input: &[u8]) {
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
