//! Three chat-nodes and a persister over the real services behave as one server.
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom; the 80-line bar is for non-test code"
)]

use std::time::Duration;

use parley_e2e::client::{Api, id_of};
use parley_e2e::cluster::{Cluster, Options, stored_messages};
use parley_e2e::{Services, services};
use parley_protocol::Id;
use serde_json::json;

#[tokio::test]
async fn three_nodes_behave_as_one_server() {
    let services = services();
    let cluster = Cluster::start(
        &services,
        Options {
            heartbeat_interval_ms: 1000,
            ..Options::default()
        },
    )
    .await;
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    let bob = Api::register(cluster.url(1), &cluster.name("bob")).await;
    let carol = Api::register(cluster.url(2), &cluster.name("carol")).await;
    let dave = Api::register(cluster.url(2), &cluster.name("dave")).await;

    let group = alice.create_group(&cluster.name("general")).await;
    for u in [&bob, &carol, &dave] {
        u.join(group).await;
    }
    let (mut a, _) = alice.connect(None).await;
    let (mut b, _) = bob.connect(None).await;
    let (mut c, _) = carol.connect(None).await;
    // Heartbeats are short here (presence is under test), so the sockets ping as real
    // clients do while the test is busy elsewhere.
    for ws in [&mut a, &mut b, &mut c] {
        ws.keep_alive(Duration::from_millis(300));
    }

    // Sends from every node; every member gets every message, in order, wherever connected.
    let mut sent = Vec::new();
    for round in 0..4 {
        for (i, api) in [&alice, &bob, &carol].iter().enumerate() {
            let m = api.send(group, &format!("r{round} from {i}")).await;
            sent.push(id_of(&m["id"]));
            // Read-your-writes on every node right after the ok.
            for node in 0..3 {
                let h = api
                    .on(cluster.url(node))
                    .get(&format!("/v1/channels/{group}/messages?limit=1"))
                    .await;
                assert_eq!(
                    h.body["messages"][0]["id"], m["id"],
                    "history on node {node} right after ok"
                );
            }
        }
    }
    for ws in [&mut a, &mut b, &mut c] {
        let mut seqs = Vec::new();
        while seqs.len() < sent.len() {
            let f = ws.expect("message").await;
            seqs.push(f.d["seq"].as_u64().unwrap());
        }
        assert_eq!(
            seqs,
            (1..=sent.len() as u64).collect::<Vec<_>>(),
            "per-channel order on every node"
        );
    }

    // Typing and read cross nodes.
    b.op("typing", "t", json!({"channel_id": group.to_string()}))
        .await;
    assert_eq!(a.expect("typing").await.d["user_id"], bob.id().to_string());
    c.op(
        "read",
        "r",
        json!({"channel_id": group.to_string(), "message_id": sent[0].to_string()}),
    )
    .await;
    assert_eq!(a.expect("read").await.d["user_id"], carol.id().to_string());

    // A DM across nodes, with presence seen across nodes.
    let dm = id_of(
        &carol
            .post("/v1/dms", &json!({"user_id": alice.id().to_string()}))
            .await
            .body["id"],
    );
    assert_eq!(
        a.expect("channel_joined").await.d["channel"]["id"],
        dm.to_string()
    );
    carol.send(dm, "psst").await;
    assert_eq!(a.expect("message").await.d["text"], "psst");
    let p = alice
        .get(&format!(
            "/v1/presence?user_ids={},{}",
            carol.id(),
            dave.id()
        ))
        .await;
    assert_eq!(p.body["presence"][0]["status"], "online");
    assert_eq!(p.body["presence"][1]["status"], "offline");

    // Resume on another node: Bob leaves node 2, misses three messages, comes back on node 3.
    b.close().await;
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(alice.send(group, &format!("missed {i}")).await["id"].clone());
    }
    let bob3 = bob.on(cluster.url(2));
    let (mut b3, _) = bob3.connect(Some(*sent.last().unwrap())).await;
    b3.keep_alive(Duration::from_millis(300));
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let f = b3.expect("message").await;
        replayed.push(f.d["id"].clone());
    }
    assert_eq!(replayed, missed, "exactly the missed messages, in order");
    alice.send(group, "live again").await;
    assert_eq!(b3.expect("message").await.d["text"], "live again");

    // Media through S3: uploaded by Alice (node 1) with the presigned PUT, sent, downloaded
    // by Bob from the history of node 2.
    let bytes = b"\x89PNG\r\n\x1a\n cluster picture".to_vec();
    let r = alice
        .post(
            "/v1/media",
            &json!({"filename": "pic.png", "content_type": "image/png", "size": bytes.len()}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let upload = &r.body["upload"];
    assert!(
        upload["url"]
            .as_str()
            .unwrap()
            .starts_with(&services.s3.endpoint),
        "an S3 URL: {upload}"
    );
    let mut put = reqwest::Client::new()
        .put(upload["url"].as_str().unwrap())
        .body(bytes.clone());
    for (k, v) in upload["headers"].as_object().unwrap() {
        put = put.header(k, v.as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let attachment = r.body["attachment"]["id"].clone();
    let m = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({"text": "a picture", "attachments": [attachment]}),
        )
        .await;
    assert_eq!(m.status, 201, "{:?}", m.body);
    let h = bob
        .on(cluster.url(1))
        .get(&format!("/v1/channels/{group}/messages?limit=1"))
        .await;
    let url = h.body["messages"][0]["attachments"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);

    // Membership is cached per node and invalidated everywhere: Carol sends through node 3
    // (caching the member set there), leaves through node 1, and node 3 refuses her next send.
    carol.send(group, "bye all").await;
    let r = carol
        .on(cluster.url(0))
        .post(&format!("/v1/channels/{group}/leave"), &json!({}))
        .await;
    assert_eq!(r.status, 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    // Sends node 3 accepted before the invalidation reached it: acknowledged, so stored.
    let mut accepted_after_leave = 0;
    loop {
        let r = carol
            .post(
                &format!("/v1/channels/{group}/messages"),
                &json!({"text": "still here?"}),
            )
            .await;
        if r.status == 403 {
            break;
        }
        if r.status == 201 {
            accepted_after_leave += 1;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 still lets a former member send: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Everything acknowledged is in Postgres exactly once.
    let total = sent.len() + missed.len() + 3 + accepted_after_leave;
    let seqs: Vec<i64> = stored_messages(&services, group, total, Duration::from_secs(20))
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        seqs,
        (1..=total as i64).collect::<Vec<_>>(),
        "{}",
        cluster.logs()
    );

    // Dave never connected: he got a notification record per message.
    let notified = parley_e2e_notifications(&services, &cluster.prefix, dave.id()).await;
    assert!(
        notified >= sent.len(),
        "dave got {notified} notifications for {} messages",
        sent.len()
    );
}

/// Counts the records for `user` on `<prefix>.notifications`.
async fn parley_e2e_notifications(services: &Services, prefix: &str, user: Id) -> usize {
    use rdkafka::Message as _;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &services.kafka.bootstrap_servers)
        .set("group.id", format!("{prefix}-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&format!("{prefix}.notifications")])
        .unwrap();
    let mut count = 0;
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
        let body: serde_json::Value =
            serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
        if body["user_id"] == user.to_string() {
            count += 1;
        }
    }
    count
}

/// How many messages of `channel` the database at `url` holds.
async fn count_in(url: &str, channel: Id) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE channel_id = $1")
        .bind(channel.0 as i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// The shards a node's `/readyz` lists.
async fn shards_seen(cluster: &Cluster) -> Vec<String> {
    let Some((_, body)) = cluster.readyz(0).await else {
        return Vec::new();
    };
    body["backends"]
        .as_object()
        .into_iter()
        .flat_map(|b| b.keys())
        .filter_map(|k| k.strip_prefix("postgres shard ").map(str::to_owned))
        .collect()
}

/// In Kubernetes the shard map reaches nodes and persisters as a mounted Secret
/// (`PARLEY_SHARDS_FILE`); a changed, valid map is put in force without a restart, and an
/// invalid one is refused.
#[tokio::test]
async fn nodes_and_persisters_swap_the_shard_map_live_from_its_file() {
    let services = services();
    let (a, b) = (
        services.postgres("shard-a").url.clone(),
        services.postgres("shard-b").url.clone(),
    );
    let file =
        std::env::temp_dir().join(format!("parley-shards-{}-{}", std::process::id(), line!()));
    std::fs::write(&file, format!("shard-a:0-4095:{a}")).unwrap();
    let cluster = Cluster::start(
        &services,
        Options {
            nodes: 1,
            persisters: 1,
            extra_env: vec![("PARLEY_SHARDS_FILE".into(), file.display().to_string())],
            ..Options::default()
        },
    )
    .await;
    assert_eq!(shards_seen(&cluster).await, ["shard-a"]);
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    let group = alice.create_group(&cluster.name("g")).await;
    alice.send(group, "into a").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count_in(&a, group).await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not persisted into shard-a"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every slot moves to shard-b (the Secret is rewritten; the pods keep running).
    std::fs::write(&file, format!("shard-b:0-4095:{b}")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while shards_seen(&cluster).await != ["shard-b"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node kept the old map"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The persister reads the same file; give it the same two-second period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    alice.send(group, "into b").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count_in(&b, group).await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the persister did not write to shard-b; logs: {}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count_in(&a, group).await, 1, "nothing more went to shard-a");

    // A map with a gap is refused: the node keeps the one in force.
    std::fs::write(&file, format!("shard-a:0-99:{a}")).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(shards_seen(&cluster).await, ["shard-b"]);
    assert!(
        cluster.logs().contains("refused the new shard map"),
        "the refusal is logged"
    );
    alice.send(group, "still b").await;
    let _ = std::fs::remove_file(&file);
}
