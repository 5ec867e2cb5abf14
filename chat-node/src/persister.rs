//! The persister: moves messages from the durable log into the store in batches.
//!
//! At-least-once into an idempotent store: a batch is inserted (duplicates skipped), and
//! only then is the log position committed. A failing store is retried with back-off; the
//! batch is kept, so nothing is lost or doubled.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, Log, LogConsumer, MessageStore, StoredMessage};

/// Batching of the persister.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most messages per insert.
    pub max_messages: usize,
    /// How long to wait for a batch to fill.
    pub max_wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_messages: 500,
            max_wait: Duration::from_millis(20),
        }
    }
}

/// The consumer group persisters share.
pub const GROUP: &str = "persisters";

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until `shutdown`; `idle` is told each time the log had nothing left.
pub async fn run(
    log: Arc<dyn Log>,
    store: Arc<dyn MessageStore>,
    batching: Batching,
    shutdown: CancellationToken,
) -> Result<(), BackendError> {
    let mut consumer = log.consumer(GROUP).await?;
    while !shutdown.is_cancelled() {
        tokio::select! {
            r = step(consumer.as_mut(), store.as_ref(), batching, &shutdown) => { r?; }
            () = shutdown.cancelled() => break,
        }
    }
    Ok(())
}

/// Persists everything the log holds now, then returns how many records it handled
/// (start-up catch-up).
pub async fn drain(
    log: &dyn Log,
    store: &dyn MessageStore,
    batching: Batching,
) -> Result<usize, BackendError> {
    let mut consumer = log.consumer(GROUP).await?;
    let never = CancellationToken::new();
    let mut total = 0;
    loop {
        let n = step(consumer.as_mut(), store, batching, &never).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// One batch: poll, insert (retrying), commit. Returns how many records it handled.
async fn step(
    consumer: &mut dyn LogConsumer,
    store: &dyn MessageStore,
    batching: Batching,
    shutdown: &CancellationToken,
) -> Result<usize, BackendError> {
    let records = consumer
        .poll(batching.max_messages, batching.max_wait)
        .await?;
    if records.is_empty() {
        return Ok(0);
    }
    let mut batch = Vec::with_capacity(records.len());
    for r in &records {
        match serde_json::from_slice::<StoredMessage>(&r.payload) {
            Ok(m) => batch.push(m),
            // A record no version of the node wrote: skipping it is all that can be done.
            Err(e) => tracing::error!(key = %r.key, "undecodable log record skipped: {e}"),
        }
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.insert_messages(&batch).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(
                    messages = batch.len(),
                    "persisting failed, retrying in {backoff:?}: {e}"
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Err(e),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = consumer.commit().await {
        tracing::warn!("committing the log position failed, retrying in {backoff:?}: {e}");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return Err(e),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sqlite::{SqliteLog, SqliteStore, open_memory};
    use crate::backend::{LogRecord, Page};
    use parley_protocol::{Id, Timestamp};

    fn msg(seq: u64) -> StoredMessage {
        StoredMessage {
            id: Id(1000 + seq),
            channel_id: Id(7),
            seq,
            author_id: Id(1),
            text: format!("m{seq}"),
            client_msg_id: None,
            attachments: vec![],
            reply_to: None,
            created_at: Timestamp(0),
            moderated: false,
        }
    }

    #[tokio::test]
    async fn drains_the_log_into_the_store_once() {
        let pool = open_memory().await.unwrap();
        let log = SqliteLog::new(pool.clone(), "messages");
        let store = SqliteStore::new(pool);
        let records: Vec<LogRecord> = (1..=5)
            .map(|i| LogRecord {
                key: Id(7),
                payload: serde_json::to_vec(&msg(i)).unwrap().into(),
            })
            .collect();
        log.append(&records).await.unwrap();
        // A duplicate record (a producer retry) is stored once.
        log.append(&records[4..]).await.unwrap();
        let n = drain(
            &log,
            &store,
            Batching {
                max_messages: 2,
                max_wait: Duration::from_millis(5),
            },
        )
        .await
        .unwrap();
        assert_eq!(n, 6);
        let stored = store
            .history(
                Id(7),
                Page::After {
                    id: Id(0),
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            drain(&log, &store, Batching::default()).await.unwrap(),
            0,
            "committed: nothing again"
        );
    }
}
