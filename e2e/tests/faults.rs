//! Faults against a running cluster: a node killed with -9 during sends, Redis restarted,
//! the Kafka broker restarted, a PostgreSQL shard stopped. Acknowledged messages are never
//! lost or doubled, and `/readyz` tells the truth meanwhile.
//!
//! These tests stop shared services, so they run one at a time.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use parley_e2e::client::{Api, Next, Ws, id_of};
use parley_e2e::cluster::{Cluster, Options, assert_stored_exactly_once, dev_services};
use parley_e2e::services;
use parley_protocol::Id;
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends `count` messages over a WebSocket, reconnecting to the next node when the socket
/// dies and retrying (same client_msg_id) on `unavailable`. Returns the acknowledged ids.
async fn sender(
    users: Vec<Api>,
    start: usize,
    channel: Id,
    tag: String,
    count: usize,
    progress: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<Id> {
    let mut node = start;
    let mut acked = Vec::new();
    let mut ws: Option<Ws> = None;
    let mut i = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while i < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sender {tag} stuck at {i}"
        );
        if ws.is_none() {
            let api = &users[node % users.len()];
            match tokio::time::timeout(Duration::from_secs(3), try_connect(api)).await {
                Ok(Some(s)) => ws = Some(s),
                _ => {
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let s = ws.as_mut().unwrap();
        let r = format!("{tag}-{i}");
        s.op(
            "send",
            &r,
            json!({"channel_id": channel.to_string(), "text": r, "client_msg_id": r}),
        )
        .await;
        let reply = loop {
            match s.next_within(Duration::from_secs(10)).await {
                Some(Next::Frame(t)) => {
                    let f: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if f["ref"] == r.as_str() {
                        break Some(f);
                    }
                }
                _ => break None,
            }
        };
        match reply {
            Some(f) if f["t"] == "ok" => {
                acked.push(id_of(&f["d"]["message"]["id"]));
                progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
            Some(f) => {
                assert_eq!(f["d"]["code"], "unavailable", "{f}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => {
                ws = None;
                node += 1;
            }
        }
    }
    acked
}

/// Reads message events until the node goes away, then reconnects through `elsewhere` with
/// `resume_after` and reads until the stream is quiet. Returns every message id seen.
async fn roam_until_killed(mut ws: Ws, elsewhere: Api) -> BTreeSet<Id> {
    let mut seen = BTreeSet::new();
    let mut last = None;
    loop {
        match ws.next_within(Duration::from_secs(60)).await {
            Some(Next::Frame(t)) => {
                let f: serde_json::Value = serde_json::from_str(&t).unwrap();
                if f["t"] == "message" {
                    let id = id_of(&f["d"]["id"]);
                    seen.insert(id);
                    last = Some(last.map_or(id, |l: Id| l.max(id)));
                }
            }
            Some(Next::Closed(_)) => break,
            None => panic!("the roaming client's node was never killed"),
        }
    }
    // Like a real client: retry while the dead node's channels are moving.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ws = loop {
        match elsewhere.try_connect(last).await {
            Ok((ws, _)) => break ws,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "could not resume: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    while let Some(Next::Frame(t)) = ws.next_within(Duration::from_secs(5)).await {
        let f: serde_json::Value = serde_json::from_str(&t).unwrap();
        if f["t"] == "message" {
            seen.insert(id_of(&f["d"]["id"]));
        }
    }
    seen
}

async fn try_connect(api: &Api) -> Option<Ws> {
    api.try_connect(None).await.ok().map(|(ws, _)| ws)
}

#[tokio::test]
async fn kill_9_of_a_node_loses_no_acknowledged_message() {
    let _serial = SERIAL.lock().await;
    let services = services();
    let mut cluster = Cluster::start(&services, Options::default()).await;
    let owner = Api::register(cluster.url(0), &cluster.name("owner")).await;
    let group = owner.create_group(&cluster.name("stream")).await;
    // A watcher on node 1, which stays up, connected before the first send.
    let watcher = Api::register(cluster.url(0), &cluster.name("watch")).await;
    watcher.join(group).await;
    let (mut w, _) = watcher.connect(None).await;
    // Another on node 2, the one that will be killed: it must reconnect elsewhere and resume.
    let roamer = Api::register(cluster.url(1), &cluster.name("roam")).await;
    roamer.join(group).await;
    let (roaming, _) = roamer.connect(None).await;
    let roam = tokio::spawn(roam_until_killed(roaming, roamer.on(cluster.url(2))));
    let mut tasks = Vec::new();
    let mut watchers = Vec::new();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    const EACH: usize = 150;
    for k in 0..3 {
        let user = Api::register(cluster.url(k), &cluster.name(&format!("s{k}x"))).await;
        user.join(group).await;
        let on_each: Vec<Api> = (0..3).map(|n| user.on(cluster.url(n))).collect();
        tasks.push(tokio::spawn(sender(
            on_each,
            k,
            group,
            format!("s{k}"),
            EACH,
            progress.clone(),
        )));
        watchers.push(user);
    }
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(1).await;
    let at_kill = progress.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        at_kill < 3 * EACH,
        "the node died during the stream ({at_kill} of {} sent)",
        3 * EACH
    );
    let mut acked = BTreeSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 3 * EACH);
    assert_stored_exactly_once(&services, group, &acked, &cluster).await;

    // The client of the killed node reconnected to another with resume_after and got every
    // acknowledged message.
    let roamed = roam.await.unwrap();
    let missing: Vec<&Id> = acked.iter().filter(|id| !roamed.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "not delivered to the resuming client: {missing:?}"
    );

    // Delivered: what the watcher saw live, plus what it fetches for the seq gaps it can see.
    let mut seen: HashMap<u64, Id> = HashMap::new();
    while let Some(Next::Frame(t)) = w.next_within(Duration::from_secs(2)).await {
        let f: serde_json::Value = serde_json::from_str(&t).unwrap();
        if f["t"] == "message" {
            seen.insert(f["d"]["seq"].as_u64().unwrap(), id_of(&f["d"]["id"]));
        }
    }
    let live = seen.len();
    let page = watcher.get("/v1/sync?limit=1000").await;
    for m in page.body["messages"].as_array().unwrap() {
        seen.entry(m["seq"].as_u64().unwrap())
            .or_insert_with(|| id_of(&m["id"]));
    }
    let delivered: BTreeSet<Id> = seen.values().copied().collect();
    assert!(
        acked.is_subset(&delivered),
        "every acknowledged message reached the watcher"
    );
    assert!(
        live >= acked.len() - 3,
        "live delivery kept going ({live} of {})",
        acked.len()
    );
}

#[tokio::test]
async fn kafka_restart_answers_unavailable_then_recovers() {
    let _serial = SERIAL.lock().await;
    let services = services();
    let cluster = Cluster::start(&services, Options::default()).await;
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    let group = alice.create_group(&cluster.name("k")).await;
    let mut acked = BTreeSet::new();
    for i in 0..5 {
        acked.insert(id_of(
            &alice.send(group, &format!("before {i}")).await["id"],
        ));
    }
    dev_services(&["down", "kafka"]);
    let r = alice
        .post(
            &format!("/v1/channels/{group}/messages"),
            &json!({"text": "while down", "client_msg_id": "down-1"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (503, "unavailable"),
        "never a false ok: {:?}",
        r.body
    );
    let (status, body) = cluster.readyz(0).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body["backends"]["kafka"]
            .as_str()
            .unwrap_or("")
            .starts_with("unavailable"),
        "{body}"
    );
    dev_services(&["up", "kafka"]);
    // Recovers: the same client_msg_id now goes through, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let message = loop {
        let r = alice
            .post(
                &format!("/v1/channels/{group}/messages"),
                &json!({"text": "while down", "client_msg_id": "down-1"}),
            )
            .await;
        if r.status == 201 {
            break r.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery: {:?}\n{}",
            r.body,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    acked.insert(id_of(&message["id"]));
    for i in 0..5 {
        acked.insert(id_of(&alice.send(group, &format!("after {i}")).await["id"]));
    }
    assert_stored_exactly_once(&services, group, &acked, &cluster).await;
    cluster.wait_ring(3).await;
}

#[tokio::test]
async fn redis_restart_resubscribes_and_rebuilds_presence() {
    let _serial = SERIAL.lock().await;
    let services = services();
    // Heartbeats at 5 s: Bob's connection outlives the restart without pinging during it.
    let cluster = Cluster::start(
        &services,
        Options {
            heartbeat_interval_ms: 5000,
            ..Options::default()
        },
    )
    .await;
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    let bob = Api::register(cluster.url(1), &cluster.name("bob")).await;
    let group = alice.create_group(&cluster.name("r")).await;
    bob.join(group).await;
    let (mut b, _) = bob.connect(None).await;
    alice.send(group, "before").await;
    assert_eq!(b.expect("message").await.d["text"], "before");

    dev_services(&["restart", "redis"]);
    let (status, _) = cluster.readyz(0).await.unwrap();
    assert!(status == 200 || status == 503);

    // Bob keeps pinging; after the restart his node writes his presence back, and fan-out
    // works again once the subscriptions are restored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        b.op("ping", &format!("p{i}"), json!({})).await;
        let r = alice
            .post(
                &format!("/v1/channels/{group}/messages"),
                &json!({"text": format!("after {i}")}),
            )
            .await;
        if r.status == 201 {
            let got = b.drain(Duration::from_millis(500)).await;
            if got
                .iter()
                .any(|f| f.t == "message" && f.d["text"] == format!("after {i}"))
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the Redis restart\n{}",
            cluster.logs()
        );
        i += 1;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        b.op("ping", "again", json!({})).await;
        let p = alice
            .get(&format!("/v1/presence?user_ids={}", bob.id()))
            .await;
        if p.body["presence"][0]["status"] == "online" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence not rebuilt: {:?}",
            p.body
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(cluster.readyz(0).await.unwrap().0, 200);
}

#[tokio::test]
async fn a_stopped_shard_delays_persisting_but_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let services = services();
    let cluster = Cluster::start(&services, Options::default()).await;
    let alice = Api::register(cluster.url(0), &cluster.name("alice")).await;
    // A group whose messages live on shard-b.
    let mut group = None;
    for i in 0..64 {
        let g = alice.create_group(&cluster.name(&format!("b{i}x"))).await;
        if parley_crd::slot_of(g.0) >= 2048 {
            group = Some(g);
            break;
        }
    }
    let group = group.expect("a channel on shard-b");
    let mut acked = BTreeSet::new();
    acked.insert(id_of(&alice.send(group, "before").await["id"]));

    dev_services(&["down", "pg-shard-b"]);
    for i in 0..10 {
        acked.insert(id_of(
            &alice.send(group, &format!("during {i}")).await["id"],
        ));
    }
    let (status, body) = cluster.readyz(0).await.unwrap();
    assert_eq!(status, 200, "a shard down leaves the node ready: {body}");
    assert_eq!(body["status"], "degraded");
    assert!(
        body["backends"]["postgres shard shard-b"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{body}"
    );
    // Reading that channel's history needs the shard.
    let r = alice.get(&format!("/v1/channels/{group}/messages")).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"));
    tokio::time::sleep(Duration::from_secs(2)).await;

    dev_services(&["up", "pg-shard-b"]);
    assert_stored_exactly_once(&services, group, &acked, &cluster).await;
    let r = alice
        .get(&format!("/v1/channels/{group}/messages?limit=100"))
        .await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 11);
    assert_eq!(cluster.readyz(0).await.unwrap().1["status"], "ready");
}
