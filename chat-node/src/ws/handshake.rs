//! The WebSocket opening handshake, server side (RFC 6455 §4.2): the checks of the
//! client's request and the `Sec-WebSocket-Accept` of the answer, without I/O.
//!
//! ```text
//!   GET /v1/ws  Connection: upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13,
//!               Sec-WebSocket-Key: base64 of 16 bytes
//!     ─► check ─► 101 Switching Protocols, Sec-WebSocket-Accept: base64(SHA-1(key ++ GUID))
//!           └──► 400 bad_request (version: with Sec-WebSocket-Version: 13, §4.4)
//! ```

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest as _, Sha1};

/// The GUID a server appends to the client's key (§1.3, §4.2.2 item 5.4).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version spoken (§4.1, §4.4).
pub(super) const VERSION: &str = "13";

/// Why a request is not a WebSocket opening handshake this server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No `Connection: upgrade` or no `Upgrade: websocket` (§4.2.1 items 3, 4).
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13 (§4.2.1 item 6; the answer lists 13, §4.4).
    Version,
    /// `Sec-WebSocket-Key` missing, or not the base64 of 16 bytes (§4.2.1 item 5).
    Key,
}

impl Refusal {
    /// What the client is told (in a `bad_request` error).
    pub(super) fn message(self) -> &'static str {
        match self {
            Self::NotAnUpgrade => {
                "not a WebSocket upgrade (Connection: upgrade and Upgrade: websocket)"
            }
            Self::Version => "Sec-WebSocket-Version must be 13",
            Self::Key => "Sec-WebSocket-Key must be the base64 of 16 bytes",
        }
    }
}

/// Checks the client's opening handshake (`GET` is the router's business) and returns the
/// `Sec-WebSocket-Accept` value to answer with.
pub(super) fn check(headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
    if !has_token(headers, &header::CONNECTION, "upgrade")
        || !has_token(headers, &header::UPGRADE, "websocket")
    {
        return Err(Refusal::NotAnUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != VERSION.as_bytes())
    {
        return Err(Refusal::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(Refusal::Key)?
        .as_bytes();
    match BASE64.decode(key) {
        Ok(nonce) if nonce.len() == 16 => Ok(accept(key)),
        _ => Err(Refusal::Key),
    }
}

/// `Sec-WebSocket-Accept` for `key` (as sent, base64): base64(SHA-1(key ++ GUID)) (§4.2.2
/// item 5.4).
pub(super) fn accept(key: &[u8]) -> HeaderValue {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    HeaderValue::from_str(&BASE64.encode(sha.finalize())).expect("base64 is a header value")
}

/// Whether any `name` header holds `token` in its comma-separated list, ignoring ASCII
/// case (RFC 9110 §5.6.1, §7.6.1, §7.8).
fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn the_rfc_example_key_gets_its_accept() {
        // RFC 6455 §1.3's example.
        assert_eq!(accept(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_browser_handshake_is_taken() {
        let h = request(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ]);
        assert_eq!(check(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        // The Connection tokens may come in separate fields.
        let h = request(&[
            ("connection", "keep-alive"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ]);
        assert!(check(&h).is_ok());
    }

    #[test]
    fn requests_that_are_not_a_handshake_are_refused() {
        let full = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ];
        for (drop, want) in [
            ("connection", Refusal::NotAnUpgrade),
            ("upgrade", Refusal::NotAnUpgrade),
            ("sec-websocket-version", Refusal::Version),
            ("sec-websocket-key", Refusal::Key),
        ] {
            let pairs: Vec<_> = full.iter().copied().filter(|(k, _)| *k != drop).collect();
            assert_eq!(check(&request(&pairs)), Err(want), "without {drop}");
        }
        let with = |k: &'static str, v: &'static str| {
            let pairs: Vec<_> = full
                .iter()
                .map(|&(name, value)| if name == k { (name, v) } else { (name, value) })
                .collect();
            check(&request(&pairs))
        };
        assert_eq!(with("upgrade", "h2c"), Err(Refusal::NotAnUpgrade));
        assert_eq!(with("connection", "upgraded"), Err(Refusal::NotAnUpgrade));
        assert_eq!(with("sec-websocket-version", "8"), Err(Refusal::Version));
        assert_eq!(with("sec-websocket-key", "not base64!"), Err(Refusal::Key));
        // Base64, but of 15 bytes.
        assert_eq!(
            with("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAA"),
            Err(Refusal::Key)
        );
    }
}
