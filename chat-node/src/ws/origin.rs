//! The WebSocket Origin allow-list. A browser page may open a WebSocket when its whole
//! origin (scheme, host, port; default ports and case normalized) is the configured public
//! URL's (`PARLEY_PUBLIC_URL`) or one of `PARLEY_ALLOWED_ORIGINS`. Without a public URL, the
//! default one stands in: `http://<the address the connection reached>` (the concrete
//! `PARLEY_LISTEN`), and `http://localhost:<port>` when that address is a loopback one, so
//! the page a node serves itself on `http://127.0.0.1:8080` (or `localhost:8080`) works with
//! no setting. The `Host` header is never used: a page on a name that resolves to the node
//! (DNS rebinding) sends a matching `Host` and `Origin`. Clients without an Origin (CLIs,
//! mobile apps) are not browsers and are let through.

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// The ASCII serialization of `s`'s origin (`scheme://host[:port]`, lower-case, the
/// default port left out), for http(s) URLs; `None` for anything else (`null`, opaque).
fn origin_of(s: &str) -> Option<String> {
    let url = url::Url::parse(s.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The origins a node without `PARLEY_PUBLIC_URL` serves its page from, reached at `local`.
fn default_origins(local: SocketAddr) -> Vec<String> {
    let ip = local.ip().to_canonical();
    let local = SocketAddr::new(ip, local.port());
    let mut out: Vec<String> = origin_of(&format!("http://{local}")).into_iter().collect();
    if ip.is_loopback() {
        out.extend(origin_of(&format!("http://localhost:{}", local.port())));
    }
    out
}

/// `Ok` when the request carries no Origin or an allowed one; else `forbidden`.
/// `local` is the address the connection was accepted on.
pub(super) fn check(
    headers: &HeaderMap,
    allowed: &[String],
    public_url: Option<&str>,
    local: SocketAddr,
) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let raw = origin
        .to_str()
        .map_err(|_| ApiError::forbidden("unreadable Origin header"))?;
    let refused = || {
        ApiError::forbidden(format!(
            "origin {raw} is not allowed to open a WebSocket here \
             (PARLEY_PUBLIC_URL, PARLEY_ALLOWED_ORIGINS)"
        ))
    };
    if allowed.iter().any(|a| a.trim() == "*") {
        return Ok(());
    }
    let origin = origin_of(raw).ok_or_else(refused)?;
    let listed = allowed.iter().filter_map(|a| origin_of(a));
    let ok = match public_url {
        Some(p) => origin_of(p).into_iter().chain(listed).any(|a| a == origin),
        None => default_origins(local)
            .into_iter()
            .chain(listed)
            .any(|a| a == origin),
    };
    if ok { Ok(()) } else { Err(refused()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node reached at this address, behind nothing.
    const LOCAL: &str = "10.0.0.5:8080";

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h.insert(header::HOST, host.parse().unwrap());
        h
    }

    fn allowed_at(
        local: &str,
        origin: &str,
        host: &str,
        allow: &[&str],
        public: Option<&str>,
    ) -> bool {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        check(
            &headers(Some(origin), host),
            &allow,
            public,
            local.parse().unwrap(),
        )
        .is_ok()
    }

    /// Whether a browser page at `origin` may open a WebSocket on a node reached at
    /// [`LOCAL`], sending `host`.
    fn allowed(origin: &str, host: &str, allow: &[&str], public: Option<&str>) -> bool {
        allowed_at(LOCAL, origin, host, allow, public)
    }

    #[test]
    fn non_browsers_and_listed_origins_pass() {
        assert!(check(&headers(None, "n:8080"), &[], None, LOCAL.parse().unwrap()).is_ok());
        let list = ["https://chat.example.com"];
        assert!(allowed("https://chat.example.com/", "n:8080", &list, None));
        assert!(allowed("HTTPS://Chat.Example.com", "n:8080", &list, None));
        assert!(!allowed("https://evil.example", "n:8080", &list, None));
        assert!(allowed("https://evil.example", "n:8080", &["*"], None));
        assert!(allowed(
            "https://pub.example",
            "n:8080",
            &[],
            Some("https://pub.example")
        ));
    }

    #[test]
    fn the_whole_origin_is_compared_with_default_ports_normalized() {
        let public = Some("https://chat.example.com");
        // The default port is the same origin, written or not.
        assert!(allowed("https://chat.example.com:443", "x", &[], public));
        assert!(allowed(
            "http://n.example",
            "x",
            &["http://n.example:80"],
            None
        ));
        // Another scheme or port is another origin.
        assert!(!allowed(
            "http://chat.example.com",
            "chat.example.com",
            &[],
            public
        ));
        assert!(!allowed(
            "https://chat.example.com:8443",
            "chat.example.com:8443",
            &[],
            public
        ));
        assert!(!allowed(
            "https://n.example",
            "x",
            &["http://n.example"],
            None
        ));
        assert!(!allowed("null", "x", &[], public));
    }

    #[test]
    fn the_host_header_never_makes_an_origin_allowed() {
        // DNS rebinding: evil.example resolves to the node; the browser sends Host and
        // Origin alike.
        assert!(!allowed(
            "http://evil.example:8080",
            "evil.example:8080",
            &[],
            None
        ));
        assert!(!allowed(
            "https://evil.example:8080",
            "evil.example:8080",
            &[],
            None
        ));
        assert!(!allowed(
            "http://evil.example",
            "evil.example",
            &[],
            Some("https://chat.example.com")
        ));
    }

    #[test]
    fn without_a_public_url_the_address_reached_is_the_origin() {
        // The README's flow: the page at http://127.0.0.1:8080 (or localhost:8080).
        let at = "127.0.0.1:8080";
        assert!(allowed_at(
            at,
            "http://127.0.0.1:8080",
            "127.0.0.1:8080",
            &[],
            None
        ));
        assert!(allowed_at(
            at,
            "http://localhost:8080",
            "localhost:8080",
            &[],
            None
        ));
        assert!(!allowed_at(
            at,
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            &[],
            None
        ));
        assert!(!allowed_at(
            at,
            "http://127.0.0.1:8081",
            "127.0.0.1:8080",
            &[],
            None
        ));
        // localhost stands for loopback addresses only.
        assert!(allowed("http://10.0.0.5:8080", "10.0.0.5:8080", &[], None));
        assert!(!allowed(
            "http://localhost:8080",
            "localhost:8080",
            &[],
            None
        ));
        // IPv6 and IPv4-mapped addresses.
        assert!(allowed_at(
            "[::1]:9000",
            "http://[::1]:9000",
            "x",
            &[],
            None
        ));
        assert!(allowed_at(
            "[::1]:9000",
            "http://localhost:9000",
            "x",
            &[],
            None
        ));
        assert!(allowed_at(
            "[::ffff:127.0.0.1]:8080",
            "http://127.0.0.1:8080",
            "x",
            &[],
            None
        ));
        // A configured public URL replaces the default.
        assert!(!allowed_at(
            at,
            "http://127.0.0.1:8080",
            "x",
            &[],
            Some("https://chat.example.com")
        ));
    }
}
