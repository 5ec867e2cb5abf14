//! A protocol client for tests: REST through reqwest, WebSocket through tokio-tungstenite.
//! It speaks only PROTOCOL.md, so the same tests drive one node or a cluster.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use parley_protocol::Id;
use parley_protocol::ws::AnyServerFrame;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// The ID in a JSON string field.
pub fn id_of(v: &Value) -> Id {
    v.as_str()
        .unwrap_or_else(|| panic!("not an ID: {v}"))
        .parse()
        .unwrap_or_else(|_| panic!("not an ID: {v}"))
}

/// A response body as JSON: `Null` when empty, the text itself when it is not JSON.
pub fn body_of(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// How long a test waits for an expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// A REST answer: status and JSON body (`Value::Null` when there is none).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A REST client bound to a node's base URL and, once logged in, a token.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub user_id: Option<Id>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: None,
            user_id: None,
            http: reqwest::Client::new(),
        }
    }

    /// The same user against another node.
    pub fn on(&self, base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn finish(req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("request failed to send");
        let status = res.status().as_u16();
        let body = body_of(res.text().await.unwrap_or_default());
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::finish(self.auth(self.http.get(format!("{}{path}", self.base)))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        Self::finish(self.auth(self.http.post(format!("{}{path}", self.base)).json(body))).await
    }

    /// A raw request (bad bodies, other methods, headers).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .auth(self.http.request(method, format!("{}{path}", self.base)))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::finish(req).await
    }

    /// Registers `username` (password `password-<username>`) and keeps its token.
    pub async fn register(base: &str, username: &str) -> Self {
        let mut api = Self::new(base);
        let r = api
            .post("/v1/auth/register", &json!({"username": username, "password": format!("password-{username}"), "display_name": format!("{username} D.")}))
            .await;
        assert_eq!(r.status, 201, "register {username}: {:?}", r.body);
        api.token = Some(r.body["token"].as_str().unwrap().to_owned());
        api.user_id = Some(r.body["user"]["id"].as_str().unwrap().parse().unwrap());
        api
    }

    pub fn id(&self) -> Id {
        self.user_id.expect("logged in")
    }

    /// Creates a group and returns its id.
    pub async fn create_group(&self, name: &str) -> Id {
        let r = self.post("/v1/channels", &json!({"name": name})).await;
        assert_eq!(r.status, 201, "create {name}: {:?}", r.body);
        r.body["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn join(&self, channel: Id) {
        let r = self
            .post(&format!("/v1/channels/{channel}/join"), &json!({}))
            .await;
        assert_eq!(r.status, 200, "join: {:?}", r.body);
    }

    /// Sends over REST; returns the message.
    pub async fn send(&self, channel: Id, text: &str) -> Value {
        let r = self
            .post(
                &format!("/v1/channels/{channel}/messages"),
                &json!({"text": text}),
            )
            .await;
        assert_eq!(r.status, 201, "send: {:?}", r.body);
        r.body
    }

    /// A WebSocket URL for this node.
    pub fn ws_url(&self) -> String {
        format!("{}/v1/ws", self.base.replacen("http", "ws", 1))
    }

    /// Connects and says hello; the first frame the server answers with is `Err` when it is
    /// not `ready` (for instance `unavailable` while a failed node's channels move).
    pub async fn try_connect(
        &self,
        resume_after: Option<Id>,
    ) -> Result<(Ws, AnyServerFrame), String> {
        let (stream, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .map_err(|e| e.to_string())?;
        let mut ws = Ws::from_stream(stream);
        let mut d = json!({"token": self.token.clone().expect("logged in")});
        if let Some(after) = resume_after {
            d["resume_after"] = json!(after.to_string());
        }
        let hello = json!({"op": "hello", "ref": "hello", "d": d}).to_string();
        if !ws.send_raw(WsMessage::Text(hello.into())).await {
            return Err(format!("{:?}", Next::Closed(None)));
        }
        match ws.next_within(WAIT).await {
            Some(Next::Frame(t)) => {
                let f: AnyServerFrame = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if f.t == "ready" { Ok((ws, f)) } else { Err(t) }
            }
            other => Err(format!("{other:?}")),
        }
    }

    /// Connects a WebSocket and says hello; returns the socket and the `ready` frame.
    pub async fn connect(&self, resume_after: Option<Id>) -> (Ws, AnyServerFrame) {
        let mut ws = Ws::open(&self.ws_url()).await;
        let mut d = json!({"token": self.token.clone().expect("logged in")});
        if let Some(after) = resume_after {
            d["resume_after"] = json!(after.to_string());
        }
        ws.send_json(&json!({"op": "hello", "ref": "hello", "d": d}))
            .await;
        let ready = ws.next_frame().await;
        assert_eq!(ready.t, "ready", "{ready:?}");
        assert_eq!(ready.r#ref.as_deref(), Some("hello"));
        (ws, ready)
    }
}

/// What a socket got until the server closed it: the frames, the `after_ms` of a
/// `reconnect` event (v1.1, a draining node) and the close code.
#[derive(Debug, Clone, Default)]
pub struct Closed {
    pub frames: Vec<AnyServerFrame>,
    pub after_ms: Option<u64>,
    pub code: Option<u16>,
}

impl Api {
    /// Follows a drain (v1.1): waits `after_ms` (from the `reconnect` event), then connects
    /// with `resume_after`, retrying every 200 ms up to `wait` while the answer is not
    /// `ready` (channels moving answer `unavailable`). Returns the socket and `ready`.
    pub async fn reconnect_after(
        &self,
        after_ms: u64,
        resume_after: Option<Id>,
        wait: Duration,
    ) -> (Ws, AnyServerFrame) {
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.try_connect(resume_after).await {
                Ok(ok) => return ok,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "could not reconnect within {wait:?}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a socket got when the test asked for the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Frame(String),
    Closed(Option<u16>),
}

type Sink = Arc<tokio::sync::Mutex<futures_util::stream::SplitSink<Stream, WsMessage>>>;

/// A WebSocket connection.
#[derive(Debug)]
pub struct Ws {
    sink: Sink,
    stream: futures_util::stream::SplitStream<Stream>,
    /// The task pinging in the background, after [`Ws::keep_alive`].
    pinger: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Ws {
    fn drop(&mut self) {
        if let Some(p) = self.pinger.take() {
            p.abort();
        }
    }
}

impl Ws {
    fn from_stream(stream: Stream) -> Self {
        let (sink, stream) = stream.split();
        Self {
            sink: Arc::new(tokio::sync::Mutex::new(sink)),
            stream,
            pinger: None,
        }
    }

    pub async fn open(url: &str) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        Self::from_stream(stream)
    }

    /// Pings every `every` from a background task, as a real client does while it waits, so
    /// a test that leaves the socket unread for a while does not lose it to the heartbeat
    /// timeout (4002). The `pong`s carry no `ref`; [`Ws::expect`] and [`Ws::reply`] skip them.
    pub fn keep_alive(&mut self, every: Duration) {
        let sink = self.sink.clone();
        self.pinger = Some(tokio::spawn(async move {
            let ping = WsMessage::Text(json!({"op": "ping"}).to_string().into());
            loop {
                tokio::time::sleep(every).await;
                if sink.lock().await.send(ping.clone()).await.is_err() {
                    return;
                }
            }
        }));
    }

    pub async fn send_text(&mut self, text: &str) {
        self.sink
            .lock()
            .await
            .send(WsMessage::Text(text.into()))
            .await
            .expect("websocket send");
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_raw(&mut self, msg: WsMessage) -> bool {
        self.sink.lock().await.send(msg).await.is_ok()
    }

    /// `{"op", "ref", "d"}`.
    pub async fn op(&mut self, op: &str, r#ref: &str, d: Value) {
        self.send_json(&json!({"op": op, "ref": r#ref, "d": d}))
            .await;
    }

    /// The next text frame or the close, within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Next> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(m) => m,
            };
            match msg {
                None => return Some(Next::Closed(None)),
                Some(Ok(WsMessage::Text(t))) => return Some(Next::Frame(t.to_string())),
                Some(Ok(WsMessage::Close(frame))) => {
                    return Some(Next::Closed(frame.map(|f: CloseFrame| f.code.into())));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) => return Some(Next::Closed(None)),
            }
        }
    }

    /// The next frame, failing the test on a close or a timeout.
    pub async fn next_frame(&mut self) -> AnyServerFrame {
        match self.next_within(WAIT).await {
            Some(Next::Frame(t)) => {
                serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad frame {t}: {e}"))
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame of type `t`, skipping others (presence, typing, ...).
    pub async fn expect(&mut self, t: &str) -> AnyServerFrame {
        loop {
            let f = self.next_frame().await;
            if f.t == t {
                return f;
            }
        }
    }

    /// The reply with `ref` (`ok`, `error` or `pong`), skipping events.
    pub async fn reply(&mut self, r#ref: &str) -> AnyServerFrame {
        loop {
            let f = self.next_frame().await;
            if f.r#ref.as_deref() == Some(r#ref) {
                return f;
            }
        }
    }

    /// Waits for the server to close; returns the close code.
    pub async fn closed(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self
                .next_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                Some(Next::Closed(code)) => return code,
                Some(Next::Frame(_)) => continue,
                None => panic!("the server did not close the connection within {wait:?}"),
            }
        }
    }

    /// Reads until the server closes the connection (within `wait`), keeping every frame
    /// and the `after_ms` of a `reconnect` event.
    pub async fn until_closed(&mut self, wait: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Closed::default();
        loop {
            match self
                .next_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                Some(Next::Frame(t)) => {
                    let f: AnyServerFrame =
                        serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad frame {t}: {e}"));
                    if f.t == "reconnect" {
                        out.after_ms = f.d["after_ms"].as_u64();
                    }
                    out.frames.push(f);
                }
                Some(Next::Closed(code)) => {
                    out.code = code;
                    return out;
                }
                None => panic!("the server did not close the connection within {wait:?}"),
            }
        }
    }

    /// Frames that arrive within `wait` (none expected is a valid outcome).
    pub async fn drain(&mut self, wait: Duration) -> Vec<AnyServerFrame> {
        let mut out = Vec::new();
        while let Some(Next::Frame(t)) = self.next_within(wait).await {
            out.push(serde_json::from_str(&t).expect("json frame"));
        }
        out
    }

    pub async fn close(mut self) {
        if let Some(p) = self.pinger.take() {
            p.abort();
        }
        let _ = self.sink.lock().await.close().await;
        // Read until the server's close so the close handshake completes.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.stream.next().await.is_some() {}
        })
        .await;
    }
}
