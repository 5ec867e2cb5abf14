//! Step 4, through the edge only: two users on different chat-node pods chat both ways, page
//! history (socket and REST), and one resumes after a reconnect with exactly what it missed.
//! Also the WebSocket and REST helpers the later steps use (the channel's whole history).

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

use super::edge::{self, Edge, Frame, Socket, User};
use super::traffic::{self, Acked};
use super::{FRAME_WAIT, k8s, log};

/// What step 4 leaves for step 5: the users, their group, what was acknowledged.
#[derive(Debug, Clone)]
pub struct Chat {
    pub a: User,
    pub b: User,
    /// The group both are members of.
    pub channel: u64,
    /// The messages step 4 had acknowledged.
    pub acked: Vec<Acked>,
}

/// Step 4, through `edge` only: users `e2e-<unique>-a` and `-b` in group `e2e-<unique>` on two
/// different chat-node pods chat both ways, page history (socket and REST) and `b` resumes
/// after a reconnect with exactly the messages it missed. `limit` bounds the wait for the
/// edge to route.
pub async fn chat(edge: &Edge, unique: &str, limit: Duration) -> Result<Chat> {
    wait_routed(edge, limit).await?;
    let (a, b, channel) = group_of_two(edge, unique).await?;
    let mut talk = Conversation::spread(edge, a, b, channel, limit).await?;
    let ids = talk.exchange().await?;
    talk.page_history(edge, &ids).await?;
    talk.resume(edge).await
}

/// Waits until the edge routes `/readyz` to a ready chat-node, for at most `limit`.
async fn wait_routed(edge: &Edge, limit: Duration) -> Result<()> {
    let probe = edge.clone();
    k8s::wait_for(
        "the edge to route to a ready chat-node (/readyz)",
        limit,
        Duration::from_millis(500),
        || {
            let probe = probe.clone();
            async move {
                let (status, body) = probe
                    .request(reqwest::Method::GET, "/readyz", None, None)
                    .await?;
                if status == 200 {
                    Ok(Some(()))
                } else {
                    Err(anyhow!("/readyz answered {status}: {body}"))
                }
            }
        },
    )
    .await?;
    Ok(())
}

/// Registers users `e2e-<unique>-a` and `-b`; `a` creates group `e2e-<unique>` and `b` joins
/// it. Answers the users and the group's ID.
async fn group_of_two(edge: &Edge, unique: &str) -> Result<(User, User, u64)> {
    let a = edge.register(&format!("e2e-{}-a", unique)).await?;
    let b = edge.register(&format!("e2e-{}-b", unique)).await?;
    let group = edge
        .expect(
            reqwest::Method::POST,
            "/v1/channels",
            Some(&a.token),
            Some(&json!({"name": format!("e2e-{}", unique)})),
            201,
        )
        .await?;
    let channel = edge::id(&group["id"])?;
    edge.expect(
        reqwest::Method::POST,
        &format!("/v1/channels/{channel}/join"),
        Some(&b.token),
        Some(&json!({})),
        200,
    )
    .await?;
    Ok((a, b, channel))
}

/// The two users of step 4 with a socket each (on different chat-node pods), the frames
/// each socket gave besides the replies waited for, and the messages acknowledged so far.
struct Conversation {
    a: User,
    b: User,
    channel: u64,
    wa: Socket,
    wb: Socket,
    seen_a: Vec<Value>,
    seen_b: Vec<Value>,
    acked: Vec<Acked>,
}

