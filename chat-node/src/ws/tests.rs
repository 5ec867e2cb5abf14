//! Sessions driven through channels: the client's frames go in through a `Stream`, the
//! server's come out of a `Sink`, over a real embedded node's chat service (SQLite in a
//! temporary directory) and no socket or HTTP server.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use futures_util::{Sink, Stream};
use parley_protocol::ws::{AnyServerFrame, ClientOp, Hello, Pong, close, event};
use parley_protocol::{Id, Timestamp};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{PollSendError, PollSender};

use super::ops::{self, Caller, Reply};
use super::session;
use super::stream::ReadError;
use crate::config::Config;
use crate::error::ApiError;
use crate::http::AppState;

/// How long a test waits for a frame that should come.
const WAIT: Duration = Duration::from_secs(10);

/// A node's chat service in a temporary directory, removed on drop.
struct Node {
    chat: AppState,
    dir: PathBuf,
}

impl Node {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "parley-ws-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let chat = crate::node::embedded(
            Config::for_tests(dir.clone()),
            "127.0.0.1:9".parse().unwrap(),
        )
        .await
        .unwrap();
        Self { chat, dir }
    }

    /// A registered user: their ID and a session token.
    async fn user(&self, name: &str) -> (Id, String) {
        let auth = self
            .chat
            .accounts()
            .register(name, "correct horse battery", None)
            .await
            .unwrap();
        (auth.user.id, auth.token)
    }

    /// A session on channels instead of a socket.
    fn connect(&self) -> Client {
        let (to_server, inbound) = mpsc::channel::<WsMessage>(16);
        let (outbound, from_server) = mpsc::channel::<WsMessage>(64);
        let io = Channels {
            inbound,
            outbound: PollSender::new(outbound),
        };
        let session = tokio::spawn(session::run(io, self.chat.clone()));
        Client {
            to_server: Some(to_server),
            from_server,
            session,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A session's transport on channels: what the client says comes in on `inbound`, what
/// the server writes goes out on `outbound`.
struct Channels {
    inbound: mpsc::Receiver<WsMessage>,
    outbound: PollSender<WsMessage>,
}

impl Stream for Channels {
    type Item = Result<WsMessage, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbound.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<WsMessage> for Channels {
    type Error = PollSendError<WsMessage>;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outbound).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        Pin::new(&mut self.outbound).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outbound).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outbound).poll_close(cx)
    }
}

/// The client's ends of a session's channels.
struct Client {
    /// `None` once the client went away.
    to_server: Option<mpsc::Sender<WsMessage>>,
    from_server: mpsc::Receiver<WsMessage>,
    session: JoinHandle<()>,
}

impl Client {
    async fn say(&self, text: &str) {
        let tx = self.to_server.as_ref().expect("the client is connected");
        tx.send(WsMessage::Text(text.into())).await.unwrap();
    }

    /// The next thing the server writes.
    async fn next(&mut self) -> WsMessage {
        tokio::time::timeout(WAIT, self.from_server.recv())
            .await
            .expect("the server answers in time")
            .expect("the session writes")
    }

