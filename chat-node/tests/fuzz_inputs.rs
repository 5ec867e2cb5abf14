//! Fuzz targets of the node's own decoders (see `fuzz/harness.rs` for how they run):
//! - `jwt`: session tokens into a user (`auth::Tokens::verify`);
//! - `moderation`: text into the normalized form the word filter scans
//!   (`moderation::normalize_with_origin`) and the filter's verdict (`Moderator::check`);
//! - `rest_query`: query strings of `GET /v1/channels/{id}/messages` and `GET /v1/sync`.
//!
//! Properties: nothing panics; `verify` answers a user only for a token signed with the
//! node's secret, with alg HS256, the node's issuer and audience, a subject that is that
//! user's ID and an expiry not past; a token changed anywhere never verifies as another
//! user; normalization is idempotent, its offset map has one in-bounds char boundary per
//! byte and never goes back, and its text has no invisible characters, uppercase ASCII,
//! look-alike digits or whitespace runs; masking keeps every character it does not star;
//! `reject` refuses exactly what `mask` would star; a listed word stays found whatever
//! text comes before it; every ID a query parses is within `0..=i64::MAX`.

#[path = "../../fuzz/harness.rs"]
mod harness;

use chat_node::auth::{AUDIENCE, ISSUER, Tokens};
use chat_node::moderation::{Moderator, Policy, Verdict, normalize, normalize_with_origin};
use hmac::{Hmac, Mac};
use parley_protocol::rest::{HistoryQuery, SyncQuery};
use parley_protocol::{Id, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

const DIR: &str = env!("CARGO_MANIFEST_DIR");
const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123456789";

// ---- jwt ---------------------------------------------------------------------------------

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unb64url(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

/// `header.payload.signature`, signed with HS256 and `SECRET`.
fn sign(header: &str, payload: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&mac.finalize().into_bytes()))
}

fn segment(token: &str, i: usize) -> Option<Value> {
    serde_json::from_slice(&unb64url(token.split('.').nth(i)?)?).ok()
}

/// Whether a token of `header` and `payload` (their exact text), signed with the node's
/// secret, is one the node must accept: plain JSON as a client library writes it (no
/// duplicate keys, no extra claims), alg HS256, the node's issuer and audience, an ID as
/// subject, integer times and an expiry well ahead.
fn acceptable(header: &str, payload: &str, now: i64) -> bool {
    let (Ok(h), Ok(c)) = (
        serde_json::from_str::<Value>(header),
        serde_json::from_str::<Value>(payload),
    ) else {
        return false;
    };
    let keys_within = |v: &Value, allowed: &[&str]| {
        v.as_object()
            .is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str())))
    };
    let canonical = |v: &Value, text: &str| serde_json::to_string(v).is_ok_and(|s| s == text);
    canonical(&h, header)
        && canonical(&c, payload)
        && keys_within(&h, &["alg", "typ"])
        && keys_within(&c, &["sub", "iss", "aud", "iat", "exp"])
        && h["alg"] == "HS256"
        && (h["typ"].is_null() || h["typ"] == "JWT")
        && c["iss"] == ISSUER
        && c["aud"] == AUDIENCE
        && c["sub"].as_str().is_some_and(|s| s.parse::<Id>().is_ok())
        && c["iat"].as_i64().is_some()
        && c["exp"].as_i64().is_some_and(|e| e > now + 60)
}

/// The subject of verified claims is the ID answered.
fn subject_is(claims: &Value, id: Id, token: &str) {
    let sub = claims["sub"].as_str().and_then(|s| s.parse::<Id>().ok());
    assert_eq!(sub, Some(id), "{token:?} verified as {id}");
}

