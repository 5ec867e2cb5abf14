//! The server's pure parts: addresses behind trusted proxies.

use super::*;
use crate::config::parse_net;
use axum::http::HeaderMap;

fn xff(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append("x-forwarded-for", v.parse().unwrap());
    }
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let trusted = vec![
        parse_net("10.0.0.0/8").unwrap(),
        parse_net("192.0.2.7").unwrap(),
    ];
    let h = xff(&["198.51.100.1, 203.0.113.9"]);
    // An untrusted peer: its header is ignored.
    assert_eq!(
        client_addr(ip("203.0.113.50"), &h, &trusted),
        ip("203.0.113.50")
    );
    assert_eq!(client_addr(ip("203.0.113.50"), &h, &[]), ip("203.0.113.50"));
    // A trusted peer: the rightmost hop it reports.
    assert_eq!(client_addr(ip("10.1.2.3"), &h, &trusted), ip("203.0.113.9"));
    // Trusted hops on the right are skipped; a spoofed entry on the left is not reached.
    let h = xff(&["6.6.6.6, 198.51.100.1", "10.9.9.9"]);
    assert_eq!(
        client_addr(ip("192.0.2.7"), &h, &trusted),
        ip("198.51.100.1")
    );
    // Garbage stops the walk at the last trusted hop.
    let h = xff(&["198.51.100.1, not-an-ip"]);
    assert_eq!(client_addr(ip("10.1.2.3"), &h, &trusted), ip("10.1.2.3"));
    // No header: the peer.
    assert_eq!(
        client_addr(ip("10.1.2.3"), &HeaderMap::new(), &trusted),
        ip("10.1.2.3")
    );
    // Ports and IPv6 brackets, and IPv4-mapped peers.
    let h = xff(&["[2001:db8::1]:4711, 198.51.100.2:80"]);
    assert_eq!(
        client_addr(ip("::ffff:10.0.0.1"), &h, &trusted),
        ip("198.51.100.2")
    );
    let h = xff(&["2001:db8::1"]);
    assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::1"));
}

#[test]
fn trusted_proxies_parse_as_ranges_or_hosts() {
    assert_eq!(parse_net(" 10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
    assert!(parse_net("10.0.0.0/33").is_err());
    assert!(parse_net("proxy.local").is_err());
}

/// A waker that counts its clones alive through its `Arc`.
struct Counted;

impl std::task::Wake for Counted {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn an_upgrade_lets_go_of_the_connection_tasks_waker() {
    let state = ConnState::new(Duration::from_secs(1), Duration::from_secs(1));
    let task = Arc::new(Counted);
    let waker = std::task::Waker::from(task.clone());
    // hyper's task read while the upgrade request was served: its waker is kept, to be
    // woken when the connection turns idle.
    state.request_started();
    assert!(matches!(state.phase(), Phase::Busy));
    state.wait_for_reads(&waker);
    drop(waker);
    assert_eq!(Arc::strong_count(&task), 2);
    // Upgraded: the WebSocket holds this state for its whole life, and must not hold the
    // (finished) connection task with it.
    state.upgraded();
    assert_eq!(Arc::strong_count(&task), 1);
    assert!(matches!(state.phase(), Phase::Upgraded));
}
