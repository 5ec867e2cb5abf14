//! The hub over an in-process bus: who gets what, subscriptions, slow readers, caps.

use super::*;
use crate::backend::memory::MemoryBus;
use bytes::Bytes;
use parley_protocol::PresenceStatus;
use parley_protocol::ws::close;

fn frame(header: &Header, text: &str) -> Bytes {
    encode(header, text.as_bytes())
}

async fn hub() -> (Arc<Hub>, Arc<dyn PubSub>) {
    let bus = MemoryBus::new();
    let hub = Hub::connect(
        |sink| async move { Ok(Arc::new(bus.endpoint(sink)) as Arc<dyn PubSub>) },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    let pubsub = hub.pubsub().clone();
    (hub, pubsub)
}

/// What is queued, as text: a presence batch's frames (taken) in its place.
fn texts(rx: &mut EventReceiver) -> Vec<String> {
    let mut v = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(Outbound::Frame(e)) => v.push(String::from_utf8(e.bytes.to_vec()).unwrap()),
            Ok(Outbound::Presence(batch)) => v.extend(
                batch
                    .take()
                    .into_iter()
                    .map(|f| String::from_utf8(f.frame.to_vec()).unwrap()),
            ),
            Ok(Outbound::Close(..)) | Err(_) => return v,
        }
    }
}

/// Publishes `bytes` on `channel`'s topic.
async fn to_channel(pubsub: &Arc<dyn PubSub>, channel: Id, bytes: Bytes) {
    pubsub
        .publish(Topic::Channel(channel), bytes)
        .await
        .unwrap();
}

/// A `presence` frame of `user` with `status`, as published.
fn presence_frame(user: Id, status: PresenceStatus) -> Bytes {
    let header = Header {
        p: Some((user, status)),
        ..Default::default()
    };
    let d = serde_json::json!({"user_id": user, "status": status, "last_seen": null});
    frame(
        &header,
        &serde_json::json!({"t": "presence", "d": d}).to_string(),
    )
}

/// The `user_id` and `status` of each presence frame in `texts`, anything else as itself.
fn presences(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .map(|t| match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) if v["t"] == "presence" => {
                format!(
                    "{}:{}",
                    v["d"]["user_id"].as_str().unwrap(),
                    v["d"]["status"].as_str().unwrap()
                )
            }
            _ => t.clone(),
        })
        .collect()
}

#[tokio::test]
async fn delivers_to_members_excluding_and_deduping() {
    let (hub, pubsub) = hub().await;
    let (alice, bob, ch) = (Id(1), Id(2), Id(10));
    let (atx, mut arx) = queue(16);
    let (btx, mut brx) = queue(16);
    let (b2tx, mut b2rx) = queue(16);
    hub.attach(1, alice, &[ch], atx, Closer::default())
        .await
        .unwrap();
    hub.attach(2, bob, &[ch], btx, Closer::default())
        .await
        .unwrap();
    hub.attach(3, bob, &[ch], b2tx, Closer::default())
        .await
        .unwrap();

    pubsub
        .publish(Topic::Channel(ch), frame(&Header::default(), "m1"))
        .await
        .unwrap();
    pubsub
        .publish(
            Topic::Channel(ch),
            frame(
                &Header {
                    x: Some(alice),
                    ..Default::default()
                },
                "typing",
            ),
        )
        .await
        .unwrap();
    let presence = presence_frame(Id(3), PresenceStatus::Online);
    pubsub
        .publish(Topic::Channel(ch), presence.clone())
        .await
        .unwrap();
    pubsub.publish(Topic::Channel(ch), presence).await.unwrap();
    pubsub
        .publish(Topic::User(bob), frame(&Header::default(), "for bob"))
        .await
        .unwrap();

    assert_eq!(presences(&texts(&mut arx)), ["m1", "3:online"]);
    assert_eq!(
        presences(&texts(&mut brx)),
        ["m1", "typing", "3:online", "for bob"]
    );
    assert_eq!(
        presences(&texts(&mut b2rx)),
        ["m1", "typing", "3:online", "for bob"]
    );

    // Bob's last connection goes: the channel stays subscribed for Alice only.
    hub.detach(2).await;
    hub.detach(3).await;
    assert!(!hub.is_connected(bob));
    pubsub
        .publish(Topic::Channel(ch), frame(&Header::default(), "m2"))
        .await
        .unwrap();
    assert_eq!(texts(&mut arx), ["m2"]);
}

