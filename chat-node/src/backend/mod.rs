//! The ports chat-node talks to, each a small trait with an embedded implementation here and
//! distributed implementations beside it:
//!
//! ```text
//!              embedded (one process)        distributed
//!   Store      sqlite::SqliteStore           postgres (directory + shards)
//!   Log        sqlite::SqliteLog             kafka
//!   PubSub     memory::MemoryPubSub          redis
//!   Blobs      local::LocalBlobs             s3
//! ```
//!
//! `sql` holds what the two SQL stores share (the directory tables, message reads, values,
//! error mapping); `entry` the message log's records ([`LogEntry`]: messages with their owner
//! term, fence records); `conformance` holds the one behavioural test suite every
//! implementation runs.

pub mod datadir;
mod entry;
pub mod kafka;
pub mod local;
pub mod memory;
pub mod postgres;
pub mod presence_store;
pub mod redis;
pub mod s3;
pub mod sql;
pub mod sqlite;
mod store;
mod types;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use entry::{LogEntry, OwnerTerm};
pub use store::{
    ChannelStore, MediaStore, MemberStore, MessageStore, ReadMarkerStore, Stores, UserStore,
};
pub use types::*;

use async_trait::async_trait;
use bytes::Bytes;
use parley_protocol::{ErrorCode, Id};

/// Why a backend call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot be reached or refused to work; retrying later may succeed.
    #[error("{backend} is unavailable: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// A uniqueness rule was broken (a taken username or group name).
    #[error("{0}")]
    Conflict(String),
    /// Anything else: a bug or corrupt data.
    #[error("{backend} failed: {detail}")]
    Internal {
        backend: &'static str,
        detail: String,
    },
}

impl BackendError {
    pub fn unavailable(backend: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            backend,
            detail: detail.to_string(),
        }
    }

    pub fn internal(backend: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            backend,
            detail: detail.to_string(),
        }
    }

    /// The protocol code a client sees for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BackendError::Unavailable { .. } => ErrorCode::Unavailable,
            BackendError::Conflict(_) => ErrorCode::Conflict,
            BackendError::Internal { .. } => ErrorCode::Internal,
        }
    }
}

/// A durable, partitioned log (Kafka's model): records with the same key keep their order.
#[async_trait]
pub trait Log: Send + Sync + std::fmt::Debug {
    /// Appends `records`; `Ok` means every one of them is durable, and holds the offset
    /// each got, in the order of `records`. An offset is the record's position in its
    /// partition: the records of one key get increasing offsets, and a consumer reads each
    /// record with the offset its append returned ([`PolledRecord::offset`]).
    async fn append(&self, records: &[LogRecord]) -> Result<Vec<u64>, BackendError>;

    /// Opens a consumer in `group`: it starts after the group's committed position.
    async fn consumer(&self, group: &str) -> Result<Box<dyn LogConsumer>, BackendError>;

    /// Returns once `group` has committed everything appended before the call; `unavailable`
    /// when that takes longer than `timeout`. (A new channel owner waits for this, so the
    /// store holds every message the previous owner acknowledged.)
    async fn wait_consumed(
        &self,
        group: &str,
        timeout: std::time::Duration,
    ) -> Result<(), BackendError>;
}

/// Reads a log for one consumer group.
#[async_trait]
pub trait LogConsumer: Send + std::fmt::Debug {
    /// Up to `max` records with their offsets, waiting up to `wait` for the first one; the
    /// records of one key come in offset order.
    async fn poll(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<PolledRecord>, BackendError>;

    /// Commits everything polled so far: a new consumer of the group starts after it.
    /// A consumer that lost its place in the group (the group moved on while it could not
    /// reach the broker) cannot commit any more: it forgets what it polled and returns `Ok`,
    /// and those records are consumed again (by it once it rejoins at its next poll, or by
    /// another member). Consumers write idempotently, so a replay is harmless.
    async fn commit(&mut self) -> Result<(), BackendError>;
}

/// One log record: `key` chooses the partition (the channel ID for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub key: Id,
    pub payload: Bytes,
}

/// A record as a consumer reads it: where it is in its partition, its key and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolledRecord {
    /// The offset [`Log::append`] returned for it.
    pub offset: u64,
    pub key: Id,
    pub payload: Bytes,
}

