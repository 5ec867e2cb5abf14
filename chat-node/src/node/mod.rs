//! Building a node from its configuration, and running it: `serve` (embedded or
//! distributed), `migrate` and `persist`. This is the top of the crate: it builds the
//! backends, the hub and the chat service, and hands them to the HTTP servers.
//!
//! ```text
//!   build(config) ─┬─ embedded(): SQLite store + log, MemoryBus, local blobs, SingleNode
//!                  └─ distributed(): PostgreSQL, Kafka, Redis pub/sub + presence, S3,
//!                                    Cluster leases + ClusterRing, RedisFencing (owner
//!                                    terms), background tasks
//!   serve(listener, node, shutdown)
//!     ├─ background: node tasks, presence ticks, moderation words, own persister (embedded)
//!     ├─ internal API (distributed): http::internal::router
//!     ├─ public API: app() = http::app + ws::upgrade ─ until shutdown, then drain()
//!     └─ stop: sessions closed, internal server, ring released, background stopped
//! ```

mod distributed;
mod embedded;
mod fencing;
mod persist;
mod ring;

pub use distributed::distributed;
pub use embedded::embedded;
#[cfg(test)]
pub(crate) use embedded::embedded_with;
pub use fencing::RedisFencing;
pub use persist::{migrate_all, persist};
pub use ring::ClusterRing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::Log;
use crate::backend::postgres::PgStore;
use crate::chat::{Chat, MembershipCache};
use crate::config::{Config, Distributed, Mode};
use crate::http::server;
use crate::hub::ClusterInbox;
use crate::moderation::Moderator;
use crate::persister::{self, Batching};
use crate::snowflake::{Snowflake, SystemClock};

/// How long the end of a shutdown waits for each of sessions, servers and tasks.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The node's router: the REST API and the rest of [`crate::http`], with the WebSocket
/// endpoint of [`crate::ws`].
pub fn app(chat: Arc<Chat>) -> axum::Router {
    crate::http::app(chat, axum::routing::get(crate::ws::upgrade))
}

/// A background task a node runs while it serves.
pub type Task = Box<dyn FnOnce(Arc<Chat>) -> BoxFuture<'static, ()> + Send>;

/// A node ready to serve: its chat service, the background tasks of its backends, and (in
/// distributed mode) the node-to-node API.
pub struct Node {
    pub chat: Arc<Chat>,
    pub tasks: Vec<Task>,
    pub internal: Option<InternalApi>,
}

/// Where the node-to-node API ([`crate::http::internal`]) listens, and the secret it wants.
#[derive(Debug)]
pub struct InternalApi {
    pub listener: tokio::net::TcpListener,
    pub secret: crate::secret::Secret,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("chat", &self.chat)
            .finish_non_exhaustive()
    }
}

/// The `cluster` topic's events: `RingChanged` to `ring` (the cluster's tick), the rest to
/// the membership cache.
fn cluster_inbox(cache: Arc<MembershipCache>, ring: Arc<Notify>) -> ClusterInbox {
    Arc::new(move |payload| match serde_json::from_slice(payload) {
        Ok(crate::internal::ClusterEvent::RingChanged) => ring.notify_one(),
        _ => cache.apply(payload),
    })
}

fn snowflake(config: &Config) -> Snowflake {
    Snowflake::new(
        config.snowflake_epoch_ms,
        config.worker_id,
        config.max_clock_wait,
        config.max_id_lead,
        Arc::new(SystemClock),
    )
}

fn moderator(config: &Config) -> anyhow::Result<Arc<Moderator>> {
    Ok(Arc::new(
        Moderator::load(
            config.moderation_policy,
            config.moderation_words_file.as_deref(),
        )
        .context("PARLEY_MODERATION_WORDS_FILE")?,
    ))
}

/// Builds the node `config.mode` asks for; `addr` is where it listens.
pub async fn build(config: Config, addr: SocketAddr) -> anyhow::Result<Node> {
    match config.mode {
        Mode::Embedded => Ok(Node {
            chat: embedded(config, addr).await?,
            tasks: Vec::new(),
            internal: None,
        }),
        Mode::Distributed => distributed(config).await,
    }
}

fn topics(d: &Distributed) -> (String, String) {
    (
        format!("{}.messages", d.topic_prefix),
        format!("{}.notifications", d.topic_prefix),
    )
}

/// Serves the node on `listener` (and its internal listener), with the timeouts and
/// connection caps of [`server`] (`PARLEY_HTTP_*`), until `shutdown` resolves, then drains
/// it ([`drain`]): no new clients, the ring given up, the WebSockets closed with
/// `reconnect` and 4010 over `PARLEY_DRAIN_MS`. Then it stops the background tasks.
/// Cancelling the chat's shutdown token (a second signal) is the hard path: the sockets
/// still open close at once with 1001.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Node {
        chat,
        tasks,
        internal,
    } = node;
    let background = spawn_background(&chat, tasks);
    let internal_server = internal.map(|api| serve_internal(&chat, api));
    let result = serve_public(listener, &chat, shutdown).await;
    stop(&chat, background, internal_server).await;
    // What the persister had not reached stays in the durable log for the next start.
    result
}