#[tokio::test]
async fn the_cluster_topic_goes_to_the_inbox_never_to_sockets() {
    let seen: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let inbox = seen.clone();
    let bus = MemoryBus::new();
    let hub = Hub::connect(
        |sink| async move { Ok(Arc::new(bus.endpoint(sink)) as Arc<dyn PubSub>) },
        Arc::new(move |p: &Bytes| inbox.lock().push(p.clone())),
    )
    .await
    .unwrap();
    let (tx, mut rx) = queue(4);
    let conn = hub.next_conn_id();
    hub.attach(conn, Id(1), &[Id(2)], tx, Closer::default())
        .await
        .unwrap();
    hub.pubsub()
        .publish(Topic::Cluster, Bytes::from_static(b"ring"))
        .await
        .unwrap();
    assert_eq!(*seen.lock(), [Bytes::from_static(b"ring")]);
    assert!(texts(&mut rx).is_empty());
    assert!(hub.next_conn_id() > conn, "connection IDs are never reused");
}

#[tokio::test]
async fn join_and_leave_headers_change_what_a_user_receives() {
    let (hub, pubsub) = hub().await;
    let (carol, ch) = (Id(5), Id(20));
    let (tx, mut rx) = queue(16);
    hub.attach(9, carol, &[], tx, Closer::default())
        .await
        .unwrap();
    pubsub
        .publish(Topic::Channel(ch), frame(&Header::default(), "before"))
        .await
        .unwrap();
    hub.set_member(ch, carol, true).await.unwrap();
    pubsub
        .publish(Topic::Channel(ch), frame(&Header::default(), "after"))
        .await
        .unwrap();
    hub.set_member(ch, carol, false).await.unwrap();
    pubsub
        .publish(Topic::Channel(ch), frame(&Header::default(), "gone"))
        .await
        .unwrap();
    assert_eq!(texts(&mut rx), ["after"]);
}

#[tokio::test]
async fn a_full_queue_flags_the_slow_connection() {
    let (hub, pubsub) = hub().await;
    let (tx, _rx) = queue(2);
    let overflow = Closer::default();
    hub.attach(7, Id(1), &[Id(2)], tx, overflow.clone())
        .await
        .unwrap();
    for _ in 0..2 {
        pubsub
            .publish(Topic::Channel(Id(2)), frame(&Header::default(), "x"))
            .await
            .unwrap();
    }
    assert!(!overflow.is_closed());
    pubsub
        .publish(Topic::Channel(Id(2)), frame(&Header::default(), "x"))
        .await
        .unwrap();
    assert!(overflow.is_closed());
    assert_eq!(overflow.closed().await.0, close::POLICY);
}

#[tokio::test]
async fn a_close_reaches_a_connection_whose_queue_is_full() {
    let (hub, _pubsub) = hub().await;
    let (tx, _rx) = queue(1);
    let closer = Closer::default();
    hub.attach(8, Id(1), &[], tx, closer.clone()).await.unwrap();
    let frame = Outbound::Frame(Event::new(Bytes::from_static(b"x"), None));
    assert!(hub.send_to(8, frame.clone()));
    assert!(!hub.send_to(8, frame), "the queue is full");
    assert!(hub.send_to(
        8,
        Outbound::Close(close::HEARTBEAT_EXPIRED, "heartbeat expired")
    ));
    assert_eq!(closer.closed().await.0, close::HEARTBEAT_EXPIRED);
    // The first reason stays.
    closer.close(close::POLICY, "other");
    assert_eq!(closer.closed().await.0, close::HEARTBEAT_EXPIRED);
}