/// Where a pub/sub message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Events of one channel (`ch:<id>`).
    Channel(Id),
    /// Events for one user's connections (`user:<id>`).
    User(Id),
    /// Node-to-node housekeeping (`cluster`): every node subscribes.
    Cluster,
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topic::Channel(id) => write!(f, "ch:{id}"),
            Topic::User(id) => write!(f, "user:{id}"),
            Topic::Cluster => f.write_str("cluster"),
        }
    }
}

impl std::str::FromStr for Topic {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        if s == "cluster" {
            return Ok(Topic::Cluster);
        }
        let (kind, id) = s.split_once(':').ok_or(())?;
        let id = id.parse().map_err(|_| ())?;
        match kind {
            "ch" => Ok(Topic::Channel(id)),
            "user" => Ok(Topic::User(id)),
            _ => Err(()),
        }
    }
}

/// A message received from a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: Topic,
    pub payload: Bytes,
}

/// Where a [`PubSub`] hands what arrives on subscribed topics. Called on the pub/sub's own
/// task: it must not block.
pub type Sink = std::sync::Arc<dyn Fn(Delivery) + Send + Sync>;

/// Fan-out between nodes. Subscriptions are per node (the hub reference-counts them);
/// what arrives on subscribed topics goes to the sink given at construction.
#[async_trait]
pub trait PubSub: Send + Sync + std::fmt::Debug {
    async fn publish(&self, topic: Topic, payload: Bytes) -> Result<(), BackendError>;
    async fn subscribe(&self, topic: Topic) -> Result<(), BackendError>;
    async fn unsubscribe(&self, topic: Topic) -> Result<(), BackendError>;
}

/// Object storage reached by clients through signed URLs.
#[async_trait]
pub trait Blobs: Send + Sync + std::fmt::Debug {
    /// A URL the client PUTs exactly `size` bytes of `content_type` to, before `expires`.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        expires: std::time::Duration,
    ) -> Result<PresignedRequest, BackendError>;

    /// A URL the object can be downloaded from, before `expires`.
    async fn presign_get(
        &self,
        key: &str,
        expires: std::time::Duration,
    ) -> Result<String, BackendError>;

    /// Size and content type of a stored object, `None` if there is none.
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>, BackendError>;
}

/// A presigned request: the client sends `method` to `url` with `headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub content_type: String,
}

/// The conformance suite on the embedded implementations (the local blob store runs it in
/// `tests/`, where a node serves its URLs).
#[cfg(test)]
mod embedded_conformance {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn sqlite_store() {
        let pool = sqlite::open_temp().await.unwrap();
        conformance::store_suite(&Stores::from_backend(Arc::new(sqlite::SqliteStore::new(
            pool,
        ))))
        .await;
    }

    /// A new directory under the system's temporary one, named after `tag`.
    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The log's topic `messages` on a new database file under a new [`temp_dir`]: the
    /// directory (to remove), the database (to close) and the log.
    async fn file_log(tag: &str) -> (std::path::PathBuf, sqlite::Database, sqlite::SqliteLog) {
        let dir = temp_dir(tag);
        let db = sqlite::open(&dir.join("parley.db")).await.unwrap();
        let log = sqlite::SqliteLog::new(db.clone(), "messages");
        (dir, db, log)
    }

    /// `n` records of `payload`, keyed 0, 1, ...
    fn records(n: u64, payload: &bytes::Bytes) -> Vec<LogRecord> {
        (0..n)
            .map(|i| LogRecord {
                key: Id(i),
                payload: payload.clone(),
            })
            .collect()
    }