/// Starts what runs beside the servers: the node's `tasks`, presence ticks, the moderation
/// word list's reloads and, on an embedded node, its own persister.
fn spawn_background(chat: &Arc<Chat>, tasks: Vec<Task>) -> TaskTracker {
    let token = chat.lifecycle().shutdown().clone();
    let background = TaskTracker::new();
    for task in tasks {
        background.spawn(task(chat.clone()));
    }
    let presence = chat.presence().clone();
    background.spawn({
        let stop = token.clone();
        async move { presence.run(stop).await }
    });
    background.spawn(
        chat.moderator()
            .clone()
            .watch(Duration::from_secs(2), token.clone()),
    );
    if let Some(own) = chat.own_log() {
        // Embedded: the node persists its own log.
        let (log, store) = (own.log.clone(), own.store.clone());
        background.spawn(run_persister(log, store, Batching::default(), token));
    }
    background
}

/// Serves the node-to-node API until the node's shutdown token is cancelled.
fn serve_internal(chat: &Arc<Chat>, api: InternalApi) -> JoinHandle<std::io::Result<()>> {
    let stop = chat.lifecycle().shutdown().clone();
    let app = crate::http::internal::router(chat.clone(), api.secret);
    let limits = chat.config().http.clone();
    tokio::spawn(async move {
        server::serve(api.listener, app, &limits, async move {
            stop.cancelled().await;
        })
        .await
    })
}

/// Serves the public API until `shutdown`, then drains. The server keeps accepting during
/// the drain (REST is served until the end); its shutdown begins once the drain is over, or
/// at once on a hard shutdown.
async fn serve_public(
    listener: tokio::net::TcpListener,
    chat: &Arc<Chat>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = chat.lifecycle().shutdown().clone();
    let draining = chat.clone();
    server::serve(listener, app(chat.clone()), &chat.config().http, async move {
        tokio::select! {
            () = shutdown => {
                tokio::select! {
                    () = drain(&draining) => {}
                    () = stop.cancelled() => tracing::warn!(
                        "hard shutdown during the drain: the WebSockets still open close with 1001"
                    ),
                }
            }
            () = stop.cancelled() => {}
        }
        stop.cancel();
    })
    .await
}

/// The end of a shutdown: the sessions closed, the internal server stopped, the ring
/// released, the background tasks stopped (each waited for [`STOP_WAIT`] at most).
async fn stop(
    chat: &Arc<Chat>,
    background: TaskTracker,
    internal_server: Option<JoinHandle<std::io::Result<()>>>,
) {
    chat.lifecycle().shutdown().cancel();
    let sessions = chat.lifecycle().sessions();
    sessions.close();
    if tokio::time::timeout(STOP_WAIT, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("some WebSocket sessions did not end within 10 s");
    }
    if let Some(server) = internal_server {
        let _ = tokio::time::timeout(STOP_WAIT, server).await;
    }
    chat.lifecycle().membership().release().await;
    background.close();
    if tokio::time::timeout(STOP_WAIT, background.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 10 s");
    }
}

/// Drains a stopping node (see [`crate::drain`]): `/readyz` fails and new WebSocket
/// upgrades are refused with 503 `unavailable`; in distributed mode the node then gives its
/// channels up (its last append finished, its lease deleted, the others told to look
/// again); then every open WebSocket gets `reconnect` {after_ms} and close 4010 at a
/// jittered point of `PARLEY_DRAIN_MS`. Returns when they have all ended, or a few seconds
/// after the window.
pub async fn drain(chat: &Arc<Chat>) {
    let sessions = chat.lifecycle().drain().begin();
    tracing::info!(sockets = sessions.len(), "draining");
    chat.lifecycle().membership().leave().await;
    chat.lifecycle()
        .drain()
        .spread(sessions, chat.config().drain_window)
        .await;
    tracing::info!(open = chat.lifecycle().drain().open_sessions(), "drained");
}

/// Re-reads the shard map from `path` (a mounted Secret, `PARLEY_SHARDS_FILE`) every two
/// seconds and puts a changed, valid map in force without a restart.
async fn watch_shards(store: Arc<PgStore>, path: std::path::PathBuf, stop: CancellationToken) {
    let mut last = std::fs::read_to_string(&path).unwrap_or_default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = stop.cancelled() => return,
        }
        let Ok(now) = std::fs::read_to_string(&path) else {
            continue;
        };
        if now == last {
            continue;
        }
        match crate::config::parse_shards(now.trim()) {
            Ok(specs) => match store.set_shards(&specs) {
                Ok(()) => tracing::info!(shards = specs.len(), "new shard map in force"),
                Err(e) => tracing::warn!("refused the new shard map: {e}"),
            },
            Err(e) => tracing::warn!("refused the new shard map: {e}"),
        }
        last = now;
    }
}

/// Runs the persister until `stop`, restarting it after failures.
async fn run_persister(
    log: Arc<dyn Log>,
    store: Arc<dyn crate::backend::MessageStore>,
    batching: Batching,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        if let Err(e) = persister::run(log.clone(), store.clone(), batching, stop.clone()).await {
            tracing::warn!("persister stopped: {e}; restarting");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}
