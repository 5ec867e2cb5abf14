//! [`Target`] for an embedded Parley chat-node: REST registration and groups (or a DM) for
//! setup, `hello` with the token over `/v1/ws`, `send` answered by `ok`, `message` events
//! (docs/protocol.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{StreamExt as _, TryStreamExt as _};
use parley_protocol::Id;
use serde_json::json;

use super::target::{Event, Plan, Target, Who, Ws, dial, next_text, send_text};
use super::wire::{number_after, stamp, str_after};
use crate::client::Api;

/// Registrations in flight at once: the node hashes each password (argon2, about 50 ms of
/// CPU) on its one core, and queues a few more.
const REGISTER_CONCURRENCY: usize = 4;

/// A user the driver signed up: its id and token.
#[derive(Debug, Clone)]
pub(super) struct User {
    pub(super) id: Id,
    pub(super) token: String,
}

/// A Parley node at `addr`, with the users and rooms of the last [`Target::prepare`].
#[derive(Debug)]
pub struct Parley {
    addr: SocketAddr,
    base: String,
    /// Usernames are `b<tag>...`: unique per run.
    tag: String,
    /// Per room: the members' users, then (with publishers) the publisher.
    users: Vec<Vec<User>>,
    rooms: Vec<Id>,
    users_per_room: usize,
    /// The id of a message sent during setup, the `resume_after` of reconnects.
    last_id: Option<Id>,
    /// Hello asks for `presence_batch` frames.
    presence_batch: bool,
}

impl Parley {
    /// A target for the node listening at `addr` (plain HTTP); with `presence_batch`, each
    /// hello asks for `presence_batch` frames.
    pub fn new(addr: SocketAddr, presence_batch: bool) -> Self {
        Self {
            addr,
            base: format!("http://{addr}"),
            tag: crate::bench::run_tag(),
            users: Vec::new(),
            rooms: Vec::new(),
            users_per_room: 1,
            last_id: None,
            presence_batch,
        }
    }

    fn user(&self, who: Who) -> &User {
        match who {
            Who::Member { room, conn } => &self.users[room][conn % self.users_per_room],
            Who::Publisher { room } => &self.users[room][self.users_per_room],
        }
    }

    fn api(&self, user: &User) -> Api {
        let mut api = Api::new(&self.base);
        api.token = Some(user.token.clone());
        api.user_id = Some(user.id);
        api
    }

    /// Registers `username`, retrying while the node sheds (429, 503: the hash queue).
    pub(super) async fn register(base: String, username: String) -> anyhow::Result<User> {
        let api = Api::new(&base);
        let body = json!({"username": username, "password": format!("password-{username}")});
        for _ in 0..200 {
            let r = api.post("/v1/auth/register", &body).await;
            match r.status {
                201 => {
                    return Ok(User {
                        id: r.body["user"]["id"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .context("register: no user id")?,
                        token: r.body["token"]
                            .as_str()
                            .context("register: no token")?
                            .to_owned(),
                    });
                }
                429 | 503 => tokio::time::sleep(Duration::from_millis(250)).await,
                s => anyhow::bail!("register {username}: {s} {}", r.body),
            }
        }
        anyhow::bail!("register {username}: still refused after 200 tries")
    }
}

#[async_trait::async_trait]
impl Target for Parley {
    fn system(&self) -> &'static str {
        "parley"
    }

