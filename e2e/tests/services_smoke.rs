//! Smoke tests: each real service answers through the client crate the product uses.
//!
//! These need `dev/services up`; with a service missing they fail, they never skip.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use parley_e2e::{Services, services};

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn three_separate_postgres_servers_answer() {
    let services = services();
    let mut identifiers = HashSet::new();
    for role in ["directory", "shard-a", "shard-b"] {
        let pg = services.postgres(role);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&pg.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to postgres `{role}` at {}: {e}", pg.port));

        let port: i32 = sqlx::query_scalar("SELECT current_setting('port')::int")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            port,
            i32::from(pg.port),
            "{role} answered on the wrong port"
        );

        // One server per role, not three databases in one server: a test must be able
        // to stop a single shard.
        let system_identifier: i64 =
            sqlx::query_scalar("SELECT system_identifier FROM pg_control_system()")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            identifiers.insert(system_identifier),
            "{role} shares a server"
        );

        // A round trip through a table.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("CREATE TEMP TABLE smoke (id bigint PRIMARY KEY, body text NOT NULL)")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO smoke (id, body) SELECT * FROM UNNEST($1::bigint[], $2::text[])")
            .bind(vec![1_i64, 2])
            .bind(vec!["one", "two"])
            .execute(&mut *tx)
            .await
            .unwrap();
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM smoke ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(bodies, ["one", "two"]);
        tx.rollback().await.unwrap();
        pool.close().await;
    }
}

#[tokio::test]
async fn redis_publish_reaches_a_subscriber() {
    let services = services();
    let client = redis::Client::open(services.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channel = unique("ch:smoke");
    pubsub.subscribe(&channel).await.unwrap();

    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("hello")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(receivers, 1);

    let mut messages = pubsub.on_message();
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("no message within 5 s")
        .expect("subscription ended");
    assert_eq!(msg.get_channel_name(), channel);
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}

#[tokio::test]
async fn redis_sends_key_expiry_notifications() {
    let services = services();
    let client = redis::Client::open(services.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("__keyevent@0__:expired").await.unwrap();

    let key = unique("presence:smoke");
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("online")
        .arg("PX")
        .arg(50)
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut messages = pubsub.on_message();
    let expired = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = messages.next().await {
            if msg.get_payload::<String>().unwrap() == key {
                return true;
            }
        }
        false
    })
    .await
    .expect("no expiry notification within 10 s; is notify-keyspace-events set?");
    assert!(expired);
}

#[tokio::test]
async fn kafka_round_trips_a_keyed_record() {
    use rdkafka::Message as _;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let services = services();
    let bootstrap = services.kafka.bootstrap_servers.as_str();
    let topic = unique("smoke.messages");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for result in created {
        result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "15000")
        .create()
        .unwrap();
    let delivered = producer
        .send(
            FutureRecord::to(&topic)
                .key("channel-42")
                .payload("hello kafka"),
            Duration::from_secs(15),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("no record within 30 s")
        .unwrap();
    assert_eq!(record.key(), Some(&b"channel-42"[..]));
    assert_eq!(record.payload(), Some(&b"hello kafka"[..]));
    assert_eq!(record.partition(), delivered.partition);
    assert_eq!(record.offset(), delivered.offset);

    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .unwrap();
}

fn s3_client(services: &Services) -> aws_sdk_s3::Client {
    let s3 = &services.s3;
    let credentials = aws_sdk_s3::config::Credentials::new(
        &s3.access_key_id,
        &s3.secret_access_key,
        None,
        None,
        "parley-dev-services",
    );
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(s3.region.clone()))
        .endpoint_url(&s3.endpoint)
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test]
async fn s3_put_get_and_presigned_put() {
    use aws_sdk_s3::presigning::PresigningConfig;
    use aws_sdk_s3::primitives::ByteStream;

    let services = services();
    let client = s3_client(&services);
    let bucket = services.s3.bucket.as_str();

    // Direct put and get.
    let key = unique("smoke/direct");
    client
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("text/plain")
        .body(ByteStream::from_static(b"hello s3"))
        .send()
        .await
        .unwrap();
    let got = client
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"hello s3"
    );

    // Presigned PUT, done by a plain HTTP client as a browser would.
    let key = unique("smoke/presigned");
    let bytes = b"\x89PNG\r\n\x1a\n fake image bytes".to_vec();
    let presigned = client
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("image/png")
        .content_length(bytes.len() as i64)
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();

    // The content type is part of the signature: another one is refused.
    let refused = http
        .put(presigned.uri())
        .header("content-type", "text/html")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        403,
        "a presigned PUT accepted a different content type"
    );

    let mut put = http.put(presigned.uri()).body(bytes.clone());
    for (name, value) in presigned.headers() {
        put = put.header(name, value);
    }
    let res = put.send().await.unwrap();
    assert!(res.status().is_success(), "presigned PUT: {}", res.status());

    let head = client
        .head_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(bytes.len() as i64));
    assert_eq!(head.content_type(), Some("image/png"));
    let got = client
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().to_vec(),
        bytes
    );
}