    #[tokio::test]
    async fn sqlite_store_on_a_file_survives_reopening() {
        let dir = temp_dir("parley-sqlite");
        let path = dir.join("parley.db");
        let pool = sqlite::open(&path).await.unwrap();
        conformance::store_suite(&Stores::from_backend(Arc::new(sqlite::SqliteStore::new(
            pool.clone(),
        ))))
        .await;
        pool.close().await;
        // Migrations are not applied twice.
        let pool = sqlite::open(&path).await.unwrap();
        conformance::store_suite(&Stores::from_backend(Arc::new(sqlite::SqliteStore::new(
            pool.clone(),
        ))))
        .await;
        pool.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn sqlite_log() {
        let (dir, db, log) = file_log("parley-log").await;
        conformance::log_suite(&log).await;
        db.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn an_idle_sqlite_consumer_sees_the_next_append_at_once() {
        let (dir, db, log) = file_log("parley-log-idle").await;
        let mut c = log.consumer("g").await.unwrap();
        // Found nothing: later polls skip the read until the writer commits again.
        for _ in 0..3 {
            let got = c.poll(10, std::time::Duration::from_millis(5)).await;
            assert!(got.unwrap().is_empty());
        }
        let appender = log.clone();
        let append = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let record = LogRecord {
                key: Id(7),
                payload: bytes::Bytes::from_static(b"x"),
            };
            appender.append(&[record]).await.unwrap();
        });
        let started = std::time::Instant::now();
        let got = c.poll(10, std::time::Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 1, "the append ends the wait");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(900),
            "seen {:?} after the wait began: not by the append's notice",
            started.elapsed()
        );
        append.await.unwrap();
        db.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Consumed records are deleted once a commit finds [`sqlite`]'s trim due (1024 records
    /// or 1 s since the last trim), and only those every group has consumed.
    #[tokio::test]
    async fn sqlite_log_deletes_what_every_group_consumed() {
        let (dir, db, log) = file_log("parley-log-trim").await;
        let rows = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM log")
                .fetch_one(db.pool())
                .await
                .unwrap()
        };
        let x = bytes::Bytes::from_static(b"x");
        let mut slow = log.consumer("slow").await.unwrap();
        let mut fast = log.consumer("fast").await.unwrap();
        log.append(&records(3, &x)).await.unwrap();
        // Both groups read the 3 and commit: too few, too soon, nothing is deleted.
        let wait = std::time::Duration::from_secs(1);
        assert_eq!(slow.poll(10, wait).await.unwrap().len(), 3);
        slow.commit().await.unwrap();
        assert_eq!(fast.poll(10, wait).await.unwrap().len(), 3);
        fast.commit().await.unwrap();
        assert_eq!(rows().await, 3);
        // 1100 more: the fast group's commit deletes what both consumed (the first 3).
        log.append(&records(1100, &x)).await.unwrap();
        assert_eq!(fast.poll(2000, wait).await.unwrap().len(), 1100);
        fast.commit().await.unwrap();
        assert_eq!(rows().await, 1100, "the slow group has not read these");
        // A second later the slow group's commit is due a trim: all of it goes.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(slow.poll(2000, wait).await.unwrap().len(), 1100);
        slow.commit().await.unwrap();
        assert_eq!(rows().await, 0);
        db.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    /// With SQLite's own checkpoints off, the WAL is copied back by the node's checkpoint
    /// task: the WAL file is reused from its start, not grown with every write.
    #[tokio::test]
    async fn the_sqlite_wal_is_checkpointed_beside_the_writes() {
        let (dir, db, log) = file_log("parley-wal").await;
        let wal = dir.join("parley.db-wal");
        let payload = bytes::Bytes::from(vec![b'x'; 2000]);
        let mut sizes = Vec::new();
        for _ in 0..3 {
            for record in records(300, &payload) {
                log.append(&[record]).await.unwrap();
            }
            sizes.push(std::fs::metadata(&wal).unwrap().len());
            // Past the checkpoint period.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        }
        // Each round writes ~300 commits of a 2 KB record: without checkpoints the file
        // would hold all three rounds.
        assert!(sizes[0] > 600_000, "{sizes:?}");
        assert!(
            sizes[2] < sizes[0] * 3 / 2,
            "the WAL grew round after round: {sizes:?}"
        );
        db.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn memory_pubsub() {
        let bus = memory::MemoryBus::new();
        let (sink_a, seen_a) = conformance::recording_sink();
        let (sink_b, seen_b) = conformance::recording_sink();
        let a = bus.endpoint(sink_a);
        let b = bus.endpoint(sink_b);
        conformance::pubsub_suite(&a, &seen_a, &b, &seen_b).await;
    }
}
