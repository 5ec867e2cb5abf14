//! An embedded node: everything in one process, under `PARLEY_DATA_DIR`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Notify;

use super::{cluster_inbox, moderator, snowflake};
use crate::auth::{Tokens, load_or_create_secret};
use crate::backend::local::LocalBlobs;
use crate::backend::memory::MemoryBus;
use crate::backend::presence_store::MemoryPresence;
use crate::backend::sqlite::{self, SqliteLog, SqliteStore};
use crate::backend::{Log, PubSub, Stores};
use crate::chat::owners::Ownership;
use crate::chat::{Backends, Chat, MembershipCache, Parts};
use crate::config::Config;
use crate::health::check;
use crate::hub::Hub;
use crate::persister::{self, Batching};

/// Added to the newest stored message's `created_at` at start, from which the embedded node
/// trusts its memory alone with idempotency keys (a send's window, 24 h back, must start
/// after it): covers a message made just after the one with the highest ID.
const KEYS_COMPLETE_MARGIN_MS: i64 = 60_000;

/// An embedded node: SQLite store and log, in-process pub/sub, local blobs, all under
/// `config.data_dir`. `addr` is where it listens (for its own blob URLs).
pub async fn embedded(config: Config, addr: SocketAddr) -> anyhow::Result<Arc<Chat>> {
    embedded_with(config, addr, Ownership::single_node()).await
}

/// [`embedded`] with another `ownership` (tests: a fencing that fences).
pub(crate) async fn embedded_with(
    config: Config,
    addr: SocketAddr,
    ownership: Ownership,
) -> anyhow::Result<Arc<Chat>> {
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

    // Every message from now on is made by this process, which remembers their idempotency
    // keys: a new send need not ask the store whether its key was used before, unless the
    // window reaches back to the messages stored before the start (or to keys evicted since).
    let keys_complete_since = store
        .newest_message_at()
        .await?
        .map_or(parley_protocol::Timestamp(i64::MIN), |t| {
            parley_protocol::Timestamp(t.0.saturating_add(KEYS_COMPLETE_MARGIN_MS))
        });

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
    let chat = Arc::new(Chat::new(Parts {
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
        ownership,
        presence: Arc::new(MemoryPresence::new(config_heartbeat)),
        checks,
        members_cache,
    }));
    chat.sequencing()
        .sequencer()
        .keys_complete_since(keys_complete_since);
    Ok(chat)
}
