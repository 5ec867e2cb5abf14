//! One client process of the workload: one user, one WebSocket at a time, every operation
//! logged. It reads every event between its operations (so `recv` is logged as it
//! happens), fills seq gaps through REST history, retries sends whose outcome is unknown
//! with the same `client_msg_id`, and moves to another node when its node does not answer.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::Id;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::rest::{Msg, Rest};
use super::tracker::Channels;
use super::{MAX_RETRIES, Node, Workload};
use crate::client::{Api, Next, Ws};
use crate::history::{F, HistoryWriter, OpType};

/// Send errors that prove nothing was stored: the send is `fail`; any other is `info`.
const DEFINITE_SEND_ERRORS: &[&str] = &[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "rate_limited",
    "too_large",
    "payload_too_large",
    "content_rejected",
];

/// Pending history fills kept for later when a fill's REST call failed.
const MAX_FILLS: usize = 64;

/// What every process shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub history: HistoryWriter,
    pub nodes: Vec<Node>,
    /// The groups, hot first.
    pub groups: Vec<Id>,
    pub workload: Workload,
    pub rest: Rest,
}

/// The open socket and what its `ready` said.
#[derive(Debug)]
struct Conn {
    ws: Ws,
    node: usize,
    /// With `resume_after`: each channel's `last_seq` in `ready`; a message at or below it
    /// is a replay (`via: resume`).
    replay_upto: HashMap<Id, u64>,
}

/// A send whose outcome is unknown, to try again with the same `client_msg_id`.
#[derive(Debug)]
struct Retry {
    channel: Id,
    client_msg_id: String,
    attempts: u32,
    due: Instant,
}

/// What reading the socket ended with.
enum Pumped {
    Reply(Value),
    Timeout,
    Closed,
}

/// One client process.
#[derive(Debug)]
pub(crate) struct Client {
    ctx: Arc<Ctx>,
    pub(crate) p: u32,
    pub(crate) api: Api,
    churner: bool,
    node: usize,
    conn: Option<Conn>,
    seen: Channels,
    /// The groups this process is (certainly) a member of.
    member: BTreeSet<Id>,
    retries: VecDeque<Retry>,
    fills: VecDeque<(Id, Id, Option<Id>)>,
    /// Groups joined whose latest page is still to be read (it sets the baseline).
    unread: BTreeSet<Id>,
    sent: u64,
    rng: StdRng,
}

impl Client {
    /// Process `p` acting as `api`'s user, a member of the groups [`super::setup`] joined.
    pub(crate) fn new(ctx: Arc<Ctx>, p: u32, api: Api, churner: bool) -> Self {
        let member: BTreeSet<Id> = if churner {
            ctx.groups[..1].iter().copied().collect()
        } else {
            ctx.groups.iter().copied().collect()
        };
        let mut seen = Channels::default();
        for &g in &member {
            seen.from_start(g);
        }
        Self {
            node: p as usize % ctx.nodes.len(),
            rng: StdRng::seed_from_u64(ctx.workload.seed.wrapping_add(u64::from(p))),
            ctx,
            p,
            api,
            churner,
            conn: None,
            seen,
            member,
            retries: VecDeque::new(),
            fills: VecDeque::new(),
            unread: BTreeSet::new(),
            sent: 0,
        }
    }

    fn node_name(&self, node: usize) -> String {
        self.ctx.nodes[node].name.clone()
    }

    /// The user on `node`'s URL.
    fn api_on(&self, node: usize) -> Api {
        self.api.on(&self.ctx.nodes[node].url)
    }

