//! A distributed node: PostgreSQL, Kafka, Redis, S3, and the ring of `PARLEY_NODES`, built
//! in named steps.
//!
//! ```text
//!   distributed(config)
//!     ├─ PgStore (directory + shards), KafkaLog (messages, notifications)
//!     ├─ connect_hub: RedisPubSub ─► Hub, cluster topic ─► membership cache, ring poke
//!     ├─ join_ring: Cluster (leases in Redis), first tick
//!     ├─ RedisPresence, PresenceExpiry (key-expiry notifications, Redis restarts)
//!     ├─ checks: directory, shards, redis, kafka, s3
//!     ├─ bind_internal, Chat (ClusterRing + PeerClient for channel ownership,
//!     │                       RedisFencing for the owner terms)
//!     └─ tasks: ring ticks, presence expiry, presence restore, [ChatCluster], [shard map]
//! ```

use std::sync::Arc;

use anyhow::Context as _;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

use super::fencing::RedisFencing;
use super::ring::ClusterRing;
use super::{InternalApi, Node, Task, cluster_inbox, moderator, snowflake, topics, watch_shards};
use crate::auth::Tokens;
use crate::backend::kafka::KafkaLog;
use crate::backend::postgres::PgStore;
use crate::backend::presence_store::RedisPresence;
use crate::backend::redis::{self as redis_backend, RedisPubSub};
use crate::backend::s3::S3Blobs;
use crate::backend::{PubSub, Stores};
use crate::chat::owners::Ownership;
use crate::chat::{Backends, Chat, MembershipCache, Parts};
use crate::cluster::Cluster;
use crate::config::{Config, Distributed};
use crate::health::{Check, check};
use crate::hub::Hub;
use crate::internal::PeerClient;

