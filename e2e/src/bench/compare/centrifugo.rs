//! [`Target`] for Centrifugo v6 (memory engine) over its JSON WebSocket protocol at
//! `/connection/websocket`:
//!
//! ```text
//!   -> {"id":1,"connect":{"token":JWT,"name":"parley-bench"}}     <- {"id":1,"connect":{...}}
//!   -> {"id":2,"subscribe":{"channel":"r0"}}                      <- {"id":2,"subscribe":{}}
//!   -> {"id":N,"publish":{"channel":"r0","data":{"text":...}}}    <- {"id":N,"publish":{}}
//!   <- {"push":{"channel":"r0","pub":{"data":{"text":...}}}}      (no id)
//!   <- {}   (ping)                                                -> {}
//! ```
//!
//! A frame may hold several messages separated by `\n`. Connection tokens are HS256 JWTs
//! with `sub` = the user id, signed with `client.token.hmac_secret_key` (dev/centrifugo
//! generates it). Rooms are channels `r0`, `r1`, ... without a namespace; a DM is the
//! user-limited channel `dm#<a>,<b>` (only those two users may subscribe).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::target::{Event, Plan, Target, Who, Ws, dial, next_text, send_text};
use super::wire::{number_after, split_frames, stamp};

/// A Centrifugo server at `addr` with its token secret.
#[derive(Debug)]
pub struct Centrifugo {
    addr: SocketAddr,
    secret: String,
    plan: Plan,
    /// Per room: the members' tokens, then (with publishers) the publisher's.
    tokens: Vec<Vec<String>>,
}

/// The claims of a connection token.
#[derive(Debug, serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// An HS256 connection token for user `sub`, valid for a day from `now` (Unix seconds).
pub fn token(secret: &str, sub: &str, now: u64) -> anyhow::Result<String> {
    let claims = Claims {
        sub,
        iat: now,
        exp: now + 86_400,
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

impl Centrifugo {
    /// A target for the server at `addr` whose HMAC secret is `secret`.
    pub fn new(addr: SocketAddr, secret: String) -> Self {
        Self {
            addr,
            secret,
            plan: Plan {
                rooms: 0,
                users_per_room: 1,
                publishers: false,
                dm: false,
            },
            tokens: Vec::new(),
        }
    }

    fn user_name(room: usize, index: usize) -> String {
        format!("u{room}_{index}")
    }

    fn channel(&self, room: usize) -> String {
        if self.plan.dm {
            format!(
                "dm#{},{}",
                Self::user_name(room, 0),
                Self::user_name(room, 1)
            )
        } else {
            format!("r{room}")
        }
    }

    /// Sends `command` as request `id` and waits for the reply with that id.
    async fn call(ws: &mut Ws, id: u64, command: String) -> anyhow::Result<()> {
        send_text(ws, command).await?;
        loop {
            let frame = next_text(ws).await?;
            for line in split_frames(&frame) {
                if line.starts_with(r#"{"id":"#) && number_after(line, r#""id":"#) == Some(id) {
                    anyhow::ensure!(!line.contains(r#""error":"#), "refused: {line}");
                    return Ok(());
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Target for Centrifugo {
    fn system(&self) -> &'static str {
        "centrifugo"
    }

    async fn prepare(&mut self, plan: Plan) -> anyhow::Result<()> {
        self.plan = plan;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let per_room = plan.users_per_room + usize::from(plan.publishers);
        self.tokens = (0..plan.rooms)
            .map(|r| {
                (0..per_room)
                    .map(|i| token(&self.secret, &Self::user_name(r, i), now))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(())
    }

    async fn open(&self, who: Who, source: Ipv4Addr, _resume: bool) -> anyhow::Result<Ws> {
        let token = match who {
            Who::Member { room, conn } => &self.tokens[room][conn % self.plan.users_per_room],
            Who::Publisher { room } => &self.tokens[room][self.plan.users_per_room],
        };
        let url = format!("ws://{}/connection/websocket", self.addr);
        let mut ws = dial(self.addr, source, &url).await?;
        let connect =
            format!(r#"{{"id":1,"connect":{{"token":"{token}","name":"parley-bench"}}}}"#);
        Self::call(&mut ws, 1, connect).await?;
        let subscribe = format!(
            r#"{{"id":2,"subscribe":{{"channel":"{}"}}}}"#,
            self.channel(who.room())
        );
        Self::call(&mut ws, 2, subscribe).await?;
        Ok(ws)
    }

    fn publish(&self, room: usize, req: u64, payload: &str) -> String {
        format!(
            r#"{{"id":{req},"publish":{{"channel":"{}","data":{{"text":"{payload}"}}}}}}"#,
            self.channel(room)
        )
    }

    fn read(&self, frame: &str, on: &mut dyn FnMut(Event<'_>)) {
        if frame.trim().is_empty() {
            on(Event::Ping { reply: "{}" });
            return;
        }
        for line in split_frames(frame) {
            if line == "{}" {
                on(Event::Ping { reply: "{}" });
            } else if line.starts_with(r#"{"id":"#) {
                let req = number_after(line, r#""id":"#);
                match (line.contains(r#""error":"#), req) {
                    (false, Some(req)) => on(Event::Ack { req }),
                    (_, req) => on(Event::Refused { req }),
                }
            } else if let Some(stamp) = stamp(line) {
                on(Event::Delivery { stamp });
            } else {
                let kind = ["join", "leave", "unsubscribe", "disconnect", "message"]
                    .into_iter()
                    .find(|k| line.contains(&format!("\"{k}\":")))
                    .unwrap_or("push");
                on(Event::Other { kind });
            }
        }
    }

    fn keepalive(&self) -> Option<(Duration, &'static str)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hs256_with_the_user_as_subject() {
        let t = token("s3cret", "u0_1", 1_700_000_000).unwrap();
        assert_eq!(t.split('.').count(), 3);
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let d = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &v,
        )
        .unwrap();
        assert_eq!(d.claims["sub"], "u0_1");
        assert_eq!(d.claims["exp"], 1_700_086_400);
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &t,
                &jsonwebtoken::DecodingKey::from_secret(b"other"),
                &v
            )
            .is_err()
        );
    }

    #[test]
    fn frames_are_read_line_by_line() {
        let c = Centrifugo::new("127.0.0.1:1".parse().unwrap(), String::new());
        let p = super::super::wire::payload(99, 0);
        let frame = format!(
            "{{\"id\":7,\"publish\":{{}}}}\n{{\"push\":{{\"channel\":\"r0\",\"pub\":{{\"data\":{{\"text\":\"{p}\"}}}}}}}}\n{{\"id\":8,\"error\":{{\"code\":103}}}}"
        );
        let mut seen = Vec::new();
        c.read(&frame, &mut |e| seen.push(format!("{e:?}")));
        assert_eq!(
            seen,
            [
                "Ack { req: 7 }",
                "Delivery { stamp: 99 }",
                "Refused { req: Some(8) }"
            ]
        );
        seen.clear();
        c.read("{}", &mut |e| seen.push(format!("{e:?}")));
        c.read("", &mut |e| seen.push(format!("{e:?}")));
        assert_eq!(seen, [r#"Ping { reply: "{}" }"#, r#"Ping { reply: "{}" }"#]);
    }
}