#[tokio::test]
async fn sessions_per_user_are_capped_until_one_ends() {
    let (hub, _pubsub) = hub().await;
    let a = hub.admit(Id(1), 2).unwrap();
    let _b = hub.admit(Id(1), 2).unwrap();
    assert!(hub.admit(Id(1), 2).is_none());
    assert!(hub.admit(Id(2), 2).is_some(), "per user");
    drop(a);
    assert_eq!(hub.sessions_of(Id(1)), 1);
    assert!(hub.admit(Id(1), 2).is_some());
}

/// A directory of one channel's members, counting its answers.
#[derive(Debug, Default)]
struct Directory {
    members: Mutex<HashSet<(Id, Id)>>,
    asked: AtomicU64,
}

#[async_trait::async_trait]
impl MemberStore for Directory {
    async fn join(
        &self,
        channel: Id,
        user: Id,
        _at: parley_protocol::Timestamp,
    ) -> Result<bool, BackendError> {
        Ok(self.members.lock().insert((channel, user)))
    }
    async fn leave(&self, channel: Id, user: Id) -> Result<bool, BackendError> {
        Ok(self.members.lock().remove(&(channel, user)))
    }
    async fn member_ids(&self, channel: Id) -> Result<Vec<Id>, BackendError> {
        Ok(self
            .members
            .lock()
            .iter()
            .filter(|m| m.0 == channel)
            .map(|m| m.1)
            .collect())
    }
    async fn is_member(&self, channel: Id, user: Id) -> Result<bool, BackendError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(self.members.lock().contains(&(channel, user)))
    }
    async fn co_members(&self, _user: Id, _candidates: &[Id]) -> Result<Vec<Id>, BackendError> {
        Ok(Vec::new())
    }
}

