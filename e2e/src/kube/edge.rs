//! A protocol client that reaches the chat-nodes only through the edge (the ingress
//! controller): every request and WebSocket carries the Ingress's `Host`, and every failure
//! is an error value, not a panic, so the scenario can retry and report.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A WebSocket through the edge.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one REST request or WebSocket handshake may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The edge's base URL and the `Host` its Ingress routes.
#[derive(Debug, Clone)]
pub struct Edge {
    base: String,
    host: Option<String>,
    http: reqwest::Client,
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub id: u64,
    pub token: String,
}

/// What the socket gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A server frame `{t, ref?, d}`.
    Json(Value),
    /// The close, with its code when the server sent one; also a reset or an end of stream.
    Closed(Option<u16>),
}

/// A message ID from a JSON string (`"123"`).
pub fn id(v: &Value) -> Result<u64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an ID: {v}"))
}

impl Edge {
    /// `base` as `http://127.0.0.1:18080`; `host` the Ingress host (none: the URL's).
    pub fn new(base: &str, host: Option<&str>) -> Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            host: host.filter(|h| !h.is_empty()).map(str::to_owned),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .context("HTTP client")?,
        })
    }

    /// A request; answers status and JSON body (`Null` when empty).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(h) = &self.host {
            req = req.header(reqwest::header::HOST, h);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {url} (Host {:?})", self.host))?;
        let status = res.status().as_u16();
        let body = crate::client::body_of(res.text().await.unwrap_or_default());
        Ok((status, body))
    }

    /// A request that must answer `want`; returns the body.
    pub async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        want: u16,
    ) -> Result<Value> {
        let (status, reply) = self.request(method.clone(), path, token, body).await?;
        if status != want {
            bail!("{method} {path} through the edge answered {status}, wanted {want}: {reply}");
        }
        Ok(reply)
    }

    /// Registers `username` (password `password-<username>`).
    pub async fn register(&self, username: &str) -> Result<User> {
        let body = json!({"username": username, "password": format!("password-{username}")});
        let r = self
            .expect(
                reqwest::Method::POST,
                "/v1/auth/register",
                None,
                Some(&body),
                201,
            )
            .await?;
        Ok(User {
            username: username.to_owned(),
            id: id(&r["user"]["id"])?,
            token: r["token"]
                .as_str()
                .context("register answered no token")?
                .to_owned(),
        })
    }

    /// Opens a WebSocket to `/v1/ws`, says hello (resuming after `resume_after`) and returns
    /// the socket and the `ready` frame's `d`.
    pub async fn connect(&self, token: &str, resume_after: Option<u64>) -> Result<(Socket, Value)> {
        let url = format!("{}/v1/ws", self.base.replacen("http", "ws", 1));
        let mut req = url
            .as_str()
            .into_client_request()
            .with_context(|| format!("WebSocket URL {url}"))?;
        if let Some(h) = &self.host {
            req.headers_mut()
                .insert("Host", HeaderValue::from_str(h).context("Host header")?);
        }
        let (mut ws, _) =
            tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(req))
                .await
                .map_err(|_| anyhow!("WebSocket handshake with {url} timed out"))?
                .with_context(|| format!("WebSocket handshake with {url}"))?;
        let mut d = json!({"token": token});
        if let Some(after) = resume_after {
            d["resume_after"] = json!(after.to_string());
        }
        send_op(&mut ws, "hello", "hello", d).await?;
        match next_frame(&mut ws, REQUEST_TIMEOUT).await? {
            Frame::Json(f) if f["t"] == "ready" => Ok((ws, f["d"].clone())),
            other => bail!("hello through the edge got {other:?}, not ready"),
        }
    }
}

/// Sends `{"op", "ref", "d"}`.
pub async fn send_op(ws: &mut Socket, op: &str, r#ref: &str, d: Value) -> Result<()> {
    let frame = json!({"op": op, "ref": r#ref, "d": d}).to_string();
    ws.send(Message::Text(frame.into()))
        .await
        .with_context(|| format!("sending {op} on the WebSocket"))
}

/// The next text frame or the close, within `wait` (an error when nothing came).
pub async fn next_frame(ws: &mut Socket, wait: Duration) -> Result<Frame> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no frame within {wait:?}"))?;
        if let Some(f) = frame_of(msg) {
            return Ok(f);
        }
    }
}

/// What a read from the socket means: `None` for frames the scenario skips (binary, pings).
pub fn frame_of(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Option<Frame> {
    match msg {
        None | Some(Err(_)) => Some(Frame::Closed(None)),
        Some(Ok(Message::Text(t))) => Some(
            serde_json::from_str(&t)
                .map(Frame::Json)
                .unwrap_or_else(|_| Frame::Json(json!({"t": "unparsable", "d": t.to_string()}))),
        ),
        Some(Ok(Message::Close(c))) => Some(Frame::Closed(c.map(|c| c.code.into()))),
        Some(Ok(_)) => None,
    }
}

/// The reply to `ref` (`ok`, `error`, `pong`), skipping events; `events` collects them.
pub async fn reply(
    ws: &mut Socket,
    r#ref: &str,
    wait: Duration,
    events: &mut Vec<Value>,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left)
            .await
            .with_context(|| format!("waiting for the reply to {ref}"))?
        {
            Frame::Json(f) if f["ref"] == r#ref => return Ok(f),
            Frame::Json(f) => events.push(f),
            Frame::Closed(code) => bail!("the socket closed ({code:?}) before the reply to {ref}"),
        }
    }
}

/// The first event of type `t` matching `pred` among `seen` or arriving within `wait`.
pub async fn event(
    ws: &mut Socket,
    t: &str,
    wait: Duration,
    seen: &mut Vec<Value>,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    if let Some(i) = seen.iter().position(|f| f["t"] == t && pred(&f["d"])) {
        return Ok(seen.remove(i));
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left)
            .await
            .with_context(|| format!("waiting for a {t} event"))?
        {
            Frame::Json(f) if f["t"] == t && pred(&f["d"]) => return Ok(f),
            Frame::Json(f) => seen.push(f),
            Frame::Closed(code) => bail!("the socket closed ({code:?}) while waiting for {t}"),
        }
    }
}
