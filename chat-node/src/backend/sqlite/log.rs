//! [`SqliteLog`]: the embedded durable log. Appends, consumers' reads and their offset
//! commits go through the database's writer thread ([`super::writer`]), which
//! group-commits the appends that queued meanwhile: each sender learns its records are
//! durable when their transaction commits. Consumers read by offset and commit their
//! position per group, as with Kafka.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Database, err};
use crate::backend::{BackendError, Log, LogConsumer, LogRecord, PolledRecord};

/// One topic of the embedded log.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    db: Database,
    topic: Arc<str>,
    appended: Arc<Appended>,
}

/// What the writer tells a topic's consumers after each group of appends it committed.
#[derive(Debug, Default)]
pub(super) struct Appended {
    /// Woken after each commit.
    notify: Notify,
    /// Groups committed so far: a consumer whose last read found nothing reads again only
    /// once this moved (or [`REREAD`] passed), so an idle log is not read on every poll.
    groups: AtomicU64,
}

impl Appended {
    /// Called by the writer after each commit of appends to the topic.
    pub(super) fn committed(&self) {
        self.groups.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// A consumer deletes the records every group has consumed once it committed this many
/// records since it last did, or [`TRIM_AFTER`] passed: not on every commit.
const TRIM_RECORDS: i64 = 1024;
/// See [`TRIM_RECORDS`].
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// How long a consumer that found nothing trusts the writer's count before it reads the
/// log anyway (appends from another handle on the same file count nowhere here).
const REREAD: Duration = Duration::from_secs(1);

impl SqliteLog {
    /// Topic `topic` on `db`.
    pub fn new(db: Database, topic: &str) -> Self {
        Self {
            db,
            topic: topic.into(),
            appended: Arc::default(),
        }
    }
}

#[async_trait]
impl Log for SqliteLog {
    async fn append(&self, records: &[LogRecord]) -> Result<Vec<u64>, BackendError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.db
            .writer()
            .append(&self.topic, records.to_vec(), &self.appended)
            .await
    }

    async fn wait_consumed(&self, group: &str, timeout: Duration) -> Result<(), BackendError> {
        let end: Option<i64> =
            sqlx::query_scalar(r#"SELECT MAX("offset") FROM log WHERE topic = ?"#)
                .bind(&*self.topic)
                .fetch_one(self.db.pool())
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
            .fetch_optional(self.db.pool())
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
                .fetch_optional(self.db.pool())
                .await
                .map_err(err)?;
        let position = committed.unwrap_or(0);
        Ok(Box::new(SqliteConsumer {
            db: self.db.clone(),
            topic: self.topic.clone(),
            group: group.to_owned(),
            position,
            committed: position,
            trimmed: (position, tokio::time::Instant::now()),
            appended: self.appended.clone(),
            found_nothing: None,
        }))
    }
}

#[derive(Debug)]
struct SqliteConsumer {
    db: Database,
    topic: Arc<str>,
    group: String,
    /// Offset of the last record polled.
    position: i64,
    committed: i64,
    /// The committed offset and the time when this consumer last deleted consumed records.
    trimmed: (i64, tokio::time::Instant),
    appended: Arc<Appended>,
    /// The writer's count of groups and the time when the last read found nothing.
    found_nothing: Option<(u64, tokio::time::Instant)>,
}

impl SqliteConsumer {
    async fn read(&self, max: usize) -> Result<Vec<PolledRecord>, BackendError> {
        self.db.writer().read(&self.topic, self.position, max).await
    }
}

#[async_trait]
impl LogConsumer for SqliteConsumer {
    async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<PolledRecord>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest and load the count before reading, so an append between
            // the read and the wait is not missed (tokio's `notify_waiters` wakes every
            // `Notified` made before it, polled or not).
            let notified = self.appended.notify.notified();
            let groups = self.appended.groups.load(Ordering::Acquire);
            let now = tokio::time::Instant::now();
            let unchanged = self
                .found_nothing
                .is_some_and(|(seen, at)| seen == groups && now < at + REREAD);
            if !unchanged {
                let rows = self.read(max).await?;
                if let Some(last) = rows.last() {
                    // Offsets come from an INTEGER column: they fit.
                    self.position = i64::try_from(last.offset).unwrap_or(i64::MAX);
                    self.found_nothing = None;
                    return Ok(rows);
                }
                self.found_nothing = Some((groups, now));
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
        let now = tokio::time::Instant::now();
        let (trimmed_at_offset, trimmed_at) = self.trimmed;
        let trim =
            self.position - trimmed_at_offset >= TRIM_RECORDS || now >= trimmed_at + TRIM_AFTER;
        self.db
            .writer()
            .commit(&self.topic, &self.group, self.position, trim)
            .await?;
        self.committed = self.position;
        if trim {
            self.trimmed = (self.committed, now);
        }
        Ok(())
    }
}
