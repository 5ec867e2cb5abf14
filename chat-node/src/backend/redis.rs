//! Redis PUB/SUB: one subscription per topic per node (the hub reference-counts), channels
//! `ch:<id>` and `user:<id>`. Subscriptions ride a RESP3 connection whose pushes go straight
//! to the hub's sink; after Redis restarts, the connection is re-established and every
//! subscription restored by itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::{BackendError, Delivery, PubSub, Sink, Topic};

const BACKEND: &str = "redis";

pub(crate) fn err(e: &redis::RedisError) -> BackendError {
    BackendError::unavailable(BACKEND, e)
}

/// `url` with RESP3 selected (needed for pushes on a multiplexed connection).
pub fn resp3_url(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

fn config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// A connection manager for commands.
pub async fn commands(url: &str) -> Result<ConnectionManager, BackendError> {
    let client = redis::Client::open(url)
        .map_err(|e| BackendError::internal(BACKEND, format!("bad URL: {e}")))?;
    client
        .get_connection_manager_with_config(config())
        .await
        .map_err(|e| err(&e))
}

/// How often a subscriber connection is pinged while it is up (see [`subscriber`]).
const SUBSCRIBER_PING: Duration = Duration::from_secs(1);

/// `TCP_USER_TIMEOUT` of a subscriber connection: how long data it sent (a ping) may stay
/// unacknowledged before the kernel drops the connection (tcp(7)).
const SUBSCRIBER_USER_TIMEOUT: Duration = Duration::from_secs(3);

/// A RESP3 connection whose pushes go to `on_push`; it re-subscribes after reconnecting,
/// and reconnects by itself when Redis goes away. `restored` is notified each time it has
/// (what Redis published meanwhile was not delivered).
///
/// A subscriber only receives, so a link that went silent (a partition; Redis' side of the
/// socket still queueing what it publishes) would be noticed by nothing: after the heal,
/// the backlog would arrive only when Redis' kernel next retransmits, which backs off
/// exponentially (RFC 6298: seconds after a partition of seconds). So it is pinged every
/// [`SUBSCRIBER_PING`], and its socket has a `TCP_USER_TIMEOUT` of
/// [`SUBSCRIBER_USER_TIMEOUT`]: an unanswered ping drops the connection, which is then
/// replaced (retried while Redis cannot be reached) and `restored` notified.
pub async fn subscriber(
    url: &str,
    on_push: impl Fn(PushInfo) + Send + Sync + 'static,
    restored: Option<Arc<Notify>>,
) -> Result<ConnectionManager, BackendError> {
    let bad_url = |e: redis::RedisError| BackendError::internal(BACKEND, format!("bad URL: {e}"));
    let info = resp3_url(url)
        .as_str()
        .into_connection_info()
        .map_err(bad_url)?
        .set_tcp_settings(
            redis::io::tcp::TcpSettings::default()
                .set_nodelay(true)
                .set_user_timeout(SUBSCRIBER_USER_TIMEOUT),
        );
    let client = redis::Client::open(info).map_err(bad_url)?;
    let lost = Arc::new(Notify::new());
    let signal = lost.clone();
    let sender = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
        if push.kind == PushKind::Disconnection {
            signal.notify_one();
        }
        on_push(push);
        Ok(())
    };
    let manager = client
        .get_connection_manager_with_config(
            config()
                .set_push_sender(sender)
                .set_automatic_resubscription(),
        )
        .await
        .map_err(|e| err(&e))?;
    // A subscriber sends no commands of its own, so nothing would notice the loss: ping it
    // while it is up (see above), and after a loss until the manager has reconnected (and
    // re-subscribed).
    let mut pinger = manager.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = lost.notified() => {}
                () = tokio::time::sleep(SUBSCRIBER_PING) => {
                    let _: Result<String, _> = redis::cmd("PING").query_async(&mut pinger).await;
                    continue;
                }
            }
            let mut delay = Duration::from_millis(100);
            loop {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut pinger).await;
                if pong.is_ok() {
                    tracing::info!("redis subscription connection restored");
                    if let Some(r) = &restored {
                        r.notify_one();
                    }
                    break;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    });
    Ok(manager)
}

/// The Redis PubSub of one node.
#[derive(Clone)]
pub struct RedisPubSub {
    publisher: ConnectionManager,
    subscriber: ConnectionManager,
}

impl std::fmt::Debug for RedisPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPubSub").finish_non_exhaustive()
    }
}

fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

impl RedisPubSub {
    /// Connects a publisher and a subscriber (RESP3) to `url`; what arrives on subscribed
    /// topics goes to `sink`. Errors: `unavailable` when Redis cannot be reached.
    pub async fn connect(url: &str, sink: Sink) -> Result<Self, BackendError> {
        Self::connect_notifying(url, sink, None).await
    }

    /// As [`RedisPubSub::connect`]; `restored` is notified each time the subscriber
    /// connection was lost and is back (see [`subscriber`]): what was published meanwhile
    /// did not arrive.
    pub async fn connect_notifying(
        url: &str,
        sink: Sink,
        restored: Option<Arc<Notify>>,
    ) -> Result<Self, BackendError> {
        let on_push = move |push: PushInfo| {
            if push.kind != PushKind::Message {
                return;
            }
            let (Some(channel), Some(payload)) = (
                push.data.first().and_then(bulk),
                push.data.get(1).and_then(bulk),
            ) else {
                return;
            };
            let Some(topic) = std::str::from_utf8(channel)
                .ok()
                .and_then(|c| c.parse::<Topic>().ok())
            else {
                return;
            };
            sink(Delivery {
                topic,
                payload: Bytes::copy_from_slice(payload),
            });
        };
        let subscriber = subscriber(url, on_push, restored).await?;
        Ok(Self {
            publisher: commands(url).await?,
            subscriber,
        })
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, topic: Topic, payload: Bytes) -> Result<(), BackendError> {
        let mut conn = self.publisher.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(topic.to_string())
            .arg(&payload[..])
            .query_async(&mut conn)
            .await
            .map_err(|e| err(&e))?;
        Ok(())
    }

    async fn subscribe(&self, topic: Topic) -> Result<(), BackendError> {
        self.subscriber
            .clone()
            .subscribe(topic.to_string())
            .await
            .map_err(|e| err(&e))
    }

    async fn unsubscribe(&self, topic: Topic) -> Result<(), BackendError> {
        self.subscriber
            .clone()
            .unsubscribe(topic.to_string())
            .await
            .map_err(|e| err(&e))
    }
}
