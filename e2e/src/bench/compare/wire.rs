//! The pure parts of the driver's wire handling: the payload it publishes (a send
//! timestamp padded to about 100 bytes), finding that timestamp again in a delivered frame
//! by substring (no JSON parsing on the delivery path), splitting Centrifugo's
//! newline-separated frames, and small field lookups.
//!
//! ```text
//!   payload   t=<nanoseconds since the driver started>;r=<room>;xxxxxxxx...   (PAYLOAD_BYTES)
//!   Parley    {"t":"message","d":{..."text":"t=123;r=0;xxx..."...}}
//!   Centrifugo {"push":{"channel":"r0","pub":{"data":{"text":"t=123;r=0;xxx..."}}}}
//! ```

/// Length of every published text, in bytes (the timestamp and room plus `x` padding).
pub const PAYLOAD_BYTES: usize = 100;

/// What precedes the timestamp in a frame: the opening quote of the text, then `t=`.
const STAMP_MARK: &str = "\"t=";

/// The text published at `stamp_ns` (nanoseconds since the driver's start) into `room`:
/// `t=<stamp_ns>;r=<room>;` padded with `x` to [`PAYLOAD_BYTES`] bytes. Plain ASCII, so it
/// needs no JSON escaping.
pub fn payload(stamp_ns: u64, room: usize) -> String {
    let mut s = format!("t={stamp_ns};r={room};");
    while s.len() < PAYLOAD_BYTES {
        s.push('x');
    }
    s
}

/// The send timestamp (nanoseconds) of the payload inside `frame`: the digits after the
/// first `"t=`, up to `;`. `None` when the frame carries no payload.
pub fn stamp(frame: &str) -> Option<u64> {
    let at = frame.find(STAMP_MARK)? + STAMP_MARK.len();
    let digits = &frame[at..];
    let end = digits.find(';')?;
    digits[..end].parse().ok()
}

/// The messages of one Centrifugo WebSocket frame: it may pack several JSON messages,
/// separated by `\n`. Empty lines are skipped, so the empty frame (a ping) yields nothing.
pub fn split_frames(frame: &str) -> impl Iterator<Item = &str> {
    frame.split('\n').filter(|l| !l.trim().is_empty())
}

/// The unsigned integer after `key` (which includes its quotes and colon, for instance
/// `"id":` or `"ref":"`) in `text`, or `None`.
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The string value after `key` (`"t":"` for instance) in `text`, up to the next quote.
pub fn str_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    Some(&rest[..rest.find('"')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_stamp_and_are_padded() {
        let p = payload(123_456_789, 7);
        assert_eq!(p.len(), PAYLOAD_BYTES);
        assert!(p.starts_with("t=123456789;r=7;x"));
        let parley = format!(r#"{{"t":"message","d":{{"id":"5","text":"{p}","seq":1}}}}"#);
        assert_eq!(stamp(&parley), Some(123_456_789));
        let centrifugo =
            format!(r#"{{"push":{{"channel":"r7","pub":{{"data":{{"text":"{p}"}}}}}}}}"#);
        assert_eq!(stamp(&centrifugo), Some(123_456_789));
        // The frame type field `"t":"message"` is not a stamp.
        assert_eq!(stamp(r#"{"t":"presence","d":{}}"#), None);
        assert_eq!(stamp(r#"{"text":"t=12"}"#), None);
    }

    #[test]
    fn centrifugo_frames_split_on_newlines() {
        let frame = "{\"id\":1,\"connect\":{}}\n{\"push\":{}}\n";
        assert_eq!(
            split_frames(frame).collect::<Vec<_>>(),
            ["{\"id\":1,\"connect\":{}}", "{\"push\":{}}"]
        );
        assert_eq!(split_frames("").count(), 0);
        assert_eq!(split_frames("{}").collect::<Vec<_>>(), ["{}"]);
    }

    #[test]
    fn fields_are_found_by_substring() {
        assert_eq!(
            number_after(r#"{"id":42,"publish":{}}"#, "\"id\":"),
            Some(42)
        );
        assert_eq!(
            number_after(r#"{"t":"ok","ref":"17","d":{}}"#, "\"ref\":\""),
            Some(17)
        );
        assert_eq!(number_after(r#"{"push":{}}"#, "\"id\":"), None);
        assert_eq!(
            str_after(r#"{"t":"presence","d":{}}"#, "\"t\":\""),
            Some("presence")
        );
    }
}
