//! Who a request came from, behind trusted proxies (`X-Forwarded-For`).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client a request came from: `peer` (the TCP peer), unless `peer` is a trusted
/// proxy; then the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy
/// (entries to its left were written by the client or by untrusted hops and prove nothing).
/// Only the TCP peer counts when `trusted` is empty (the default). An entry that is not an
/// address stops the walk at the last trusted hop.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let trusts = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = peer.to_canonical();
    if !trusts(&peer) {
        return peer;
    }
    // Every X-Forwarded-For line, in order, split at commas; an unreadable line is garbage.
    let mut hops: Vec<Option<&str>> = Vec::new();
    for line in headers.get_all("x-forwarded-for") {
        match line.to_str() {
            Ok(text) => hops.extend(text.split(',').map(|h| Some(h.trim()))),
            Err(_) => hops.push(None),
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !trusts(&client) {
            break;
        }
        match hop.and_then(parse_hop) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`) or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(hop)
                .parse::<IpAddr>()
        })
        .ok()
        .map(|ip| ip.to_canonical())
}
