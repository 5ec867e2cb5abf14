//! [`SqliteLog`]: the embedded durable log. Appends are group-committed by one writer task:
//! concurrent senders share a transaction, and each learns its records are durable when it
//! commits. Consumers read by offset and commit their position per group, as with Kafka.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley_protocol::Id;
use sqlx::SqlitePool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::err;
use crate::backend::{BackendError, Log, LogConsumer, LogRecord};

/// Most appends one transaction carries.
const MAX_GROUP: usize = 512;

type Reply = oneshot::Sender<Result<(), BackendError>>;

/// One topic of the embedded log.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    pool: SqlitePool,
    topic: Arc<str>,
    appends: mpsc::Sender<(Vec<LogRecord>, Reply)>,
    appended: Arc<Notify>,
}

impl SqliteLog {
    /// Opens `topic` on `pool` and starts its writer task (which ends when every handle is
    /// dropped).
    pub fn new(pool: SqlitePool, topic: &str) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let appended = Arc::new(Notify::new());
        let topic: Arc<str> = topic.into();
        tokio::spawn(writer(pool.clone(), topic.clone(), rx, appended.clone()));
        Self {
            pool,
            topic,
            appends: tx,
            appended,
        }
    }
}

async fn writer(
    pool: SqlitePool,
    topic: Arc<str>,
    mut rx: mpsc::Receiver<(Vec<LogRecord>, Reply)>,
    appended: Arc<Notify>,
) {
    let mut group: Vec<(Vec<LogRecord>, Reply)> = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let result = write_group(&pool, &topic, &group).await;
        for (_, reply) in group.drain(..) {
            let _ = reply.send(result.clone());
        }
        if result.is_ok() {
            appended.notify_waiters();
        }
    }
}

async fn write_group(
    pool: &SqlitePool,
    topic: &str,
    group: &[(Vec<LogRecord>, Reply)],
) -> Result<(), BackendError> {
    let mut tx = pool.begin().await.map_err(err)?;
    for (records, _) in group {
        for r in records {
            sqlx::query("INSERT INTO log (topic, key, payload) VALUES (?, ?, ?)")
                .bind(topic)
                .bind(r.key)
                .bind(&r.payload[..])
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
    }
    tx.commit().await.map_err(err)
}

#[async_trait]
impl Log for SqliteLog {
    async fn append(&self, records: &[LogRecord]) -> Result<(), BackendError> {
        if records.is_empty() {
            return Ok(());
        }
        let (reply, done) = oneshot::channel();
        self.appends
            .send((records.to_vec(), reply))
            .await
            .map_err(|_| BackendError::unavailable("sqlite log", "the writer has stopped"))?;
        done.await
            .map_err(|_| BackendError::unavailable("sqlite log", "the writer has stopped"))?
    }

    async fn wait_consumed(&self, group: &str, timeout: Duration) -> Result<(), BackendError> {
        let end: Option<i64> =
            sqlx::query_scalar(r#"SELECT MAX("offset") FROM log WHERE topic = ?"#)
                .bind(&*self.topic)
                .fetch_one(&self.pool)
                .await
                .map_err(err)?;
        let Some(end) = end else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let committed: Option<i64> = sqlx::query_scalar(
                r#"SELECT "offset" FROM log_offsets WHERE topic = ? AND grp = ?"#,
            )
            .bind(&*self.topic)
            .bind(group)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
            if committed.is_some_and(|c| c >= end) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::unavailable(
                    "sqlite log",
                    format!("{group} has not caught up"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn consumer(&self, group: &str) -> Result<Box<dyn LogConsumer>, BackendError> {
        let committed: Option<i64> =
            sqlx::query_scalar(r#"SELECT "offset" FROM log_offsets WHERE topic = ? AND grp = ?"#)
                .bind(&*self.topic)
                .bind(group)
                .fetch_optional(&self.pool)
                .await
                .map_err(err)?;
        let position = committed.unwrap_or(0);
        Ok(Box::new(SqliteConsumer {
            pool: self.pool.clone(),
            topic: self.topic.clone(),
            group: group.to_owned(),
            position,
            committed: position,
            appended: self.appended.clone(),
        }))
    }
}

#[derive(Debug)]
struct SqliteConsumer {
    pool: SqlitePool,
    topic: Arc<str>,
    group: String,
    /// Offset of the last record polled.
    position: i64,
    committed: i64,
    appended: Arc<Notify>,
}

impl SqliteConsumer {
    async fn read(&self, max: usize) -> Result<Vec<(i64, LogRecord)>, BackendError> {
        let rows: Vec<(i64, Id, Vec<u8>)> = sqlx::query_as(
            r#"SELECT "offset", key, payload FROM log WHERE topic = ? AND "offset" > ? ORDER BY "offset" LIMIT ?"#,
        )
        .bind(&*self.topic)
        .bind(self.position)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows
            .into_iter()
            .map(|(offset, key, payload)| {
                let payload = Bytes::from(payload);
                (offset, LogRecord { key, payload })
            })
            .collect())
    }
}

#[async_trait]
impl LogConsumer for SqliteConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before reading, so an append between the read and the wait
            // is not missed.
            let notified = self.appended.notified();
            let rows = self.read(max).await?;
            if let Some((last, _)) = rows.last() {
                self.position = *last;
                return Ok(rows.into_iter().map(|(_, r)| r).collect());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self) -> Result<(), BackendError> {
        if self.position == self.committed {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query(
            r#"INSERT INTO log_offsets (topic, grp, "offset") VALUES (?, ?, ?)
               ON CONFLICT (topic, grp) DO UPDATE SET "offset" = excluded."offset""#,
        )
        .bind(&*self.topic)
        .bind(&self.group)
        .bind(self.position)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        // Records every group has consumed are no longer needed.
        sqlx::query(
            r#"DELETE FROM log WHERE topic = ?1 AND "offset" <= (SELECT MIN("offset") FROM log_offsets WHERE topic = ?1)"#,
        )
        .bind(&*self.topic)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        self.committed = self.position;
        Ok(())
    }
}