impl Conversation {
    /// Connects `a`, then `b` until its socket lands on another pod than `a`'s (for at most
    /// `limit`).
    async fn spread(edge: &Edge, a: User, b: User, channel: u64, limit: Duration) -> Result<Self> {
        // Two sockets on different chat-node pods.
        let (wa, ra) = edge.connect(&a.token, None).await?;
        let node_a = ra["node"].as_str().unwrap_or("").to_owned();
        // The edge learns of each ready pod on its own schedule (Traefik throttles provider
        // updates, 2 s by default), so b keeps reconnecting, a little apart, until it lands
        // elsewhere or `limit` passes.
        let mut attempt = 0;
        let spread_deadline = tokio::time::Instant::now() + limit;
        let (wb, node_b) = loop {
            attempt += 1;
            let (ws, rb) = edge.connect(&b.token, None).await?;
            let node = rb["node"].as_str().unwrap_or("").to_owned();
            if node != node_a {
                break (ws, node);
            }
            ensure!(
                tokio::time::Instant::now() < spread_deadline,
                "{attempt} WebSockets through the edge in {limit:?} all landed on {node_a}; the edge does not spread them"
            );
            close(ws).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        log(format_args!(
            "user a on {node_a}, user b on {node_b} ({attempt} connection(s) for b)"
        ));
        Ok(Self {
            a,
            b,
            channel,
            wa,
            wb,
            seen_a: Vec::new(),
            seen_b: Vec::new(),
            acked: Vec::new(),
        })
    }

    /// a → b and b → a, each seen by the other, then four more from each: ten messages whose
    /// seqs follow one another. Answers their IDs in order.
    async fn exchange(&mut self) -> Result<Vec<u64>> {
        let channel = self.channel;
        // a → b and b → a.
        let m = ws_send(
            &mut self.wa,
            channel,
            "hello from a",
            "chat-a-1",
            &mut self.seen_a,
        )
        .await?;
        expect_message(&mut self.wb, m.id, &mut self.seen_b)
            .await
            .context("b receiving a's message")?;
        self.acked.push(acked_of(&m, &self.a, "chat"));
        let m = ws_send(
            &mut self.wb,
            channel,
            "hello from b",
            "chat-b-1",
            &mut self.seen_b,
        )
        .await?;
        expect_message(&mut self.wa, m.id, &mut self.seen_a)
            .await
            .context("a receiving b's message")?;
        self.acked.push(acked_of(&m, &self.b, "chat"));
        for i in 2..=5 {
            for (ws, seen, user, who) in [
                (&mut self.wa, &mut self.seen_a, &self.a, "a"),
                (&mut self.wb, &mut self.seen_b, &self.b, "b"),
            ] {
                let m = ws_send(
                    ws,
                    channel,
                    &format!("message {i} from {who}"),
                    &format!("chat-{who}-{i}"),
                    seen,
                )
                .await?;
                self.acked.push(acked_of(&m, user, "chat"));
            }
        }
        let ids: Vec<u64> = self.acked.iter().map(|m| m.id).collect();
        let seqs: Vec<u64> = self.acked.iter().map(|m| m.seq).collect();
        ensure!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "seqs of ten messages in a row are not consecutive: {seqs:?}"
        );
        Ok(ids)
    }

    /// History pages of the ten messages `ids`, over the socket and over REST.
    async fn page_history(&mut self, edge: &Edge, ids: &[u64]) -> Result<()> {
        let channel = self.channel;
        // History pages, over the socket and over REST.
        let page = ws_history(&mut self.wa, channel, json!({"limit": 4}), &mut self.seen_a).await?;
        let want: Vec<u64> = ids.iter().rev().take(4).copied().collect();
        ensure!(
            page.0 == want && page.1,
            "history limit=4 gave {page:?}, wanted {want:?} and more"
        );
        let page = ws_history(
            &mut self.wb,
            channel,
            json!({"before": ids[6].to_string(), "limit": 3}),
            &mut self.seen_b,
        )
        .await?;
        let want = vec![ids[5], ids[4], ids[3]];
        ensure!(
            page.0 == want,
            "history before={} limit=3 gave {:?}, wanted {want:?}",
            ids[6],
            page.0
        );
        let r = edge
            .expect(
                reqwest::Method::GET,
                &format!("/v1/channels/{channel}/messages?after={}&limit=3", ids[1]),
                Some(&self.b.token),
                None,
                200,
            )
            .await?;
        let got = message_ids(&r["messages"])?;
        ensure!(
            got == ids[2..5] && r["has_more"] == true,
            "GET messages after={} limit=3 gave {got:?} (has_more {}), wanted {:?}",
            ids[1],
            r["has_more"],
            &ids[2..5]
        );
        Ok(())
    }

    /// b drops its socket; a sends three; b resumes and gets exactly those, in order. Closes
    /// both sockets and answers what step 5 needs.
    async fn resume(self, edge: &Edge) -> Result<Chat> {
        let Self {
            a,
            b,
            channel,
            mut wa,
            mut wb,
            mut seen_a,
            mut seen_b,
            mut acked,
        } = self;
        // b drops its socket; a sends three; b resumes and gets exactly those, in order.
        drain(&mut wb, &mut seen_b).await;
        let last_b = seen_b
            .iter()
            .filter(|f| f["t"] == "message")
            .filter_map(|f| edge::id(&f["d"]["id"]).ok())
            .chain(acked.iter().filter(|m| m.author == b.id).map(|m| m.id))
            .max()
            .context("b saw no message")?;
        close(wb).await;
        let mut missed = Vec::new();
        for i in 1..=3 {
            let m = ws_send(
                &mut wa,
                channel,
                &format!("while b was away {i}"),
                &format!("chat-a-away-{i}"),
                &mut seen_a,
            )
            .await?;
            missed.push(m.id);
            acked.push(acked_of(&m, &a, "chat"));
        }
        let (mut wb, rb) = edge.connect(&b.token, Some(last_b)).await?;
        let mut got = Vec::new();
        while got.len() < missed.len() {
            match edge::next_frame(&mut wb, FRAME_WAIT)
                .await
                .context("b resuming")?
            {
                Frame::Json(f) if f["t"] == "message" => {
                    let id = edge::id(&f["d"]["id"])?;
                    if id > last_b {
                        got.push(id);
                    }
                }
                Frame::Json(_) => {}
                Frame::Closed(code) => bail!("b's resumed socket closed ({code:?})"),
            }
        }
        ensure!(
            got == missed,
            "b resumed after {last_b} and got {got:?}, wanted {missed:?}"
        );
        log(format_args!(
            "chatted both ways, paged history, b resumed on {} and got the 3 missed messages",
            rb["node"].as_str().unwrap_or("?")
        ));
        close(wa).await;
        close(wb).await;
        Ok(Chat {
            a,
            b,
            channel,
            acked,
        })
    }
}