    async fn prepare(&mut self, plan: Plan) -> anyhow::Result<()> {
        self.users_per_room = plan.users_per_room;
        let per_room = plan.users_per_room + usize::from(plan.publishers);
        let names: Vec<(usize, String)> = (0..plan.rooms)
            .flat_map(|r| (0..per_room).map(move |i| (r, i)))
            .map(|(r, i)| (r, format!("b{}r{r}u{i}", self.tag)))
            .collect();
        let base = self.base.clone();
        let registered: Vec<(usize, User)> = futures_util::stream::iter(names)
            .map(|(r, name)| {
                let base = base.clone();
                async move { Ok::<_, anyhow::Error>((r, Self::register(base, name).await?)) }
            })
            .buffered(REGISTER_CONCURRENCY)
            .try_collect()
            .await?;
        self.users = vec![Vec::new(); plan.rooms];
        for (r, u) in registered {
            self.users[r].push(u);
        }
        self.rooms.clear();
        for r in 0..plan.rooms {
            let first = self.api(&self.users[r][0]);
            let room = if plan.dm {
                let other = self.users[r][1].id;
                let reply = first
                    .post("/v1/dms", &json!({"user_id": other.to_string()}))
                    .await;
                anyhow::ensure!(matches!(reply.status, 200 | 201), "dm: {:?}", reply.body);
                reply.body["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .context("dm: no id")?
            } else {
                first.create_group(&format!("bench-{}-{r}", self.tag)).await
            };
            if !plan.dm {
                let apis: Vec<Api> = self.users[r][1..].iter().map(|u| self.api(u)).collect();
                futures_util::stream::iter(apis)
                    .map(|api| async move { api.join(room).await })
                    .buffer_unordered(16)
                    .collect::<Vec<()>>()
                    .await;
            }
            self.rooms.push(room);
        }
        let setup = self
            .api(&self.users[0][0])
            .send(self.rooms[0], "setup")
            .await;
        self.last_id = setup["id"].as_str().and_then(|s| s.parse().ok());
        Ok(())
    }

    async fn open(&self, who: Who, source: Ipv4Addr, resume: bool) -> anyhow::Result<Ws> {
        let mut ws = dial(self.addr, source, &format!("ws://{}/v1/ws", self.addr)).await?;
        let mut d = json!({"token": self.user(who).token});
        if self.presence_batch {
            d["presence_batch"] = json!(true);
        }
        if let (true, Some(after)) = (resume, self.last_id) {
            d["resume_after"] = json!(after.to_string());
        }
        send_text(
            &mut ws,
            json!({"op": "hello", "ref": "h", "d": d}).to_string(),
        )
        .await?;
        loop {
            let t = next_text(&mut ws).await?;
            if t.contains(r#""ref":"h""#) {
                anyhow::ensure!(t.contains(r#""t":"ready""#), "hello refused: {t}");
                return Ok(ws);
            }
        }
    }

    fn publish(&self, room: usize, req: u64, payload: &str) -> String {
        format!(
            r#"{{"op":"send","ref":"{req}","d":{{"channel_id":"{}","text":"{payload}","client_msg_id":"{req}"}}}}"#,
            self.rooms[room]
        )
    }

    fn read(&self, frame: &str, on: &mut dyn FnMut(Event<'_>)) {
        let kind = str_after(frame, r#""t":""#).unwrap_or("?");
        // Only replies carry a ref; an `ok` also holds the message (and its stamp).
        if frame.contains(r#""ref":""#) {
            let req = number_after(frame, r#""ref":""#);
            match (kind, req) {
                ("ok", Some(req)) => on(Event::Ack { req }),
                ("error", req) => on(Event::Refused { req }),
                _ => on(Event::Other { kind }),
            }
        } else if let Some(stamp) = stamp(frame) {
            on(Event::Delivery { stamp });
        } else if kind == "presence_batch" {
            on(Event::Other { kind });
            // Its presences, counted apart (`presence.` kinds are entries, not frames).
            for _ in frame.matches(r#""user_id":"#) {
                on(Event::Other {
                    kind: "presence.batched",
                });
            }
        } else if kind != "pong" {
            // A pong answers the driver's own keepalive: not counted.
            on(Event::Other { kind });
        }
    }

    fn keepalive(&self) -> Option<(Duration, &'static str)> {
        // The node's heartbeat interval is 15 s; a client pings at least that often.
        Some((Duration::from_secs(10), r#"{"op":"ping"}"#))
    }
}
