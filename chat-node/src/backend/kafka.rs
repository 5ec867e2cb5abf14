//! The durable log on Apache Kafka (rdkafka): an idempotent producer with `acks=all`, keyed
//! by channel ID so a channel's messages keep their order in one partition; consumers in a
//! group that commit their positions only when told to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley_protocol::Id;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::{BackendError, Log, LogConsumer, LogRecord, PolledRecord};

const BACKEND: &str = "kafka";

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::unavailable(BACKEND, e)
}

/// A record's offset as the log reports it (Kafka's are never negative once written).
fn offset(o: i64) -> Result<u64, BackendError> {
    u64::try_from(o).map_err(|_| BackendError::internal(BACKEND, format!("offset {o} of a record")))
}

/// How to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// How long a send may wait for the broker's acknowledgement before it is `unavailable`.
    pub delivery_timeout: Duration,
}

impl KafkaSettings {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.max.ms", "1000");
        c
    }
}

/// Creates `topic` with `partitions` if it does not exist.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
) -> Result<(), BackendError> {
    let admin: AdminClient<DefaultClientContext> =
        settings.client().create().map_err(unavailable)?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
                .set("min.insync.replicas", "1")
                .set("retention.ms", "604800000")],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(unavailable)?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(unavailable(format!("creating topic {t}: {e}"))),
        }
    }
    Ok(())
}

/// One topic of the log.
#[derive(Clone)]
pub struct KafkaLog {
    settings: KafkaSettings,
    topic: Arc<str>,
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    pub fn new(settings: KafkaSettings, topic: &str) -> Result<Self, BackendError> {
        let timeout = settings.delivery_timeout.as_millis().max(1000).to_string();
        let producer: FutureProducer = settings
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", &timeout)
            .set("request.timeout.ms", &timeout)
            .create()
            .map_err(unavailable)?;
        Ok(Self {
            settings,
            topic: topic.into(),
            producer,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The Kafka consumer group of `group` on this log: `<topic>.<group>` (e.g.
    /// `parley.messages.persisters`). Qualified by the topic so that clusters sharing a
    /// broker (or test clusters one after the other) never share a group: members of one
    /// group rebalance together, and a member that died stalls every other until its
    /// session times out.
    pub fn group_id(&self, group: &str) -> String {
        format!("{}.{group}", self.topic)
    }

    /// Per partition, the offset the next record will get (the high watermark).
    pub async fn high_watermarks(&self) -> Result<HashMap<i32, i64>, BackendError> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let client = producer.client();
            let meta = client
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map_err(unavailable)?;
            let mut out = HashMap::new();
            for t in meta.topics() {
                for p in t.partitions() {
                    let (_, high) = client
                        .fetch_watermarks(&topic, p.id(), Duration::from_secs(5))
                        .map_err(unavailable)?;
                    out.insert(p.id(), high);
                }
            }
            Ok(out)
        })
        .await
        .map_err(unavailable)?
    }

    /// Per partition, the offset `group` has committed (absent: nothing committed).
    pub async fn committed(&self, group: &str) -> Result<HashMap<i32, i64>, BackendError> {
        let marks = self.high_watermarks().await?;
        let consumer: StreamConsumer = self
            .settings
            .client()
            .set("group.id", self.group_id(group))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(unavailable)?;
        let mut tpl = TopicPartitionList::new();
        for p in marks.keys() {
            tpl.add_partition(&self.topic, *p);
        }
        tokio::task::spawn_blocking(move || {
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(5))
                .map_err(unavailable)?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect())
        })
        .await
        .map_err(unavailable)?
    }
}

#[async_trait]
impl Log for KafkaLog {
    async fn append(&self, records: &[LogRecord]) -> Result<Vec<u64>, BackendError> {
        let keys: Vec<String> = records.iter().map(|r| r.key.to_string()).collect();
        let sends = records.iter().zip(&keys).map(|(r, key)| {
            self.producer.send(
                FutureRecord::to(&self.topic)
                    .key(key.as_str())
                    .payload(&r.payload[..]),
                rdkafka::util::Timeout::After(self.settings.delivery_timeout),
            )
        });
        let mut offsets = Vec::with_capacity(records.len());
        for result in futures_util::future::join_all(sends).await {
            let delivery =
                result.map_err(|(e, _)| unavailable(format!("not acknowledged: {e}")))?;
            offsets.push(offset(delivery.offset)?);
        }
        Ok(offsets)
    }

    async fn wait_consumed(&self, group: &str, timeout: Duration) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let marks = self.high_watermarks().await?;
        loop {
            let committed = self.committed(group).await?;
            let behind: Vec<String> = marks
                .iter()
                .filter(|(p, high)| **high > 0 && committed.get(p).is_none_or(|c| c < *high))
                .map(|(p, high)| {
                    format!(
                        "partition {p} at {} of {high}",
                        committed.get(p).copied().unwrap_or(0)
                    )
                })
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "{group} has not caught up: {}",
                    behind.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn consumer(&self, group: &str) -> Result<Box<dyn LogConsumer>, BackendError> {
        let consumer: StreamConsumer = self
            .settings
            .client()
            .set("group.id", self.group_id(group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create()
            .map_err(unavailable)?;
        consumer.subscribe(&[&self.topic]).map_err(unavailable)?;
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(consumer),
            topic: self.topic.clone(),
            polled: HashMap::new(),
        }))
    }
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer>,
    topic: Arc<str>,
    /// Next offset per partition, for what was polled and not committed yet.
    polled: HashMap<i32, i64>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<PolledRecord>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            let msg = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(m) => m.map_err(unavailable)?,
            };
            let key = msg
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.parse::<Id>().ok())
                .unwrap_or_default();
            out.push(PolledRecord {
                offset: offset(msg.offset())?,
                key,
                payload: Bytes::copy_from_slice(msg.payload().unwrap_or_default()),
            });
            self.polled.insert(msg.partition(), msg.offset() + 1);
        }
        Ok(out)
    }

    async fn commit(&mut self) -> Result<(), BackendError> {
        if self.polled.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &self.polled {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*next))
                .map_err(unavailable)?;
        }
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                .await
                .map_err(unavailable)?;
        match committed {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(code)) if left_the_group(code) => {
                // Retrying cannot succeed: the group rebalanced without this member (a
                // broker restart, a long pause). Only a poll rejoins it; the position stays
                // where the group last committed it, so this batch is consumed again.
                tracing::warn!(
                    "the consumer group moved on ({code}): this batch's position stays uncommitted and the batch is consumed again"
                );
            }
            Err(e) => return Err(unavailable(e)),
        }
        self.polled.clear();
        Ok(())
    }
}

/// Whether a commit failed because this consumer is no longer a member of the group's
/// current generation (Kafka's `UNKNOWN_MEMBER_ID`, `ILLEGAL_GENERATION`,
/// `REBALANCE_IN_PROGRESS`, `FENCED_INSTANCE_ID`): it must poll to rejoin before it can
/// commit anything.
fn left_the_group(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::FencedInstanceId
    )
}
