//! Building a node from its configuration, and running it.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;

use crate::auth::{Tokens, load_or_create_secret};
use crate::backend::local::LocalBlobs;
use crate::backend::memory::MemoryBus;
use crate::backend::sqlite::{self, SqliteLog, SqliteStore};
use crate::backend::{BackendError, Log, PubSub, Sink, Stores};
use crate::chat::{Backends, Chat, Parts};
use crate::config::Config;
use crate::hub::Hub;
use crate::moderation::Moderator;
use crate::persister::{self, Batching};
use crate::snowflake::{Snowflake, SystemClock};

/// A pub/sub whose deliveries go to the hub created after it.
fn hub_sink() -> (Sink, Arc<OnceLock<Arc<Hub>>>) {
    let cell: Arc<OnceLock<Arc<Hub>>> = Arc::default();
    let target = cell.clone();
    let sink: Sink = Arc::new(move |delivery| {
        if let Some(hub) = target.get() {
            hub.dispatch(&delivery);
        }
    });
    (sink, cell)
}

/// An embedded node: SQLite store and log, in-process pub/sub, local blobs, all under
/// `config.data_dir`. `addr` is where it listens (for its own blob URLs).
pub async fn embedded(config: Config, addr: SocketAddr) -> anyhow::Result<Arc<Chat>> {
    let data = config.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating PARLEY_DATA_DIR {}", data.display()))?;
    let jwt = load_or_create_secret(config.jwt_secret.as_deref(), &data, "jwt-secret")
        .context("reading PARLEY_JWT_SECRET / the data directory's jwt-secret")?;
    let blob_key = load_or_create_secret(None, &data, "blob-key")
        .context("reading the data directory's blob-key")?;
    let moderator = Moderator::load(
        config.moderation_policy,
        config.moderation_words_file.as_deref(),
    )
    .context("PARLEY_MODERATION_WORDS_FILE")?;

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
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let local = LocalBlobs::new(data.join("media"), blob_key, &base_url);
    let (sink, cell) = hub_sink();
    let pubsub: Arc<dyn PubSub> = Arc::new(MemoryBus::new().endpoint(sink));
    let hub = Arc::new(Hub::new(pubsub));
    let _ = cell.set(hub.clone());

    let ids = Snowflake::new(
        config.snowflake_epoch_ms,
        config.worker_id,
        Duration::from_millis(config.max_clock_wait_ms),
        Arc::new(SystemClock),
    );
    let tokens = Tokens::new(&jwt, config.jwt_ttl_secs);
    Ok(Arc::new(Chat::new(Parts {
        config,
        backends: Backends {
            stores: Stores::from_backend(store),
            log,
            blobs: Arc::new(local.clone()),
            local_blobs: Some(local),
            notifications: None,
        },
        hub,
        ids,
        tokens,
        moderator: Arc::new(moderator),
        cluster: None,
        presence: crate::chat::PresenceStore::Local,
    })))
}

impl Chat {
    /// Whether the backends answer (for `/readyz`).
    pub async fn check_backends(&self) -> Result<(), BackendError> {
        self.stores.users.user(parley_protocol::Id(0)).await?;
        Ok(())
    }
}

/// Serves the node on `listener` until `shutdown` resolves, then closes every WebSocket with
/// 1001, lets in-flight sends finish and stops the background tasks.
pub async fn serve(
    listener: tokio::net::TcpListener,
    chat: Arc<Chat>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = chat.shutdown.clone();
    let background = tokio_util::task::TaskTracker::new();
    {
        let chat = chat.clone();
        background.spawn(async move { chat.run_presence().await });
    }
    background.spawn(
        chat.moderator
            .clone()
            .watch(Duration::from_secs(2), token.clone()),
    );
    {
        let (log, store, stop) = (
            chat.log.clone(),
            chat.stores.messages.clone(),
            token.clone(),
        );
        background.spawn(async move {
            while !stop.is_cancelled() {
                if let Err(e) = persister::run(
                    log.clone(),
                    store.clone(),
                    Batching::default(),
                    stop.clone(),
                )
                .await
                {
                    tracing::warn!("persister stopped: {e}; restarting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }
    let stop = token.clone();
    let result = axum::serve(listener, crate::http::app(chat.clone()))
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = shutdown => {}
                () = stop.cancelled() => {}
            }
            stop.cancel();
        })
        .await;
    token.cancel();
    chat.sessions.close();
    if tokio::time::timeout(Duration::from_secs(10), chat.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("some WebSocket sessions did not end within 10 s");
    }
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
