//! The backend conformance suite (chat-node's `backend::conformance`) on the distributed
//! implementations, against the real services of `dev/services`.

use std::sync::Arc;

use chat_node::backend::Stores;
use chat_node::backend::conformance;
use chat_node::backend::postgres::{PgStore, Schema, ShardSpec, migrate};
use chat_node::secret::Secret;
use parley_e2e::{Services, services};

/// The store over the three real servers: the directory, shard-a (slots 0-2047) and
/// shard-b (slots 2048-4095), migrated.
pub async fn pg_store(services: &Services) -> PgStore {
    let shards = vec![
        ShardSpec {
            name: "shard-a".into(),
            slots: vec!["0-2047".parse().unwrap()],
            url: Secret::new(services.postgres("shard-a").url.parse().unwrap()),
        },
        ShardSpec {
            name: "shard-b".into(),
            slots: vec!["2048-4095".parse().unwrap()],
            url: Secret::new(services.postgres("shard-b").url.parse().unwrap()),
        },
    ];
    let store = PgStore::new(&services.postgres("directory").url, &shards, 5).unwrap();
    migrate(store.directory(), Schema::Directory).await.unwrap();
    for (_, pool) in store.shard_pools() {
        migrate(&pool, Schema::Shard).await.unwrap();
    }
    store
}

#[tokio::test]
async fn postgres_store_passes_the_store_suite() {
    let services = services();
    let store = pg_store(&services).await;
    // Migrating again is a no-op.
    assert_eq!(
        migrate(store.directory(), Schema::Directory).await.unwrap(),
        0
    );
    conformance::store_suite(&Stores::from_backend(Arc::new(store))).await;
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn kafka_log_passes_the_log_suite() {
    use chat_node::backend::kafka::{KafkaLog, KafkaSettings, ensure_topic};
    let services = services();
    let settings = KafkaSettings {
        bootstrap_servers: services.kafka.bootstrap_servers.clone(),
        delivery_timeout: std::time::Duration::from_secs(10),
    };
    let topic = unique("conformance.messages");
    ensure_topic(&settings, &topic, 3).await.unwrap();
    ensure_topic(&settings, &topic, 3).await.unwrap();
    let log = KafkaLog::new(settings, &topic).unwrap();
    conformance::log_suite(&log).await;
}

#[tokio::test]
async fn redis_pubsub_passes_the_pubsub_suite() {
    use chat_node::backend::redis::RedisPubSub;
    let services = services();
    let (sink_a, seen_a) = conformance::recording_sink();
    let (sink_b, seen_b) = conformance::recording_sink();
    let a = RedisPubSub::connect(&services.redis.url, sink_a)
        .await
        .unwrap();
    let b = RedisPubSub::connect(&services.redis.url, sink_b)
        .await
        .unwrap();
    conformance::pubsub_suite(&a, &seen_a, &b, &seen_b).await;
}

#[tokio::test]
async fn a_redis_subscriber_whose_connection_is_killed_resubscribes_and_says_so() {
    // Only this subscriber's own connection is killed (by its client ID): the other tests
    // of this file share the Redis.
    use chat_node::backend::redis::{commands, subscriber};
    let services = services();
    let url = &services.redis.url;
    let channel = unique("conformance.relink");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let restored = Arc::new(tokio::sync::Notify::new());
    let mut sub = subscriber(
        url,
        move |push| {
            if push.kind == redis::PushKind::Message
                && let Some(redis::Value::BulkString(payload)) = push.data.get(1)
            {
                let _ = tx.send(payload.clone());
            }
        },
        Some(restored.clone()),
    )
    .await
    .unwrap();
    sub.subscribe(&channel).await.unwrap();
    let mut conn = commands(url).await.unwrap();
    let publish = |conn: &mut redis::aio::ConnectionManager, what: &'static str| {
        let mut conn = conn.clone();
        let channel = channel.clone();
        async move {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(what)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    let within = std::time::Duration::from_secs(10);
    publish(&mut conn, "before").await;
    let got = tokio::time::timeout(within, rx.recv()).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"before"[..]));

    let client_id = |sub: &mut redis::aio::ConnectionManager| {
        let mut sub = sub.clone();
        async move {
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut sub)
                .await
                .unwrap();
            id
        }
    };
    let id = client_id(&mut sub).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    tokio::time::timeout(within, restored.notified())
        .await
        .expect("the subscriber says it is back");
    // Resubscribed on the new connection: what is published now arrives.
    publish(&mut conn, "after").await;
    let got = tokio::time::timeout(within, rx.recv()).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"after"[..]));
    assert_ne!(client_id(&mut sub).await, id, "a new connection");
}

#[tokio::test]
async fn redis_presence_passes_the_presence_suite() {
    use chat_node::backend::presence_store::{RedisPresence, presence_suite};
    let services = services();
    let conn = chat_node::backend::redis::commands(&services.redis.url)
        .await
        .unwrap();
    let store = RedisPresence::new(
        conn,
        &unique("conformance"),
        "node-1",
        std::time::Duration::from_secs(10),
    );
    presence_suite(
        &store,
        parley_protocol::Id(100),
        parley_protocol::Timestamp::now(),
    )
    .await;
}

