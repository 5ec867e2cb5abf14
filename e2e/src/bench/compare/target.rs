//! What the scenarios need from a server: the [`Target`] trait (setup, an authenticated and
//! subscribed connection, a publish frame, reading frames) and the socket plumbing both
//! implementations share (source addresses, a small-buffered WebSocket).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A driver-side WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// How long a handshake (TCP, upgrade, authentication, subscription) may take.
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(30);

/// The users and rooms a scenario needs, created by [`Target::prepare`] (not measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Rooms (Parley: groups; Centrifugo: channels `r0`, `r1`, ...).
    pub rooms: usize,
    /// Distinct users per room; several connections of a room may share a user.
    pub users_per_room: usize,
    /// One more user per room that publishes (a member too).
    pub publishers: bool,
    /// Room 0 is a direct conversation of its two users (Parley: a DM; Centrifugo: a
    /// user-limited channel `dm#a,b`) instead of a group.
    pub dm: bool,
}

/// Who a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Connection `conn` of room `room`'s members; its user is `conn % users_per_room`.
    Member { room: usize, conn: usize },
    /// The publisher of room `room`.
    Publisher { room: usize },
}

impl Who {
    /// The room the connection is subscribed to.
    pub fn room(self) -> usize {
        match self {
            Who::Member { room, .. } | Who::Publisher { room } => room,
        }
    }
}

/// One received message, as a target reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A publication reached this connection; its payload's send timestamp (ns).
    Delivery { stamp: u64 },
    /// The answer to publish request `req` was a success.
    Ack { req: u64 },
    /// The answer to publish request `req` (when it could be read) was an error.
    Refused { req: Option<u64> },
    /// The server pings and expects this text back.
    Ping { reply: &'static str },
    /// Anything else, by kind (`presence`, `member_joined`, `pong`, `join`, ...).
    Other { kind: &'a str },
}

/// A server under test: Parley or Centrifugo, each speaking its own protocol.
#[async_trait::async_trait]
pub trait Target: Send + Sync + 'static {
    /// `parley` or `centrifugo`, as the JSONL records name it.
    fn system(&self) -> &'static str;

    /// Creates users, rooms and memberships for `plan` (setup, not measured).
    async fn prepare(&mut self, plan: Plan) -> anyhow::Result<()>;

    /// Opens a connection for `who` from source address `source`: authenticated and in
    /// its room (Parley: `hello` → `ready`; Centrifugo: `connect`, then `subscribe`).
    /// `resume`: reconnecting after a storm (Parley sends `resume_after` = the last
    /// message id; Centrifugo just connects again).
    async fn open(&self, who: Who, source: Ipv4Addr, resume: bool) -> anyhow::Result<Ws>;

    /// The text frame that publishes `payload` into `room` as request `req`.
    fn publish(&self, room: usize, req: u64, payload: &str) -> String;

    /// Reads one text frame, calling `on` for each message in it (Centrifugo may pack
    /// several). Deliveries are recognised by substring only.
    fn read(&self, frame: &str, on: &mut dyn FnMut(Event<'_>));

    /// A frame the client sends on its own to stay alive and how often (Parley: a `ping`
    /// op), or `None` when the server pings instead (Centrifugo).
    fn keepalive(&self) -> Option<(Duration, &'static str)>;
}

/// Connects to `addr` from `source` (port chosen by the kernel) and upgrades to a
/// WebSocket at `url`, with 4 KiB read buffers (tungstenite's default reserves 128 KiB per
/// connection) and no Nagle delay.
pub async fn dial(addr: SocketAddr, source: Ipv4Addr, url: &str) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    ws.send(Message::Text(text.into())).await?;
    Ok(())
}

/// The next text frame, within [`HANDSHAKE_WAIT`]; an error on a close or a timeout.
pub async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(HANDSHAKE_WAIT, ws.next()).await {
            Err(_) => anyhow::bail!("no answer within {HANDSHAKE_WAIT:?}"),
            Ok(None) => anyhow::bail!("the server closed the connection"),
            Ok(Some(Err(e))) => anyhow::bail!("{e}"),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(Message::Close(c)))) => anyhow::bail!("closed by the server: {c:?}"),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Source addresses to spread `conns` connections over: 127.0.0.1, 127.0.0.2, ... (all
/// loopback on Linux), one per 10,000 connections and at least 2, so that reconnect storms
/// do not run out of ephemeral ports (about 28,000 per source address) while the previous
/// storm's ports wait in TIME_WAIT.
pub fn sources(conns: usize) -> Vec<Ipv4Addr> {
    let n = conns.div_ceil(10_000).max(2);
    (1..=n as u8).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
}
