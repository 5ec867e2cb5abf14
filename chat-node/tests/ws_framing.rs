//! The node's own WebSocket layer (RFC 6455, server side) over a real socket, byte by byte:
//! the opening handshake and its refusals, pings, the close handshake, and the close codes
//! of broken framing. The client here is raw TCP, so it can send what no library would.

mod common;

use std::time::Duration;

use common::TestNode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);
/// RFC 6455 §1.3's example key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn addr(node: &TestNode) -> String {
    node.base.trim_start_matches("http://").to_owned()
}

/// Sends an upgrade request with `headers` and returns the connection and the response
/// head.
async fn request(node: &TestNode, headers: &[(&str, &str)]) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr(node)).await.unwrap();
    let mut req = format!("GET /v1/ws HTTP/1.1\r\nHost: {}\r\n", addr(node));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("a response in time")
            .unwrap();
        assert_eq!(n, 1, "the connection closed in the response head");
        head.push(byte[0]);
    }
    (tcp, String::from_utf8(head).unwrap())
}

/// An upgraded connection.
async fn open(node: &TestNode) -> TcpStream {
    let (tcp, head) = request(
        node,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", KEY),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// A client frame: FIN set, masked unless `unmasked`.
fn frame(opcode: u8, payload: &[u8], unmasked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if unmasked { 0 } else { 0x80 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if unmasked {
        f.extend_from_slice(payload);
    } else {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    }
    f
}

/// Reads one server frame: (opcode, payload). Server frames are unmasked and final.
async fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(WAIT, async {
        let mut head = [0u8; 2];
        tcp.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0] & 0xF0, 0x80, "a final frame without reserved bits");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                tcp.read_exact(&mut b).await.unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                tcp.read_exact(&mut b).await.unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        tcp.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x0F, payload)
    })
    .await
    .expect("a frame in time")
}

/// Reads frames until a close frame; returns its code.
async fn close_code(tcp: &mut TcpStream) -> u16 {
    loop {
        let (op, payload) = read_frame(tcp).await;
        if op == 0x8 {
            assert!(payload.len() >= 2, "a close frame with a code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn the_opening_handshake_is_answered_with_its_accept_key() {
    let node = TestNode::start().await;
    let (_tcp, head) = request(
        &node,
        &[
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "WebSocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", KEY),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains(&format!(
            "sec-websocket-accept: {}",
            ACCEPT.to_ascii_lowercase()
        )),
        "{head}"
    );
}

#[tokio::test]
async fn a_request_that_is_not_a_handshake_gets_400() {
    let node = TestNode::start().await;
    let (_tcp, head) = request(
        &node,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "8"),
            ("Sec-WebSocket-Key", KEY),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "the versions spoken are named: {head}"
    );
    let (_tcp, head) = request(
        &node,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "no key: {head}");
    let (_tcp, head) = request(&node, &[]).await;
    assert!(head.starts_with("HTTP/1.1 400"), "no upgrade: {head}");
}

#[tokio::test]
async fn a_ping_gets_its_pong_and_a_close_its_echo() {
    let node = TestNode::start().await;
    let mut tcp = open(&node).await;
    tcp.write_all(&frame(0x9, b"are you there", false))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut tcp).await, (0xA, b"are you there".to_vec()));
    let mut close = 4321u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    tcp.write_all(&frame(0x8, &close, false)).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 4321, "the code is echoed");
    // Then the node closes the connection.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the node closes after the close handshake")
        .unwrap();
    assert_eq!(n, 0, "nothing after the close frame");
}

#[tokio::test]
async fn broken_framing_gets_1002() {
    let node = TestNode::start().await;
    // A client frame must be masked (RFC 6455 §5.1).
    let mut tcp = open(&node).await;
    tcp.write_all(&frame(0x1, b"{}", true)).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1002);
    // A reserved opcode.
    let mut tcp = open(&node).await;
    tcp.write_all(&frame(0x3, b"", false)).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1002);
    // A continuation with no message begun.
    let mut tcp = open(&node).await;
    tcp.write_all(&frame(0x0, b"x", false)).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1002);
}

#[tokio::test]
async fn text_that_is_not_utf8_gets_1007() {
    let node = TestNode::start().await;
    let mut tcp = open(&node).await;
    tcp.write_all(&frame(0x1, &[0xC3, 0x28], false))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, 1007);
}

#[tokio::test]
async fn a_frame_declared_past_the_cap_gets_1009_without_its_payload() {
    let node = TestNode::start().await;
    let mut tcp = open(&node).await;
    // The header of a 2^40-byte text frame, and nothing of its payload.
    let mut head = vec![0x81, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 40).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&head).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1009);
}
