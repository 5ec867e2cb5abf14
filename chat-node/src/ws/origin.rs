//! The WebSocket Origin allow-list: browsers may connect from the node's own origin, the
//! configured public URL, or an allowed origin; clients without an Origin (CLIs, mobile
//! apps) are not browsers and are let through.

use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// `scheme://host[:port]` without a trailing slash, lower-cased.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

pub(super) fn check(
    headers: &HeaderMap,
    allowed: &[String],
    public_url: Option<&str>,
) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = normalize(
        origin
            .to_str()
            .map_err(|_| ApiError::forbidden("unreadable Origin header"))?,
    );
    if allowed
        .iter()
        .any(|a| a.trim() == "*" || normalize(a) == origin)
    {
        return Ok(());
    }
    if public_url.is_some_and(|p| normalize(p) == origin) {
        return Ok(());
    }
    // Same origin: the Origin's host:port is the Host the request was sent to.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let origin_host = origin.split_once("://").map(|(_, h)| h.to_owned());
    if host.is_some() && host == origin_host {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "origin {origin} is not allowed to open a WebSocket here"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h.insert(header::HOST, host.parse().unwrap());
        h
    }

    #[test]
    fn same_origin_listed_origins_and_non_browsers_pass() {
        let allowed = vec!["https://chat.example.com".to_owned()];
        assert!(check(&headers(None, "n:8080"), &allowed, None).is_ok());
        assert!(check(&headers(Some("http://n:8080"), "n:8080"), &allowed, None).is_ok());
        assert!(
            check(
                &headers(Some("https://chat.example.com/"), "n:8080"),
                &allowed,
                None
            )
            .is_ok()
        );
        assert!(
            check(
                &headers(Some("https://pub.example"), "n:8080"),
                &[],
                Some("https://pub.example")
            )
            .is_ok()
        );
        assert!(
            check(
                &headers(Some("https://evil.example"), "n:8080"),
                &allowed,
                None
            )
            .is_err()
        );
        assert!(check(&headers(Some("http://n:8081"), "n:8080"), &allowed, None).is_err());
        assert!(
            check(
                &headers(Some("https://evil.example"), "n:8080"),
                &["*".to_owned()],
                None
            )
            .is_ok()
        );
    }
}