/// A distributed node: PostgreSQL, Kafka, Redis, S3, and the ring of `PARLEY_NODES`.
pub async fn distributed(config: Config) -> anyhow::Result<Node> {
    let d = config.distributed()?;
    let moderator = moderator(&config)?;
    let jwt = config.jwt_secret.clone().context("PARLEY_JWT_SECRET")?;
    let store = Arc::new(PgStore::new(
        d.directory_url.expose().as_str(),
        &d.shards,
        d.pool_size,
    )?);
    let (messages, notifications) = topics(&d);
    let log = Arc::new(KafkaLog::new(d.kafka.clone(), &messages)?);
    let notifications = Arc::new(KafkaLog::new(d.kafka.clone(), &notifications)?);
    let members_cache = Arc::new(MembershipCache::default());
    let ring_poke = Arc::new(Notify::new());
    let pubsub_restored = Arc::new(Notify::new());
    let hub = connect_hub(&d, &members_cache, &ring_poke, pubsub_restored.clone()).await?;
    let redis = redis_backend::commands(d.redis_url.expose().as_str())
        .await
        .context("connecting to PARLEY_REDIS_URL")?;
    let cluster = join_ring(&config, &d, &redis, &hub, ring_poke).await;
    let presence = RedisPresence::new(
        redis.clone(),
        &d.topic_prefix,
        &config.node_name,
        config.heartbeat_interval,
    );
    let blobs = Arc::new(S3Blobs::new(&d.s3));
    let expiry = PresenceExpiry::subscribe(&d).await?;
    let checks = checks(&store, &redis, &log, &blobs);
    let internal = bind_internal(&d).await?;
    let mut tasks = background_tasks(&config, &store, &cluster, &presence, expiry);
    tasks.push(hub_resync(pubsub_restored, members_cache.clone()));
    let ring_watch = RingWatch::of(&config);
    let chat = Arc::new(Chat::new(Parts {
        ids: snowflake(&config),
        tokens: Tokens::new(jwt.expose().as_bytes(), config.jwt_ttl.as_secs()),
        backends: Backends {
            stores: Stores::from_backend(store),
            log,
            blobs,
            local_blobs: None,
            notifications: Some(notifications),
        },
        hub,
        moderator,
        ownership: Ownership::of(
            ClusterRing::new(cluster.clone(), PeerClient::new(d.cluster_secret.clone())),
            Arc::new(RedisFencing::new(redis.clone(), &d.topic_prefix)),
        ),
        presence: Arc::new(presence),
        checks,
        members_cache,
        config,
    }));
    if let Some(task) = ring_watch.task(cluster).await? {
        tasks.push(task);
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

/// The hub over Redis pub/sub; the `cluster` topic goes to the membership cache and, for
/// `RingChanged`, to `ring_poke`. `restored` is notified each time the pub/sub's subscriber
/// connection was replaced (see [`hub_resync`]).
async fn connect_hub(
    d: &Distributed,
    members_cache: &Arc<MembershipCache>,
    ring_poke: &Arc<Notify>,
    restored: Arc<Notify>,
) -> anyhow::Result<Arc<Hub>> {
    let redis_url = d.redis_url.expose().as_str();
    Hub::connect(
        |sink| async move {
            let pubsub = RedisPubSub::connect_notifying(redis_url, sink, Some(restored)).await?;
            Ok(Arc::new(pubsub) as Arc<dyn PubSub>)
        },
        cluster_inbox(members_cache.clone(), ring_poke.clone()),
    )
    .await
    .context("connecting to PARLEY_REDIS_URL and subscribing to the cluster topic")
}

/// Each time the hub's subscriber connection to Redis was replaced, events published while
/// it was down never reached this node: every local connection is told to resync its
/// channels (`resync_required`), and the membership cache, whose invalidations may be among
/// them, is cleared.
fn hub_resync(restored: Arc<Notify>, members_cache: Arc<MembershipCache>) -> Task {
    on_each_notification(restored, move |chat| {
        members_cache.clear();
        let frames = chat.hub().resync_subscribers();
        tracing::warn!(
            frames,
            "the pub/sub subscription was down: local connections told to resync"
        );
        async {}
    })
}

/// A task that runs `action` each time `notify` is notified, until the node shuts down.
fn on_each_notification<F, Fut>(notify: Arc<Notify>, action: F) -> Task
where
    F: Fn(Arc<Chat>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    Box::new(move |chat: Arc<Chat>| {
        Box::pin(async move {
            loop {
                tokio::select! {
                    () = notify.notified() => action(chat.clone()).await,
                    () = chat.lifecycle().shutdown().cancelled() => return,
                }
            }
        })
    })
}

/// This node's membership of the ring, with its lease renewed once.
async fn join_ring(
    config: &Config,
    d: &Distributed,
    redis: &ConnectionManager,
    hub: &Hub,
    ring_poke: Arc<Notify>,
) -> Arc<Cluster> {
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
    cluster
}

/// Expired presence keys, and Redis coming back empty after a restart: a subscription of
/// its own (`__keyevent@0__:expired`).
struct PresenceExpiry {
    /// Kept open while the node runs.
    subscription: ConnectionManager,
    /// The names of the keys that expired.
    keys: UnboundedReceiver<String>,
    /// Notified when Redis is back after a restart.
    restored: Arc<Notify>,
}

impl PresenceExpiry {
    async fn subscribe(d: &Distributed) -> anyhow::Result<Self> {
        let (expired_tx, keys) = tokio::sync::mpsc::unbounded_channel::<String>();
        let restored = Arc::new(Notify::new());
        let mut subscription = redis_backend::subscriber(
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
        subscription
            .subscribe("__keyevent@0__:expired")
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to key expiry: {e}"))?;
        Ok(Self {
            subscription,
            keys,
            restored,
        })
    }
}

/// Readiness checks: the directory, each shard of the map in force, Redis, Kafka, S3.
fn checks(
    store: &Arc<PgStore>,
    redis: &ConnectionManager,
    log: &Arc<KafkaLog>,
    blobs: &Arc<S3Blobs>,
) -> Vec<Arc<dyn Check>> {
    let s = store.clone();
    let directory = check("postgres directory", true, move || {
        let s = s.clone();
        async move { crate::backend::postgres::ping_pool(s.directory()).await }
    });
    // The shards of the map in force at each check: it can change live.
    let s = store.clone();
    let shards = crate::health::dynamic(move || {
        s.shard_pools()
            .into_iter()
            .map(|(name, pool)| {
                check(format!("postgres shard {name}"), false, move || {
                    let pool = pool.clone();
                    async move { crate::backend::postgres::ping_pool(&pool).await }
                })
            })
            .collect()
    });
    let r = redis.clone();
    let redis = check("redis", true, move || {
        let mut r = r.clone();
        async move {
            redis::cmd("PING")
                .query_async::<String>(&mut r)
                .await
                .map(|_| ())
                .map_err(|e| crate::backend::redis::err(&e))
        }
    });
    let l = log.clone();
    let kafka = check("kafka", true, move || {
        let l = l.clone();
        async move { l.high_watermarks().await.map(|_| ()) }
    });
    let b = blobs.clone();
    let s3 = check("s3", false, move || {
        let b = b.clone();
        async move { b.ping().await }
    });
    vec![directory, shards, redis, kafka, s3]
}

async fn bind_internal(d: &Distributed) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(d.internal_listen)
        .await
        .with_context(|| format!("binding PARLEY_INTERNAL_LISTEN={}", d.internal_listen))
}

/// What runs while the node serves: the ring's ticks, presence expiry and restore, and the
/// shard map's reloads when it comes from a file.
fn background_tasks(
    config: &Config,
    store: &Arc<PgStore>,
    cluster: &Arc<Cluster>,
    presence: &RedisPresence,
    expiry: PresenceExpiry,
) -> Vec<Task> {
    let mut tasks = vec![
        ring_ticks(cluster.clone()),
        presence_expiry(expiry.subscription, expiry.keys, presence.clone()),
        presence_restore(expiry.restored),
    ];
    if let Some(path) = config.files.get(parley_crd::env::SHARDS).cloned() {
        let store = store.clone();
        tasks.push(Box::new(move |chat: Arc<Chat>| {
            Box::pin(watch_shards(
                store,
                path,
                chat.lifecycle().shutdown().clone(),
            ))
        }));
    }
    tasks
}

/// Renews the lease and reads the ring until the node stops.
fn ring_ticks(cluster: Arc<Cluster>) -> Task {
    Box::new(move |chat: Arc<Chat>| {
        Box::pin(async move {
            let stop = chat.lifecycle().shutdown().clone();
            cluster.run(stop).await;
        })
    })
}

/// Hands each expired presence key to the chat's presence.
fn presence_expiry(
    subscription: ConnectionManager,
    mut keys: UnboundedReceiver<String>,
    presence: RedisPresence,
) -> Task {
    Box::new(move |chat: Arc<Chat>| {
        Box::pin(async move {
            let _keep = subscription;
            loop {
                tokio::select! {
                    key = keys.recv() => match key {
                        Some(key) => {
                            if let Some(e) = presence.expiry(&key) {
                                chat.presence().expired(e.user, e.gone).await;
                            }
                        }
                        None => return,
                    },
                    () = chat.lifecycle().shutdown().cancelled() => return,
                }
            }
        })
    })
}

/// Writes this node's connections back each time Redis returns empty.
fn presence_restore(restored: Arc<Notify>) -> Task {
    on_each_notification(
        restored,
        |chat| async move { chat.presence().restore().await },
    )
}

/// The ChatCluster whose ring members the node follows (`PARLEY_CLUSTER_NAME`), if any.
struct RingWatch {
    namespace: String,
    name: Option<String>,
}

impl RingWatch {
    fn of(config: &Config) -> Self {
        Self {
            namespace: config.cluster.namespace.clone(),
            name: config.cluster.cluster_name.clone(),
        }
    }

    /// A task that follows the ChatCluster's ring members into `cluster`; none without a
    /// ChatCluster. Errors: the Kubernetes API cannot be reached.
    async fn task(self, cluster: Arc<Cluster>) -> anyhow::Result<Option<Task>> {
        let Some(name) = self.name else {
            return Ok(None);
        };
        // The S3 SDK links aws-lc-rs and kube links ring: name the TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (PARLEY_CLUSTER_NAME is set)")?;
        let namespace = self.namespace;
        Ok(Some(Box::new(move |chat: Arc<Chat>| {
            Box::pin(crate::k8s::watch_ring(
                client,
                namespace,
                name,
                cluster,
                chat.lifecycle().shutdown().clone(),
            ))
        })))
    }
}