/// Input: a mode byte, then
/// - 0: a token as text;
/// - 1: `header JSON \n claims JSON`, signed with the node's secret;
/// - 2: edits `(position, byte)` pairs applied to a fresh token of user 42.
fn check_jwt(input: &[u8]) {
    let tokens = Tokens::new(SECRET, 3600);
    let now = Timestamp::now().unix_millis() / 1000;
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            if let Ok(id) = tokens.verify(&token) {
                let (header, claims) = (segment(&token, 0), segment(&token, 1));
                let (Some(header), Some(claims)) = (header, claims) else {
                    panic!("{token:?} verified as {id} without a readable header and claims");
                };
                assert_eq!(header["alg"], "HS256", "{token:?}");
                subject_is(&claims, id, &token);
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            let (header, payload) = text.split_once('\n').unwrap_or((&text, "{}"));
            let token = sign(header, payload);
            let parsed = (
                serde_json::from_str::<Value>(header),
                serde_json::from_str::<Value>(payload),
            );
            match tokens.verify(&token) {
                Ok(id) => {
                    let (Ok(h), Ok(c)) = parsed else {
                        // JSON allows numbers beyond f64, which serde_json's Value refuses;
                        // in a claim the node ignores (an unknown one) that is no fault.
                        if matches!(&parsed.1, Err(e) if e.to_string().contains("number out of range"))
                            && parsed.0.is_ok()
                        {
                            return;
                        }
                        panic!("{header:?} / {payload:?} verified as {id}");
                    };
                    assert_eq!(h["alg"], "HS256", "{header:?} verified");
                    subject_is(&c, id, &token);
                    assert_eq!((&c["iss"], &c["aud"]), (&json!(ISSUER), &json!(AUDIENCE)));
                    assert!(
                        c["exp"].as_f64().is_some_and(|e| e + 5.0 >= now as f64),
                        "{payload:?} expired"
                    );
                }
                Err(e) => assert!(
                    !acceptable(header, payload, now),
                    "{header:?} / {payload:?} refused: {e}"
                ),
            }
        }
        _ => {
            let token = tokens.issue(Id(42), Timestamp::now());
            let mut bytes = token.clone().into_bytes();
            for pair in rest.chunks(2) {
                let at = usize::from(pair[0]) * 7 % (bytes.len() + 1);
                match pair.get(1) {
                    Some(&b) if at < bytes.len() => bytes[at] = b,
                    Some(&b) => bytes.push(b),
                    None if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    None => {}
                }
            }
            let changed = String::from_utf8_lossy(&bytes);
            if let Ok(id) = tokens.verify(&changed) {
                assert_eq!(
                    id,
                    Id(42),
                    "{token} changed to {changed:?} verified as {id}"
                );
            }
        }
    }
}

fn jwt_inputs() -> BoxedStrategy<Vec<u8>> {
    let alg =
        proptest::sample::select(&["HS256", "none", "None", "HS512", "RS256", "hs256", ""][..]);
    let sub = prop_oneof![
        any::<u64>().prop_map(|n| json!(n.to_string())),
        Just(json!("9223372036854775808")),
        Just(json!("-1")),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,8}".prop_map(|s| json!(s)),
    ];
    let exp = prop_oneof![
        Just(json!(i64::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(-1)),
        Just(json!("4102444800")),
        (0i64..8_000_000_000).prop_map(|n| json!(n)),
        Just(Value::Null),
    ];
    let who = proptest::sample::select(&[ISSUER, AUDIENCE, "evil", ""][..]);
    (alg, sub, exp, who.clone(), who, any::<bool>())
        .prop_map(|(alg, sub, exp, iss, aud, array_aud)| {
            let header = json!({"alg": alg, "typ": "JWT"});
            let aud = if array_aud { json!([aud]) } else { json!(aud) };
            let claims = json!({"sub": sub, "iss": iss, "aud": aud, "iat": 0, "exp": exp});
            let mut v = vec![1u8];
            v.extend(format!("{header}\n{claims}").into_bytes());
            v
        })
        .boxed()
}

// ---- moderation --------------------------------------------------------------------------

const WORDS: &str = "shit\nbad word\n";

