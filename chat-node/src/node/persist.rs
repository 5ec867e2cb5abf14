//! The commands besides `serve`: `migrate` (schemas and topics) and `persist` (the
//! persister process of a distributed deployment).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{run_persister, topics, watch_shards};
use crate::backend::kafka::{KafkaLog, ensure_topic};
use crate::backend::postgres::{PgStore, Schema, migrate};
use crate::config::Config;
use crate::health::check;
use crate::http::server;

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