/// An acknowledged message as `send`'s `ok` returns it.
#[derive(Debug, Clone)]
struct Sent {
    id: u64,
    seq: u64,
    client_msg_id: String,
}

fn acked_of(m: &Sent, user: &User, client: &str) -> Acked {
    Acked {
        client: client.to_owned(),
        author: user.id,
        id: m.id,
        seq: m.seq,
        client_msg_id: m.client_msg_id.clone(),
    }
}

async fn ws_send(
    ws: &mut Socket,
    channel: u64,
    text: &str,
    cmid: &str,
    seen: &mut Vec<Value>,
) -> Result<Sent> {
    edge::send_op(
        ws,
        "send",
        cmid,
        json!({"channel_id": channel.to_string(), "text": text, "client_msg_id": cmid}),
    )
    .await?;
    let r = edge::reply(ws, cmid, FRAME_WAIT, seen).await?;
    ensure!(r["t"] == "ok", "send {cmid} answered {r}");
    let m = &r["d"]["message"];
    Ok(Sent {
        id: edge::id(&m["id"])?,
        seq: m["seq"]
            .as_u64()
            .with_context(|| format!("no seq in {m}"))?,
        client_msg_id: cmid.to_owned(),
    })
}

async fn expect_message(ws: &mut Socket, id: u64, seen: &mut Vec<Value>) -> Result<()> {
    edge::event(ws, "message", FRAME_WAIT, seen, |d| {
        edge::id(&d["id"]).ok() == Some(id)
    })
    .await?;
    Ok(())
}

pub(super) fn message_ids(v: &Value) -> Result<Vec<u64>> {
    v.as_array()
        .context("no messages array")?
        .iter()
        .map(|m| edge::id(&m["id"]))
        .collect()
}

async fn ws_history(
    ws: &mut Socket,
    channel: u64,
    mut q: Value,
    seen: &mut Vec<Value>,
) -> Result<(Vec<u64>, bool)> {
    q["channel_id"] = json!(channel.to_string());
    edge::send_op(ws, "history", "history", q.clone()).await?;
    let r = edge::reply(ws, "history", FRAME_WAIT, seen).await?;
    ensure!(r["t"] == "ok", "history {q} answered {r}");
    Ok((
        message_ids(&r["d"]["messages"])?,
        r["d"]["has_more"] == true,
    ))
}

/// Reads what is already there (briefly) into `seen`.
async fn drain(ws: &mut Socket, seen: &mut Vec<Value>) {
    while let Ok(Frame::Json(f)) = edge::next_frame(ws, Duration::from_millis(500)).await {
        seen.push(f);
    }
}

async fn close(mut ws: Socket) {
    use futures_util::StreamExt as _;
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ws.next().await.is_some() {}
    })
    .await;
}

/// The channel's whole history, through the edge, oldest first.
pub(super) async fn fetch_history(
    edge: &Edge,
    user: &User,
    channel: u64,
) -> Result<Vec<traffic::Stored>> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let r = edge
            .expect(
                reqwest::Method::GET,
                &format!("/v1/channels/{channel}/messages?after={after}&limit=100"),
                Some(&user.token),
                None,
                200,
            )
            .await?;
        let messages = r["messages"].as_array().context("no messages")?;
        for m in messages {
            out.push(traffic::Stored {
                id: edge::id(&m["id"])?,
                seq: m["seq"].as_u64().context("no seq")?,
                author: edge::id(&m["author_id"])?,
                client_msg_id: m["client_msg_id"].as_str().map(str::to_owned),
            });
        }
        match messages.last() {
            Some(m) if r["has_more"] == true => after = edge::id(&m["id"])?,
            _ => return Ok(out),
        }
    }
}