    /// Whether the process holds an open socket (for the presence check).
    pub(crate) fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Runs operations until `stop`, then settles and catches up; returns the process with
    /// its socket for the presence check.
    pub(crate) async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) -> Self {
        let period = Duration::from_secs_f64(1.0 / self.ctx.workload.rate_per_process.max(0.01));
        let mut next = Instant::now() + period.mul_f64(self.rng.random::<f64>());
        while !*stop.borrow_and_update() {
            if self.conn.is_none() && !self.connect().await {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if let Pumped::Closed = self.pump(next, None).await {
                continue;
            }
            next = (next + period).max(Instant::now());
            self.step().await;
        }
        self.settle().await;
        self.catch_up().await;
        self
    }

    /// One operation: a due retry, else a drop, a churn or a new send.
    async fn step(&mut self) {
        if let Some(&g) = self.unread.first() {
            self.read_latest(g).await;
        }
        let now = Instant::now();
        if self.retries.front().is_some_and(|r| r.due <= now) {
            let r = self.retries.pop_front().expect("a due retry");
            self.send(r.channel, r.client_msg_id, r.attempts).await;
            return;
        }
        let roll: f64 = self.rng.random();
        let w = &self.ctx.workload;
        if roll < w.drop_chance {
            self.drop_and_resume().await;
        } else if self.churner && roll < w.drop_chance + w.churn_chance {
            self.churn().await;
        } else {
            let channel = self.pick_channel();
            self.sent += 1;
            let cmid = format!("p{}-{}", self.p, self.sent);
            self.send(channel, cmid, 0).await;
        }
    }

    /// The hot group with [`Workload::hot_share`], else another group of this process.
    fn pick_channel(&mut self) -> Id {
        let hot = self.ctx.groups[0];
        let others: Vec<Id> = self.member.iter().copied().filter(|g| *g != hot).collect();
        if others.is_empty() || self.rng.random_bool(self.ctx.workload.hot_share) {
            hot
        } else {
            others[self.rng.random_range(0..others.len())]
        }
    }

    /// Opens a socket on the current node (stayers resume after the highest id seen;
    /// churners say a plain hello and fill from history, so nothing of the time they were
    /// not members is replayed). On failure the next attempt goes to the next node.
    async fn connect(&mut self) -> bool {
        let node = self.node;
        let resume = if self.churner {
            None
        } else {
            self.seen.highest()
        };
        let mut value = json!({});
        if let Some(after) = resume {
            value["resume_after"] = json!(after.to_string());
        }
        let name = self.node_name(node);
        let pending = self
            .ctx
            .history
            .invoke(self.p, F::Connect, Some(&name), value);
        let api = self.api_on(node);
        let attempt = tokio::time::timeout(self.ctx.workload.timeout, api.try_connect(resume));
        let (mut ws, ready) = match attempt.await {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                let frame: Value = serde_json::from_str(&e).unwrap_or_default();
                match frame["d"]["code"].as_str() {
                    Some(code) => pending.fail(json!({"error": code})),
                    None => pending.info(json!({"error": "closed"})),
                };
                self.node = (node + 1) % self.ctx.nodes.len();
                return false;
            }
            Err(_) => {
                pending.info(json!({"error": "timeout"}));
                self.node = (node + 1) % self.ctx.nodes.len();
                return false;
            }
        };
        pending.ok(json!({"session": ready.d["session_id"], "node": ready.d["node"]}));
        let beat = ready.d["heartbeat_interval_ms"].as_u64().unwrap_or(15_000);
        ws.keep_alive(Duration::from_millis(beat / 2));
        let cursors: Vec<(Id, u64)> = ready.d["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["id"].as_str()?.parse().ok()?, c["last_seq"].as_u64()?)))
            .collect();
        let replay_upto = match resume {
            Some(_) => cursors.iter().copied().collect(),
            None => HashMap::new(),
        };
        self.conn = Some(Conn {
            ws,
            node,
            replay_upto,
        });
        if resume.is_none() {
            for (channel, after) in self.seen.behind(&cursors) {
                self.fill(channel, after, None).await;
            }
        }
        true
    }

    /// Reads the socket until `until` or, with `want`, until the reply with that `ref`,
    /// handling every event on the way.
    async fn pump(&mut self, until: Instant, want: Option<&str>) -> Pumped {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Pumped::Closed;
            };
            let wait = until.saturating_duration_since(Instant::now());
            match conn.ws.next_within(wait).await {
                None => return Pumped::Timeout,
                Some(Next::Closed(_)) => {
                    self.conn = None;
                    return Pumped::Closed;
                }
                Some(Next::Frame(text)) => {
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    let reply = matches!(frame["t"].as_str(), Some("ok" | "error"));
                    if reply && want.is_some_and(|w| frame["ref"] == w) {
                        return Pumped::Reply(frame);
                    }
                    self.on_event(&frame).await;
                }
            }
        }
    }

    async fn on_event(&mut self, frame: &Value) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let node = self.node_name(conn.node);
        match frame["t"].as_str() {
            Some("message") => {
                let Some(m) = Msg::of(&frame["d"]) else {
                    return;
                };
                let replayed = conn
                    .replay_upto
                    .get(&m.channel)
                    .is_some_and(|s| m.seq <= *s);
                self.recv(m, if replayed { "resume" } else { "live" }, &node);
                if let Some(after) = self.seen.observe(m.channel, m.id, m.seq) {
                    self.fill(m.channel, after, Some(m.id)).await;
                }
            }
            Some("resync_required") => {
                let Some(channel) = frame["d"]["channel_id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                else {
                    return;
                };
                let value = json!({"channel": channel_str(channel)});
                self.ctx
                    .history
                    .observe(self.p, F::Resync, Some(&node), value);
                let after = self
                    .seen
                    .baselines()
                    .into_iter()
                    .find(|(c, _)| *c == channel);
                if let Some((_, after)) = after {
                    self.fill(channel, after, None).await;
                }
            }
            _ => {}
        }
    }

    fn recv(&self, m: Msg, via: &str, node: &str) {
        let value = json!({"channel": channel_str(m.channel), "id": m.id.to_string(), "seq": m.seq, "via": via});
        self.ctx.history.observe(self.p, F::Recv, Some(node), value);
    }

    /// Reads `channel`'s messages after `after` (below `until`) through REST history and
    /// logs each as received `via: history`; a failed read is kept for the catch-up.
    async fn fill(&mut self, channel: Id, after: Id, until: Option<Id>) {
        let node = self.conn.as_ref().map_or(self.node, |c| c.node);
        let api = self.api_on(node);
        match self
            .ctx
            .rest
            .messages_between(&api, channel, after, until)
            .await
        {
            Ok(msgs) => {
                let name = self.node_name(node);
                for m in msgs {
                    self.recv(m, "history", &name);
                    self.seen.observe(m.channel, m.id, m.seq);
                }
            }
            Err(_) => {
                if self.fills.len() == MAX_FILLS {
                    self.fills.pop_front();
                }
                self.fills.push_back((channel, after, until));
            }
        }
    }

    /// After a join: reads the latest page of `g` (100 messages, logged `via: history`),
    /// which holds every message sent since the join, and takes its newest as the baseline
    /// (an empty channel: from the start). Kept in `unread` until a read succeeds.
    async fn read_latest(&mut self, g: Id) {
        let node = self.conn.as_ref().map_or(self.node, |c| c.node);
        let path = format!("/v1/channels/{g}/messages?limit=100");
        let Ok(page) = self.ctx.rest.get(&self.api_on(node), &path).await else {
            return;
        };
        self.unread.remove(&g);
        let mut msgs: Vec<Msg> = page["messages"]
            .as_array()
            .map(|a| a.iter().filter_map(Msg::of).collect())
            .unwrap_or_default();
        msgs.sort_unstable_by_key(|m| m.id);
        let name = self.node_name(node);
        if msgs.is_empty() {
            self.seen.from_start_if_unknown(g);
        }
        for m in msgs {
            self.recv(m, "history", &name);
            self.seen.observe(m.channel, m.id, m.seq);
        }
    }

    /// One attempt of a send (`attempts` made before with the same `client_msg_id`).
    async fn send(&mut self, channel: Id, cmid: String, attempts: u32) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let node = self.ctx.nodes[conn.node].name.clone();
        let value = json!({"channel": channel_str(channel), "client_msg_id": cmid, "text": cmid});
        let pending = self.ctx.history.invoke(self.p, F::Send, Some(&node), value);
        let r#ref = format!("{cmid}#{attempts}");
        let frame = json!({"op": "send", "ref": r#ref, "d": {"channel_id": channel_str(channel), "text": cmid, "client_msg_id": cmid}});
        let outcome = if conn
            .ws
            .send_raw(WsMessage::Text(frame.to_string().into()))
            .await
        {
            let until = Instant::now() + self.ctx.workload.timeout;
            self.pump(until, Some(&r#ref)).await
        } else {
            self.conn = None;
            Pumped::Closed
        };
        let (kind, extra) = match outcome {
            Pumped::Reply(f) if f["t"] == "ok" => {
                let m = &f["d"]["message"];
                (OpType::Ok, json!({"id": m["id"], "seq": m["seq"]}))
            }
            Pumped::Reply(f) => {
                let code = f["d"]["code"].as_str().unwrap_or("").to_owned();
                let kind = match DEFINITE_SEND_ERRORS.contains(&code.as_str()) {
                    true => OpType::Fail,
                    false => OpType::Info,
                };
                (kind, json!({"error": code}))
            }
            Pumped::Timeout => {
                // The node may be paused: give this socket up and connect again.
                self.abandon();
                (OpType::Info, json!({"error": "timeout"}))
            }
            Pumped::Closed => (OpType::Info, json!({"error": "closed"})),
        };
        pending.complete(kind, extra);
        if kind == OpType::Info {
            self.retry_later(channel, cmid, attempts + 1);
        }
    }

    fn retry_later(&mut self, channel: Id, client_msg_id: String, attempts: u32) {
        if attempts >= self.ctx.workload.send_attempts || !self.member.contains(&channel) {
            return;
        }
        if self.retries.len() == MAX_RETRIES {
            self.retries.pop_front();
        }
        self.retries.push_back(Retry {
            channel,
            client_msg_id,
            attempts,
            due: Instant::now() + self.ctx.workload.retry_after,
        });
    }

    /// Drops the socket without a close handshake (its node does not answer), logged as a
    /// `drop`.
    fn abandon(&mut self) {
        if let Some(conn) = self.conn.take() {
            let name = self.node_name(conn.node);
            self.ctx
                .history
                .observe(self.p, F::Drop, Some(&name), json!({}));
        }
    }

    /// Closes the socket on purpose and, at the next step, connects again (with
    /// `resume_after` for stayers), to another node one time in three.
    async fn drop_and_resume(&mut self) {
        self.close_socket().await;
        if self.rng.random_ratio(1, 3) {
            self.node = self.rng.random_range(0..self.ctx.nodes.len());
        }
    }

    /// A churner joins or leaves one of the groups after the hot one.
    async fn churn(&mut self) {
        let groups = &self.ctx.groups[1..];
        if groups.is_empty() {
            return;
        }
        let g = groups[self.rng.random_range(0..groups.len())];
        let leave = self.member.contains(&g);
        // From here until a join is certain, no send goes to `g` and no gap of `g` is filled.
        self.member.remove(&g);
        self.seen.forget(g);
        self.unread.remove(&g);
        self.retries.retain(|r| r.channel != g);
        let node = self.conn.as_ref().map_or(self.node, |c| c.node);
        let (f, path) = match leave {
            true => (F::Leave, format!("/v1/channels/{g}/leave")),
            false => (F::Join, format!("/v1/channels/{g}/join")),
        };
        let name = self.node_name(node);
        let pending =
            self.ctx
                .history
                .invoke(self.p, f, Some(&name), json!({"channel": channel_str(g)}));
        match self.ctx.rest.post(&self.api_on(node), &path).await {
            Ok(_) => {
                pending.ok(Value::Null);
                if !leave {
                    self.member.insert(g);
                    self.unread.insert(g);
                    self.read_latest(g).await;
                }
            }
            Err(e) => {
                let kind = match e.is_definite() {
                    true => OpType::Fail,
                    false => OpType::Info,
                };
                pending.complete(kind, json!({"error": e.code()}));
            }
        }
    }

    /// After the load: keeps reading (and reconnecting) for [`Workload::settle`].
    async fn settle(&mut self) {
        let end = Instant::now() + self.ctx.workload.settle;
        while Instant::now() < end {
            if self.conn.is_none() && !self.connect().await {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let until = (Instant::now() + Duration::from_millis(500)).min(end);
            self.pump(until, None).await;
        }
    }

    /// The final catch-up: connected again if need be (up to 30 s), the failed fills
    /// retried, then every channel this process is a member of read through REST history
    /// after the last message seen.
    async fn catch_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.conn.is_none() && Instant::now() < deadline {
            if !self.connect().await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let unread: Vec<Id> = self.unread.iter().copied().collect();
        for g in unread {
            self.read_latest(g).await;
        }
        let fills: Vec<_> = self.fills.drain(..).collect();
        for (channel, after, until) in fills {
            self.fill(channel, after, until).await;
        }
        for (channel, after) in self.seen.baselines() {
            if self.member.contains(&channel) {
                self.fill(channel, after, None).await;
            }
        }
        // Events that came meanwhile.
        self.pump(Instant::now() + Duration::from_millis(300), None)
            .await;
    }

    /// Closes the socket at the end of the run (logged as a `drop`).
    pub(crate) async fn close(mut self) {
        self.close_socket().await;
    }

    /// Closes the socket on purpose, if there is one, and logs the `drop`.
    async fn close_socket(&mut self) {
        if let Some(conn) = self.conn.take() {
            let name = self.node_name(conn.node);
            conn.ws.close().await;
            self.ctx
                .history
                .observe(self.p, F::Drop, Some(&name), json!({}));
        }
    }

    /// The node this process's socket is on, if it has one.
    pub(crate) fn conn_node(&self) -> Option<usize> {
        self.conn.as_ref().map(|c| c.node)
    }
}

fn channel_str(channel: Id) -> String {
    channel.to_string()
}
