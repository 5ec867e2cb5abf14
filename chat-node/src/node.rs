//! Building a node from its configuration, and running it: `serve` (embedded or
//! distributed), `migrate` and `persist`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::{Tokens, load_or_create_secret};
use crate::backend::kafka::{KafkaLog, ensure_topic};
use crate::backend::local::LocalBlobs;
use crate::backend::memory::MemoryBus;
use crate::backend::postgres::{PgStore, Schema, migrate};
use crate::backend::presence_store::{MemoryPresence, RedisPresence};
use crate::backend::redis::{self as redis_backend, RedisPubSub};
use crate::backend::s3::S3Blobs;
use crate::backend::sqlite::{self, SqliteLog, SqliteStore};
use crate::backend::{Log, PubSub, Stores};
use crate::chat::owners::Ownership;
use crate::chat::{Backends, Chat, MembershipCache, Parts};
use crate::cluster::{Cluster, ClusterRing};
use crate::config::{Config, Distributed, Mode};
use crate::health::check;
use crate::http::server;
use crate::hub::{ClusterInbox, Hub};
use crate::moderation::Moderator;
use crate::persister::{self, Batching};
use crate::snowflake::{Snowflake, SystemClock};

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

/// An embedded node: SQLite store and log, in-process pub/sub, local blobs, all under
/// `config.data_dir`. `addr` is where it listens (for its own blob URLs).
pub async fn embedded(config: Config, addr: SocketAddr) -> anyhow::Result<Arc<Chat>> {
    let data = config.data_dir.clone();
    // Private: 0700, files 0600, tightened if found looser (backend::datadir).
    crate::backend::datadir::prepare(&data)
        .with_context(|| format!("creating PARLEY_DATA_DIR {}", data.display()))?;
    let jwt = load_or_create_secret(
        config.jwt_secret.as_ref().map(|s| s.expose().as_str()),
        &data,
        "jwt-secret",
    )
    .context("reading PARLEY_JWT_SECRET / the data directory's jwt-secret")?;
    let blob_key = load_or_create_secret(None, &data, "blob-key")
        .context("reading the data directory's blob-key")?;
    let moderator = moderator(&config)?;

    let pool = sqlite::open(&data.join("parley.db"))
        .await
        .with_context(|| format!("opening the database in PARLEY_DATA_DIR {}", data.display()))?;
    let store = Arc::new(SqliteStore::new(pool.clone()));
    let log: Arc<dyn Log> = Arc::new(SqliteLog::new(pool, "messages"));
    // Messages acknowledged before a crash reach the store before anything is served.
    let caught_up = persister::drain(log.as_ref(), store.as_ref(), Batching::default()).await?;
    if caught_up > 0 {
        tracing::info!(messages = caught_up, "persisted messages left in the log");
    }

    let base_url = config
        .public_base_url()
        .map_or_else(|| format!("http://{addr}"), str::to_owned);
    let local = LocalBlobs::new(data.join("media"), blob_key, &base_url);
    let members_cache = Arc::new(MembershipCache::default());
    let hub = Hub::connect(
        |sink| async move { Ok(Arc::new(MemoryBus::new().endpoint(sink)) as Arc<dyn PubSub>) },
        cluster_inbox(members_cache.clone(), Arc::new(Notify::new())),
    )
    .await?;
    let stores = Stores::from_backend(store);
    let users = stores.users.clone();
    let checks = vec![check("store", true, move || {
        let users = users.clone();
        async move { users.user(parley_protocol::Id(0)).await.map(|_| ()) }
    })];
    let config_heartbeat = config.heartbeat_interval;
    Ok(Arc::new(Chat::new(Parts {
        ids: snowflake(&config),
        tokens: Tokens::new(&jwt, config.jwt_ttl.as_secs()),
        config,
        backends: Backends {
            stores,
            log,
            blobs: Arc::new(local.clone()),
            local_blobs: Some(local),
            notifications: None,
        },
        hub,
        moderator,
        ownership: Ownership::single_node(),
        presence: Arc::new(MemoryPresence::new(config_heartbeat)),
        checks,
        members_cache,
    })))
}