    /// The next server frame; panics on anything but a text frame.
    async fn frame(&mut self) -> AnyServerFrame {
        match self.next().await {
            WsMessage::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame of type `t`, skipping events of other types.
    async fn until(&mut self, t: &str) -> AnyServerFrame {
        loop {
            let f = self.frame().await;
            if f.t == t {
                return f;
            }
        }
    }

    /// The close code the server ends with (text frames before it are skipped).
    async fn closed(&mut self) -> u16 {
        loop {
            if let WsMessage::Close(frame) = self.next().await {
                return frame.expect("a close code").code;
            }
        }
    }

    /// Says hello with `token`; returns `ready`.
    async fn hello(&mut self, token: &str) -> AnyServerFrame {
        self.say(&format!(
            r#"{{"op":"hello","ref":"h","d":{{"token":"{token}"}}}}"#
        ))
        .await;
        let ready = self.frame().await;
        assert_eq!(ready.t, event::READY, "{ready:?}");
        ready
    }

    /// Goes away; waits until the session has ended.
    async fn leave(mut self) {
        self.to_server = None;
        tokio::time::timeout(WAIT, self.session)
            .await
            .expect("the session ends when its client goes")
            .unwrap();
    }
}

#[tokio::test]
async fn hello_gets_ready_with_the_users_channels() {
    let node = Node::start().await;
    let (ann, token) = node.user("ann").await;
    let room = node
        .chat
        .channels()
        .create_group(ann, "room")
        .await
        .unwrap();
    let mut c = node.connect();
    let ready = c.hello(&token).await;
    assert_eq!(ready.r#ref.as_deref(), Some("h"));
    assert_eq!(ready.d["user_id"], ann.to_string());
    assert_eq!(ready.d["channels"][0]["id"], room.id.to_string());
    assert_eq!(ready.d["channels"][0]["last_seq"], 0);
    c.leave().await;
}

#[tokio::test]
async fn a_first_frame_that_is_no_hello_closes_with_4001() {
    let node = Node::start().await;
    let mut c = node.connect();
    c.say(r#"{"op":"ping","ref":"p"}"#).await;
    assert_eq!(c.closed().await, close::BAD_HELLO);
    let mut c = node.connect();
    c.say(r#"{"op":"hello","d":{"token":"not a token"}}"#).await;
    assert_eq!(c.closed().await, close::BAD_HELLO);
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_session_stays() {
    let node = Node::start().await;
    let (_, token) = node.user("ann").await;
    let mut c = node.connect();
    c.hello(&token).await;
    c.say("not json").await;
    let e = c.frame().await;
    assert_eq!((e.t.as_str(), e.r#ref.as_deref()), (event::ERROR, None));
    assert_eq!(e.d["code"], "bad_request");
    c.say(r#"{"op":"send","ref":"s","d":{"channel_id":7}}"#)
        .await;
    let e = c.frame().await;
    assert_eq!(
        (e.t.as_str(), e.r#ref.as_deref()),
        (event::ERROR, Some("s"))
    );
    // A second hello is an op error, not a new session.
    c.say(&format!(
        r#"{{"op":"hello","ref":"h2","d":{{"token":"{token}"}}}}"#
    ))
    .await;
    let e = c.frame().await;
    assert_eq!(
        (e.t.as_str(), e.r#ref.as_deref()),
        (event::ERROR, Some("h2"))
    );
    c.to_server
        .as_ref()
        .unwrap()
        .send(WsMessage::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let e = c.frame().await;
    assert_eq!(e.d["code"], "bad_request", "{e:?}");
    // Still open.
    c.say(r#"{"op":"ping","ref":"after"}"#).await;
    assert_eq!(c.frame().await.t, event::PONG);
    c.leave().await;
}

#[tokio::test]
async fn ping_gets_pong_with_or_without_a_ref() {
    let node = Node::start().await;
    let (_, token) = node.user("ann").await;
    let mut c = node.connect();
    c.hello(&token).await;
    c.say(r#"{"op":"ping","ref":"p1","d":{}}"#).await;
    let pong = c.frame().await;
    assert_eq!(
        (pong.t.as_str(), pong.r#ref.as_deref()),
        (event::PONG, Some("p1"))
    );
    assert!(pong.d["server_time"].is_string());
    c.say(r#"{"op":"ping"}"#).await;
    let pong = c.frame().await;
    assert_eq!(
        (pong.t.as_str(), pong.r#ref.as_deref()),
        (event::PONG, None)
    );
    c.leave().await;
}

#[tokio::test]
async fn an_unknown_op_gets_an_error_echoing_its_ref() {
    let node = Node::start().await;
    let (_, token) = node.user("ann").await;
    let mut c = node.connect();
    c.hello(&token).await;
    c.say(r#"{"op":"fly","ref":"r9","d":{}}"#).await;
    let e = c.frame().await;
    assert_eq!(
        (e.t.as_str(), e.r#ref.as_deref()),
        (event::ERROR, Some("r9"))
    );
    assert_eq!(e.d["code"], "bad_request");
    assert!(
        e.d["message"].as_str().unwrap().contains("unknown op"),
        "{e:?}"
    );
    c.leave().await;
}

#[tokio::test]
async fn a_send_gets_ok_with_its_ref_and_the_message_event_follows() {
    let node = Node::start().await;
    let (ann, token) = node.user("ann").await;
    let room = node
        .chat
        .channels()
        .create_group(ann, "room")
        .await
        .unwrap();
    let mut c = node.connect();
    c.hello(&token).await;
    c.say(&format!(
        r#"{{"op":"send","ref":"s1","d":{{"channel_id":"{}","text":" hi ","client_msg_id":"c1"}}}}"#,
        room.id
    ))
    .await;
    let ok = c.frame().await;
    assert_eq!(
        (ok.t.as_str(), ok.r#ref.as_deref()),
        (event::OK, Some("s1"))
    );
    let message = &ok.d["message"];
    assert_eq!(message["text"], "hi");
    assert_eq!(message["seq"], 1);
    assert_eq!(message["client_msg_id"], "c1");
    let live = c.until(event::MESSAGE).await;
    assert_eq!(live.d["id"], message["id"]);
    // Without a ref, an op that succeeds is not answered; errors always are.
    c.say(&format!(
        r#"{{"op":"typing","d":{{"channel_id":"{}"}}}}"#,
        room.id
    ))
    .await;
    c.say(r#"{"op":"typing","d":{"channel_id":"1"}}"#).await;
    let e = c.frame().await;
    assert_eq!(
        (e.t.as_str(), e.r#ref.as_deref()),
        (event::ERROR, None),
        "{e:?}"
    );
    c.leave().await;
}

#[tokio::test]
async fn a_draining_node_says_reconnect_and_closes_with_4010() {
    let node = Node::start().await;
    let _ = node.chat.lifecycle().drain().begin();
    let mut c = node.connect();
    let reconnect = c.frame().await;
    assert_eq!(reconnect.t, event::RECONNECT);
    assert!(reconnect.d["after_ms"].is_u64());
    assert_eq!(c.closed().await, close::NODE_DRAINING);
}

#[tokio::test]
async fn a_close_asked_for_by_the_hub_ends_the_session_with_its_code() {
    let node = Node::start().await;
    let (_, token) = node.user("ann").await;
    let mut c = node.connect();
    c.hello(&token).await;
    node.chat.hub().broadcast(&crate::hub::Outbound::Close(
        close::HEARTBEAT_EXPIRED,
        "heartbeat expired",
    ));
    assert_eq!(c.closed().await, close::HEARTBEAT_EXPIRED);
}

#[tokio::test]
async fn ops_dispatch_without_a_session() {
    let node = Node::start().await;
    let (ann, _) = node.user("ann").await;
    let room = node
        .chat
        .channels()
        .create_group(ann, "room")
        .await
        .unwrap();
    let caller = Caller {
        chat: &node.chat,
        user: ann,
        conn: 1,
    };
    let hello = ClientOp::Hello(Hello {
        token: String::new(),
        resume_after: None,
        presence_batch: false,
    });
    let e = ops::dispatch(caller, hello).await.unwrap_err();
    assert_eq!(e.code, parley_protocol::ErrorCode::BadRequest);
    let send = parley_protocol::ws::SendOp {
        channel_id: room.id,
        text: "hello".into(),
        client_msg_id: "k".into(),
        attachments: Vec::new(),
        reply_to: None,
    };
    let Ok(Reply::Sent(sent)) = ops::dispatch(caller, ClientOp::Send(send)).await else {
        panic!("a member's send succeeds");
    };
    assert_eq!(sent.message.text, "hello");
    let history = parley_protocol::ws::HistoryOp {
        channel_id: room.id,
        before: None,
        after: None,
        limit: Some(10),
    };
    let Ok(Reply::Page(page)) = ops::dispatch(caller, ClientOp::History(history)).await else {
        panic!("a member reads the history");
    };
    assert_eq!(page.messages.len(), 1);
}

#[tokio::test]
async fn answers_echo_the_ref_and_oks_need_one() {
    let node = Node::start().await;
    let chat = &node.chat;
    let text = |m: Option<WsMessage>| match m {
        Some(WsMessage::Text(t)) => serde_json::from_str::<AnyServerFrame>(&t).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    };
    assert!(ops::answer(chat, None, &Ok(Reply::Done)).is_none());
    let ok = text(ops::answer(chat, Some("a"), &Ok(Reply::Done)));
    assert_eq!((ok.t.as_str(), ok.r#ref.as_deref()), (event::OK, Some("a")));
    assert_eq!(ok.d, serde_json::json!({}));
    let pong = Reply::Pong(Pong {
        server_time: Timestamp(0),
    });
    assert_eq!(text(ops::answer(chat, None, &Ok(pong))).t, event::PONG);
    let e = text(ops::answer(
        chat,
        Some("b"),
        &Err(ApiError::rate_limited("slow down")),
    ));
    assert_eq!(
        (e.t.as_str(), e.r#ref.as_deref()),
        (event::ERROR, Some("b"))
    );
    assert_eq!(e.d["code"], "rate_limited");
    assert_eq!(e.d["message"], "slow down");
}
