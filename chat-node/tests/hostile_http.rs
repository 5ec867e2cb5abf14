//! Hostile HTTP clients against a real embedded node: connections that send nothing, send
//! their headers or body a byte at a time, sit idle, or come in too great a number are
//! closed within their bounds (`PARLEY_HTTP_*`), and the node keeps answering others.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Generous: many times every timeout the tests set, so a loaded machine does not fail them.
const BOUND: Duration = Duration::from_secs(15);

fn addr(node: &TestNode) -> String {
    node.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (EOF or reset); `None` if it is still open
/// after `wait`. Returns what was read.
async fn read_until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    wait: Duration,
) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz(node: &TestNode) -> u16 {
    reqwest::get(format!("{}/healthz", node.base))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let node = TestNode::with(|c| c.http.http_header_timeout = Duration::from_millis(500)).await;
    let mut silent = TcpStream::connect(addr(&node)).await.unwrap();
    let started = Instant::now();
    let got = read_until_closed(&mut silent, BOUND).await;
    assert!(
        got.is_some(),
        "a silent connection was still open after {BOUND:?}"
    );
    println!("closed after {:?}", started.elapsed());
    assert_eq!(healthz(&node).await, 200);
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_timeout() {
    let node = TestNode::with(|c| c.http.http_header_timeout = Duration::from_millis(1000)).await;
    let stream = TcpStream::connect(addr(&node)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // A request head that never ends: one byte every 100 ms, well inside any idle bound.
    let trickle = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let got = read_until_closed(&mut read, BOUND).await;
    trickle.abort();
    let got = got.expect("a request head trickled for the whole bound and was still read");
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "the endless head was answered: {}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(healthz(&node).await, 200);
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_off_at_the_body_timeout() {
    let node = TestNode::with(|c| {
        c.http.http_body_timeout = Duration::from_millis(1000);
        c.http.http_body_min_rate = 1024;
    })
    .await;
    let stream = TcpStream::connect(addr(&node)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // A login whose 1000-byte body comes at 10 bytes per second (it would take 100 s).
    let trickle = tokio::spawn(async move {
        let head = "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 1000\r\n\r\n";
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..1000 {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let got = read_until_closed(&mut read, BOUND).await;
    trickle.abort();
    let got = got.expect("a trickling body kept its connection for the whole bound");
    println!(
        "answer: {}",
        String::from_utf8_lossy(&got).lines().next().unwrap_or("")
    );
    assert_eq!(healthz(&node).await, 200);
}

#[tokio::test]
async fn a_kept_alive_connection_waits_the_idle_timeout_for_its_next_request() {
    let node = TestNode::with(|c| {
        c.http.http_header_timeout = Duration::from_millis(300);
        c.http.http_idle_timeout = Duration::from_millis(3000);
    })
    .await;
    let mut conn = TcpStream::connect(addr(&node)).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = [0u8; 4096];
    for round in 0..2 {
        conn.write_all(request).await.unwrap();
        let n = tokio::time::timeout(BOUND, conn.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "round {round}: {answer}"
        );
        // Between requests the idle timeout (3 s) applies, not the header timeout (300 ms).
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let got = read_until_closed(&mut conn, BOUND).await;
    assert!(
        got.is_some(),
        "an idle kept-alive connection was still open after {BOUND:?}"
    );
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    const CAP: usize = 3;
    let node = TestNode::with(|c| c.http.http_max_connections_per_address = CAP as u32).await;
    // A WebSocket counts as long as it is open (this one has not said hello yet: it has
    // 10 s to do so).
    let ws = common::Ws::open(&format!("ws://{}/v1/ws", addr(&node))).await;
    let mut held = Vec::new();
    for _ in 1..CAP {
        held.push(TcpStream::connect(addr(&node)).await.unwrap());
    }
    // The next one is accepted by the kernel and closed by the node before any byte.
    let mut over = TcpStream::connect(addr(&node)).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = read_until_closed(&mut over, BOUND)
        .await
        .expect("the connection over the cap was kept open");
    assert!(
        got.is_empty(),
        "it was answered: {}",
        String::from_utf8_lossy(&got)
    );
    // Closing one (the WebSocket) makes room again.
    ws.close().await;
    let deadline = Instant::now() + BOUND;
    while healthz(&node).await != 200 {
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
}

#[tokio::test]
async fn connections_over_the_total_cap_are_closed_at_once() {
    const CAP: usize = 4;
    let node = TestNode::with(|c| c.http.http_max_connections = CAP as u32).await;
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(addr(&node)).await.unwrap());
    }
    let mut over = TcpStream::connect(addr(&node)).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = read_until_closed(&mut over, BOUND)
        .await
        .expect("the connection over the cap was kept open");
    assert!(
        got.is_empty(),
        "it was answered: {}",
        String::from_utf8_lossy(&got)
    );
    held.pop();
    let deadline = Instant::now() + BOUND;
    while healthz(&node).await != 200 {
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