fn topics(d: &Distributed) -> (String, String) {
    (
        format!("{}.messages", d.topic_prefix),
        format!("{}.notifications", d.topic_prefix),
    )
}

/// A distributed node: PostgreSQL, Kafka, Redis, S3, and the ring of `PARLEY_NODES`.
pub async fn distributed(config: Config) -> anyhow::Result<Node> {
    let d = config.distributed()?;
    let moderator = moderator(&config)?;
    let jwt = config.jwt_secret.clone().context("PARLEY_JWT_SECRET")?;
    let config_cluster_name = config.cluster.cluster_name.clone();
    let shards_file = config.files.get(parley_crd::env::SHARDS).cloned();
    let config_namespace = config.cluster.namespace.clone();
    let store = Arc::new(PgStore::new(
        d.directory_url.expose().as_str(),
        &d.shards,
        d.pool_size,
    )?);
    let shard_store = store.clone();
    let (messages, notifications) = topics(&d);
    let log = Arc::new(KafkaLog::new(d.kafka.clone(), &messages)?);
    let notifications = Arc::new(KafkaLog::new(d.kafka.clone(), &notifications)?);

    let members_cache = Arc::new(MembershipCache::default());
    let ring_poke = Arc::new(Notify::new());
    let redis_url = d.redis_url.expose().as_str();
    let hub = Hub::connect(
        |sink| async move {
            Ok(Arc::new(RedisPubSub::connect(redis_url, sink).await?) as Arc<dyn PubSub>)
        },
        cluster_inbox(members_cache.clone(), ring_poke.clone()),
    )
    .await
    .context("connecting to PARLEY_REDIS_URL and subscribing to the cluster topic")?;
    let redis = redis_backend::commands(d.redis_url.expose().as_str())
        .await
        .context("connecting to PARLEY_REDIS_URL")?;
    let cluster = Arc::new(Cluster::new(
        &config.node_name,
        d.nodes.clone(),
        crate::cluster::Wiring {
            leases: d.leases,
            namespace: d.topic_prefix.clone(),
            redis: redis.clone(),
            pubsub: hub.pubsub().clone(),
            poke: ring_poke,
        },
    ));
    cluster.tick().await;
    let presence = RedisPresence::new(
        redis.clone(),
        &d.topic_prefix,
        &config.node_name,
        config.heartbeat_interval,
    );
    let blobs = Arc::new(S3Blobs::new(&d.s3));

    // Expired presence keys, and Redis coming back empty after a restart.
    let (expired_tx, mut expired_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let restored = Arc::new(Notify::new());
    let mut expiry = redis_backend::subscriber(
        d.redis_url.expose().as_str(),
        move |push| {
            if push.kind == redis::PushKind::Message
                && let Some(redis::Value::BulkString(key)) = push.data.get(1)
            {
                let _ = expired_tx.send(String::from_utf8_lossy(key).into_owned());
            }
        },
        Some(restored.clone()),
    )
    .await
    .context("connecting to PARLEY_REDIS_URL")?;
    expiry
        .subscribe("__keyevent@0__:expired")
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to key expiry: {e}"))?;
    let parse = presence.clone();

    let mut checks = vec![];
    {
        let s = store.clone();
        checks.push(check("postgres directory", true, move || {
            let s = s.clone();
            async move { crate::backend::postgres::ping_pool(s.directory()).await }
        }));
        // The shards of the map in force at each check: it can change live.
        let s = store.clone();
        checks.push(crate::health::dynamic(move || {
            s.shard_pools()
                .into_iter()
                .map(|(name, pool)| {
                    check(format!("postgres shard {name}"), false, move || {
                        let pool = pool.clone();
                        async move { crate::backend::postgres::ping_pool(&pool).await }
                    })
                })
                .collect()
        }));
        let r = redis.clone();
        checks.push(check("redis", true, move || {
            let mut r = r.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut r)
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::backend::redis::err(&e))
            }
        }));
        let l = log.clone();
        checks.push(check("kafka", true, move || {
            let l = l.clone();
            async move { l.high_watermarks().await.map(|_| ()) }
        }));
        let b = blobs.clone();
        checks.push(check("s3", false, move || {
            let b = b.clone();
            async move { b.ping().await }
        }));
    }

    let internal = tokio::net::TcpListener::bind(d.internal_listen)
        .await
        .with_context(|| format!("binding PARLEY_INTERNAL_LISTEN={}", d.internal_listen))?;
    let chat = Arc::new(Chat::new(Parts {
        ids: snowflake(&config),
        tokens: Tokens::new(jwt.expose().as_bytes(), config.jwt_ttl.as_secs()),
        config,
        backends: Backends {
            stores: Stores::from_backend(store),
            log,
            blobs,
            local_blobs: None,
            notifications: Some(notifications),
        },
        hub,
        moderator,
        ownership: Ownership::of(ClusterRing::new(
            cluster.clone(),
            crate::internal::PeerClient::new(d.cluster_secret.clone()),
        )),
        presence: Arc::new(presence),
        checks,
        members_cache,
    }));
    let watch = match &config_cluster_name {
        Some(name) => {
            // The S3 SDK links aws-lc-rs and kube links ring: name the TLS provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (PARLEY_CLUSTER_NAME is set)")?;
            Some((client, config_namespace.clone(), name.clone()))
        }
        None => None,
    };
    let ring_cluster = cluster.clone();
    let mut tasks: Vec<Task> = vec![
        Box::new(move |chat: Arc<Chat>| {
            Box::pin(async move {
                let stop = chat.lifecycle().shutdown().clone();
                cluster.run(stop).await;
            })
        }),
        Box::new(move |chat: Arc<Chat>| {
            Box::pin(async move {
                let _keep = expiry;
                loop {
                    tokio::select! {
                        key = expired_rx.recv() => match key {
                            Some(key) => {
                                if let Some(e) = parse.expiry(&key) {
                                    chat.presence().expired(e.user, e.gone).await;
                                }
                            }
                            None => return,
                        },
                        () = chat.lifecycle().shutdown().cancelled() => return,
                    }
                }
            })
        }),
        Box::new(move |chat: Arc<Chat>| {
            Box::pin(async move {
                loop {
                    tokio::select! {
                        () = restored.notified() => chat.presence().restore().await,
                        () = chat.lifecycle().shutdown().cancelled() => return,
                    }
                }
            })
        }),
    ];
    if let Some((client, namespace, name)) = watch {
        tasks.push(Box::new(move |chat: Arc<Chat>| {
            Box::pin(crate::k8s::watch_ring(
                client,
                namespace,
                name,
                ring_cluster,
                chat.lifecycle().shutdown().clone(),
            ))
        }));
    }
    if let Some(path) = shards_file {
        tasks.push(Box::new(move |chat: Arc<Chat>| {
            Box::pin(watch_shards(
                shard_store,
                path,
                chat.lifecycle().shutdown().clone(),
            ))
        }));
    }
    Ok(Node {
        chat,
        tasks,
        internal: Some(InternalApi {
            listener: internal,
            secret: d.cluster_secret,
        }),
    })
}