/// Input: an extra listed word on the first line (when there are two), then the text.
fn check_moderation(input: &[u8]) {
    let all = String::from_utf8_lossy(input);
    let (extra, text) = match all.split_once('\n') {
        Some((w, t)) if w.chars().count() <= 32 => (w, t),
        _ => ("", all.as_ref()),
    };
    let n = normalize_with_origin(text);
    assert_eq!(n.origin.len(), n.text.len(), "{text:?}");
    for (i, w) in n.origin.windows(2).enumerate() {
        assert!(
            w[0] <= w[1],
            "origin goes back at byte {i} of {:?} from {text:?}",
            n.text
        );
    }
    for &o in &n.origin {
        assert!(
            o < text.len() && text.is_char_boundary(o),
            "origin {o} in {text:?}"
        );
    }
    assert_eq!(normalize(&n.text), n.text, "normalizing {text:?} twice");
    assert!(
        !n.text.contains("  "),
        "a whitespace run in {:?} from {text:?}",
        n.text
    );
    for c in n.text.chars() {
        assert!(
            !(c.is_ascii_uppercase() || "013457@$".contains(c) || (c.is_whitespace() && c != ' ')),
            "{c:?} in {:?} from {text:?}",
            n.text
        );
    }

    let list = format!("{WORDS}{extra}\n");
    let mask = Moderator::from_list(Policy::Mask, &list).check(text);
    let reject = Moderator::from_list(Policy::Reject, &list).check(text);
    match &mask {
        Verdict::Clean => assert_eq!(reject, Verdict::Clean, "{text:?}"),
        Verdict::Masked(m) => {
            assert_eq!(reject, Verdict::Rejected, "{text:?}");
            assert_eq!(
                m.chars().count(),
                text.chars().count(),
                "{text:?} masked as {m:?}"
            );
            for (a, b) in text.chars().zip(m.chars()) {
                assert!(a == b || b == '*', "{text:?} masked as {m:?}");
            }
            assert_ne!(m.as_str(), text, "masked yet unchanged");
        }
        Verdict::Rejected => panic!("policy mask rejected {text:?}"),
    }
    let after = format!("{text} shit ");
    assert_ne!(
        Moderator::from_list(Policy::Mask, &list).check(&after),
        Verdict::Clean,
        "a listed word after {text:?} was not found"
    );
}

const TEXT_PIECES: &[&str] = &[
    "shit",
    "SHIT",
    "sh\u{200b}it",
    "s\u{00ad}hit",
    "\u{0455}hit",
    "$h1t",
    "5hit",
    "sh\u{2060}it",
    "bad word",
    "bad  word",
    "bad\t\nword",
    "bad\u{200b} word",
    "\u{feff}",
    " ",
    "  ",
    "\t",
    "\n",
    "\u{3000}",
    "\u{00a0}",
    "a",
    "z",
    "0",
    "1",
    "3",
    "4",
    "5",
    "7",
    "@",
    "$",
    "\u{00df}",
    "\u{1e9e}",
    "\u{0130}",
    "\u{fb01}",
    "\u{01c4}",
    "\u{0301}",
    "\u{fe0f}",
    "\u{202e}",
    "\u{03da}",
    "\u{ab53}",
    "\u{ff33}\u{ff28}\u{ff29}\u{ff34}",
    "\u{1d42c}",
    "\u{2126}",
    "\u{212a}",
    "\u{0345}",
    "\u{1f600}",
    "\u{e0001}",
    "\u{10ffff}",
    "\u{0627}\u{0644}",
    "\u{0915}\u{094d}",
];

// ---- rest_query --------------------------------------------------------------------------

fn check_rest_query(input: &[u8]) {
    if let Ok(q) = serde_urlencoded::from_bytes::<HistoryQuery>(input) {
        for id in q.before.into_iter().chain(q.after) {
            assert!(
                id <= Id::MAX,
                "{id} from {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
    if let Ok(SyncQuery {
        after: Some(id), ..
    }) = serde_urlencoded::from_bytes(input)
    {
        assert!(
            id <= Id::MAX,
            "{id} from {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

const QUERY_PIECES: &[&str] = &[
    "before=",
    "after=",
    "limit=",
    "&",
    "=",
    "1",
    "0",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "%2B1",
    "%00",
    "%",
    "+",
    "4294967296",
    "after",
    "&&",
];

// ---- the tests ---------------------------------------------------------------------------

#[test]
fn jwt_corpus() {
    harness::replay(DIR, "jwt", check_jwt);
}

#[test]
fn jwt_fuzz() {
    let pieces = harness::text_of(&[".", "eyJ", "e30", "AAAA", "-", "_", "=", "\u{0}"], 40)
        .prop_map(|t| [vec![0u8], t].concat());
    let generated = prop_oneof![3 => jwt_inputs(), 1 => pieces].boxed();
    harness::fuzz(DIR, "jwt", check_jwt, generated);
}

#[test]
fn moderation_corpus() {
    harness::replay(DIR, "moderation", check_moderation);
}

#[test]
fn moderation_fuzz() {
    harness::fuzz(
        DIR,
        "moderation",
        check_moderation,
        harness::text_of(TEXT_PIECES, 24),
    );
}

#[test]
fn rest_query_corpus() {
    harness::replay(DIR, "rest_query", check_rest_query);
}

#[test]
fn rest_query_fuzz() {
    harness::fuzz(
        DIR,
        "rest_query",
        check_rest_query,
        harness::text_of(QUERY_PIECES, 16),
    );
}