#[tokio::test]
async fn redis_fencing_passes_the_fencing_suite() {
    use chat_node::chat::fencing::fencing_suite;
    use chat_node::node::RedisFencing;
    let services = services();
    let conn = chat_node::backend::redis::commands(&services.redis.url)
        .await
        .unwrap();
    let namespace = unique("conformance");
    let fencing = RedisFencing::new(conn.clone(), &namespace);
    let (sink, seen) = conformance::recording_sink();
    let pubsub = chat_node::backend::redis::RedisPubSub::connect(&services.redis.url, sink)
        .await
        .unwrap();
    fencing_suite(&fencing, &pubsub, &seen).await;
    // A channel's hash expires a day after its last take-over.
    let mut c = conn;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("parley:{namespace}:owner:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        (23 * 3600 * 1000..=24 * 3600 * 1000).contains(&ttl),
        "{ttl} ms"
    );

    // A hash that expired or that Redis lost starts above every generation handed out
    // before (they are at most its clock in microseconds when they were reserved), so a
    // take-over in flight across the loss cannot depose the next owner with a late fence.
    use chat_node::chat::fencing::Fencing as _;
    let channel = parley_protocol::Id(u64::from(rand::random::<u32>()) + 1);
    let before = fencing.reserve(channel, 0).await.unwrap();
    let in_flight = fencing.reserve(channel, 0).await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("parley:{namespace}:owner:{channel}"))
        .query_async(&mut c)
        .await
        .unwrap();
    let after = fencing.reserve(channel, 0).await.unwrap();
    assert!(
        before < in_flight && in_flight < after,
        "{before} < {in_flight} < {after}"
    );
    let now_us = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap();
    assert!(
        after.abs_diff(now_us) < 60_000_000,
        "seeded from the clock: {after} vs {now_us} µs"
    );
    // A floor above the clock wins.
    let _: i64 = redis::cmd("DEL")
        .arg(format!("parley:{namespace}:owner:{channel}"))
        .query_async(&mut c)
        .await
        .unwrap();
    let floor = after * 2;
    assert_eq!(fencing.reserve(channel, floor).await.unwrap(), floor + 1);
}

#[tokio::test]
async fn s3_blobs_pass_the_blobs_suite() {
    use chat_node::backend::s3::{S3Blobs, S3Settings};
    let services = services();
    let s3 = &services.s3;
    let blobs = S3Blobs::new(&S3Settings {
        endpoint: Some(s3.endpoint.parse().unwrap()),
        region: s3.region.clone(),
        bucket: s3.bucket.clone(),
        access_key_id: s3.access_key_id.clone().into(),
        secret_access_key: s3.secret_access_key.clone().into(),
        path_style: true,
    });
    blobs.ping().await.unwrap();
    conformance::blobs_suite_over_http(&blobs).await;
}

#[tokio::test]
async fn postgres_store_swaps_its_shard_map_live() {
    use chat_node::backend::MessageStore as _;
    use chat_node::backend::{Page, StoredMessage};
    use parley_protocol::{Id, Timestamp};
    let services = services();
    let store = pg_store(&services).await;
    // A channel on shard-b.
    let channel = (1u64 << 40..)
        .step_by(7919)
        .map(Id)
        .find(|c| parley_crd::slot_of(c.0) >= 2048)
        .unwrap();
    let m = StoredMessage {
        id: Id(channel.0 + 1),
        channel_id: channel,
        seq: 1,
        author_id: Id(1),
        text: "on shard-b".into(),
        client_msg_id: None,
        attachments: vec![],
        reply_to: None,
        created_at: Timestamp::now(),
        moderated: false,
    };
    store
        .insert_messages(std::slice::from_ref(&m))
        .await
        .unwrap();
    assert_eq!(
        store
            .history(channel, Page::Latest { limit: 5 })
            .await
            .unwrap()
            .len(),
        1
    );

    let spec = |name: &str, slots: &str, role: &str| ShardSpec {
        name: name.into(),
        slots: slots.split('+').map(|r| r.parse().unwrap()).collect(),
        url: Secret::new(services.postgres(role).url.parse().unwrap()),
    };
    // An invalid map is refused; the one in force stays.
    assert!(
        store
            .set_shards(&[spec("shard-a", "0-2047", "shard-a")])
            .is_err()
    );
    assert_eq!(
        store
            .history(channel, Page::Latest { limit: 5 })
            .await
            .unwrap()
            .len(),
        1
    );
    // shard-a takes every slot: the channel now reads from shard-a, where it has nothing.
    store
        .set_shards(&[spec("shard-a", "0-4095", "shard-a")])
        .unwrap();
    assert!(
        store
            .history(channel, Page::Latest { limit: 5 })
            .await
            .unwrap()
            .is_empty()
    );
    store
        .set_shards(&[
            spec("shard-a", "0-2047", "shard-a"),
            spec("shard-b", "2048-4095", "shard-b"),
        ])
        .unwrap();
    assert_eq!(
        store
            .history(channel, Page::Latest { limit: 5 })
            .await
            .unwrap()[0]
            .text,
        "on shard-b"
    );
}