/// Publishes a leave of `user` on `ch` and waits until the hub applied it (asked the
/// directory and let the subscription lock go).
async fn leave_event(hub: &Hub, pubsub: &Arc<dyn PubSub>, dir: &Directory, ch: Id, user: Id) {
    let asked = dir.asked.load(Ordering::SeqCst);
    let header = Header {
        l: Some((ch, user)),
        ..Default::default()
    };
    pubsub
        .publish(Topic::Channel(ch), frame(&header, "member_left"))
        .await
        .unwrap();
    // Bounded: a hub that unsubscribed the channel never sees the event.
    for _ in 0..1000 {
        if dir.asked.load(Ordering::SeqCst) != asked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(hub.subscriptions.lock().await);
}

#[tokio::test]
async fn a_stale_leave_arriving_after_the_rejoin_is_ignored() {
    let (hub, pubsub) = hub().await;
    let dir = Arc::new(Directory::default());
    hub.check_memberships_with(dir.clone());
    let (carol, ch) = (Id(5), Id(20));
    dir.join(ch, carol, parley_protocol::Timestamp::now())
        .await
        .unwrap();
    let (tx, mut rx) = queue(16);
    hub.attach(9, carol, &[ch], tx, Closer::default())
        .await
        .unwrap();

    // Carol left and joined again; the left event comes last (its publish was late).
    leave_event(&hub, &pubsub, &dir, ch, carol).await;
    pubsub
        .publish(
            Topic::Channel(ch),
            frame(&Header::default(), "still a member"),
        )
        .await
        .unwrap();
    // Now she leaves for real.
    dir.leave(ch, carol).await.unwrap();
    leave_event(&hub, &pubsub, &dir, ch, carol).await;
    pubsub
        .publish(Topic::Channel(ch), frame(&Header::default(), "gone"))
        .await
        .unwrap();
    assert_eq!(
        texts(&mut rx),
        ["member_left", "still a member", "member_left"]
    );
}

#[tokio::test]
async fn a_resync_tells_each_connection_of_each_of_its_channels() {
    let (hub, _) = hub().await;
    let (alice, bob) = (Id(1), Id(2));
    let (atx, mut arx) = queue(16);
    let (btx, mut brx) = queue(16);
    let (ctx, mut crx) = queue(16);
    hub.attach(1, alice, &[Id(10), Id(11)], atx, Closer::default())
        .await
        .unwrap();
    hub.attach(2, bob, &[Id(11)], btx, Closer::default())
        .await
        .unwrap();
    hub.attach(3, Id(3), &[], ctx, Closer::default())
        .await
        .unwrap();
    assert_eq!(hub.resync_subscribers(), 3);
    let mut a = texts(&mut arx);
    a.sort();
    assert_eq!(
        a,
        [
            r#"{"t":"resync_required","d":{"channel_id":"10"}}"#,
            r#"{"t":"resync_required","d":{"channel_id":"11"}}"#
        ]
    );
    assert_eq!(
        texts(&mut brx),
        [r#"{"t":"resync_required","d":{"channel_id":"11"}}"#]
    );
    assert!(texts(&mut crx).is_empty(), "no channel, nothing to resync");
}

#[tokio::test]
async fn a_run_of_presence_changes_takes_one_queue_slot_and_keeps_its_place() {
    use PresenceStatus::{Idle, Offline, Online};
    let (hub, pubsub) = hub().await;
    let (ann, ch) = (Id(1), Id(10));
    let (tx, mut rx) = queue(4);
    let closer = Closer::default();
    hub.attach(1, ann, &[ch], tx, closer.clone()).await.unwrap();
    let publish = |bytes: Bytes| to_channel(&pubsub, ch, bytes);
    // More changes than the queue has slots: they share one.
    for u in 100..110 {
        publish(presence_frame(Id(u), Online)).await;
    }
    publish(presence_frame(Id(100), Idle)).await; // replaces 100's entry
    publish(presence_frame(Id(101), Offline)).await;
    publish(presence_frame(Id(101), Online)).await; // a flap: told once, as it ends
    publish(frame(&Header::default(), "m1")).await;
    publish(presence_frame(Id(100), Online)).await; // after m1: a new batch
    publish(presence_frame(Id(200), Online)).await;
    assert!(!closer.is_closed());
    let mut want: Vec<String> = vec!["100:idle".into()];
    want.extend((101..110).map(|u| format!("{u}:online")));
    want.extend(["m1".into(), "100:online".into(), "200:online".into()]);
    assert_eq!(presences(&texts(&mut rx)), want);

    // A change after the session took its batch goes to a new one.
    publish(presence_frame(Id(200), Idle)).await;
    publish(presence_frame(Id(101), Offline)).await;
    publish(presence_frame(Id(200), Online)).await;
    assert_eq!(presences(&texts(&mut rx)), ["200:online", "101:offline"]);
}

#[tokio::test]
async fn presence_entries_past_the_budget_close_a_slow_reader() {
    let (hub, pubsub) = hub().await;
    let (ann, ch) = (Id(1), Id(10));
    let (tx, _rx) = queue(4);
    let closer = Closer::default();
    hub.attach(1, ann, &[ch], tx, closer.clone()).await.unwrap();
    let online = |user: u64| {
        to_channel(
            &pubsub,
            ch,
            presence_frame(Id(user), PresenceStatus::Online),
        )
    };
    for u in 0..presence_batch::PENDING_MAX as u64 {
        online(1000 + u).await;
    }
    assert!(!closer.is_closed(), "the budget holds them");
    online(1).await;
    assert!(!closer.is_closed(), "the user's own presence is not queued");
    online(99).await;
    assert!(closer.is_closed(), "past the budget: a slow reader");
    assert_eq!(closer.closed().await.0, close::POLICY);
}