/// Serves the node on `listener` (and its internal listener), with the timeouts and
/// connection caps of [`server`] (`PARLEY_HTTP_*`), until `shutdown` resolves, then drains
/// it ([`drain`]): no new clients, the ring given up, the WebSockets closed with
/// `reconnect` and 4010 over `PARLEY_DRAIN_MS`. Then it stops the background tasks.
/// Cancelling `chat.lifecycle().shutdown()` (a second signal) is the hard path: the sockets still open
/// close at once with 1001.
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
    let token = chat.lifecycle().shutdown().clone();
    let background = tokio_util::task::TaskTracker::new();
    for task in tasks {
        background.spawn(task(chat.clone()));
    }
    {
        let chat = chat.clone();
        background.spawn(async move {
            chat.presence()
                .run(chat.lifecycle().shutdown().clone())
                .await
        });
    }
    background.spawn(
        chat.moderator()
            .clone()
            .watch(Duration::from_secs(2), token.clone()),
    );
    if let Some(own) = chat.own_log() {
        // Embedded: the node persists its own log.
        let (log, store, stop) = (own.log.clone(), own.store.clone(), token.clone());
        background.spawn(run_persister(log, store, Batching::default(), stop));
    }
    let internal_server = internal.map(
        |InternalApi {
             listener: l,
             secret,
         }| {
            let stop = token.clone();
            let app = crate::http::internal::router(chat.clone(), secret);
            let limits = chat.config().http.clone();
            tokio::spawn(async move {
                server::serve(l, app, &limits, async move { stop.cancelled().await }).await
            })
        },
    );
    let stop = token.clone();
    let draining = chat.clone();
    // The server keeps accepting during the drain (REST is served until the end); its
    // shutdown begins once the drain is over.
    let result = server::serve(listener, app(chat.clone()), &chat.config().http, async move {
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
    .await;
    token.cancel();
    chat.lifecycle().sessions().close();
    if tokio::time::timeout(Duration::from_secs(10), chat.lifecycle().sessions().wait())
        .await
        .is_err()
    {
        tracing::warn!("some WebSocket sessions did not end within 10 s");
    }
    if let Some(server) = internal_server {
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    }
    chat.lifecycle().membership().release().await;
    background.close();
    if tokio::time::timeout(Duration::from_secs(10), background.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 10 s");
    }
    // What the persister had not reached stays in the durable log for the next start.
    result
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

/// `chat-node migrate`: the directory and every shard to the newest schema, and the Kafka
/// topics.
pub async fn migrate_all(config: &Config) -> anyhow::Result<()> {
    let d = config.distributed()?;
    let store = PgStore::new(d.directory_url.expose().as_str(), &d.shards, 2)?;
    let n = migrate(store.directory(), Schema::Directory)
        .await
        .context("migrating PARLEY_DIRECTORY_URL")?;
    println!("directory: {n} migration(s) applied");
    for (name, pool) in store.shard_pools() {
        let n = migrate(&pool, Schema::Shard)
            .await
            .with_context(|| format!("migrating shard {name} (PARLEY_SHARDS)"))?;
        println!("shard {name}: {n} migration(s) applied");
    }
    let (messages, notifications) = topics(&d);
    for topic in [&messages, &notifications] {
        ensure_topic(&d.kafka, topic, config.cluster.kafka_partitions)
            .await
            .with_context(|| format!("creating topic {topic} on PARLEY_KAFKA_BOOTSTRAP"))?;
        println!("topic {topic}: present");
    }
    Ok(())
}

/// `chat-node persist`: moves `<prefix>.messages` into the shards until `shutdown`, and
/// serves `/healthz`, `/readyz` and `/metrics` on `listener`.
pub async fn persist(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let d = config.distributed()?;
    let store = Arc::new(PgStore::new(
        d.directory_url.expose().as_str(),
        &d.shards,
        d.pool_size,
    )?);
    let (messages, _) = topics(&d);
    let log = Arc::new(KafkaLog::new(d.kafka.clone(), &messages)?);
    let stop = CancellationToken::new();
    let mut checks = vec![];
    {
        let s = store.clone();
        checks.push(check("postgres", true, move || {
            let s = s.clone();
            async move { s.ping().await }
        }));
        let l = log.clone();
        checks.push(check("kafka", true, move || {
            let l = l.clone();
            async move { l.high_watermarks().await.map(|_| ()) }
        }));
    }
    let checks = Arc::new(checks);
    let app = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let checks = checks.clone();
                async move { crate::http::health_answer(crate::health::run(&checks).await) }
            }),
        );
    if let Some(path) = config.files.get(parley_crd::env::SHARDS).cloned() {
        tokio::spawn(watch_shards(store.clone(), path, stop.clone()));
    }
    let worker = tokio::spawn(run_persister(log, store, d.batching, stop.clone()));
    let s = stop.clone();
    server::serve(listener, app, &config.http, async move {
        tokio::select! {
            () = shutdown => {}
            () = s.cancelled() => {}
        }
    })
    .await?;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    Ok(())
}
