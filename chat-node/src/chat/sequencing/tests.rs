//! Sequencing against a fencing that fences: a real embedded node (SQLite log and store,
//! its persister running) whose owner terms live in a [`MemoryFencing`]; the test plays the
//! other node, taking the channel over between sends.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley_protocol::{ErrorCode, Id};
use tokio_util::sync::CancellationToken;

use crate::backend::{Log, LogEntry, LogRecord, Page, StoredMessage};
use crate::chat::fencing::{Fencing, MemoryFencing, OwnerTerm};
use crate::chat::owners::{Ownership, SingleNode};
use crate::chat::{Chat, SendInput};
use crate::error::ApiError;
use crate::hub::{Closer, Outbound};
use crate::snowflake::{DEFAULT_EPOCH_MS, min_id_at};

/// A [`MemoryFencing`] through which another node can take a channel over right before this
/// node's next confirm (after its append).
#[derive(Debug, Default)]
struct Racing {
    terms: MemoryFencing,
    /// Set: the next confirm first lets the other node take this channel over on this log.
    before_confirm: parking_lot::Mutex<Option<(Id, Arc<dyn Log>)>>,
}

impl Racing {
    /// The other node's take-over of `channel`: reserve, fence on `log`, establish.
    async fn take_over(&self, channel: Id, log: &dyn Log) -> OwnerTerm {
        let generation = self.terms.reserve(channel, 0).await.unwrap();
        let payload = Bytes::from(LogEntry::encode_fence(channel, generation).unwrap());
        let offsets = log
            .append(&[LogRecord {
                key: channel,
                payload,
            }])
            .await
            .unwrap();
        let term = OwnerTerm {
            generation,
            term: offsets[0] + 1,
        };
        self.terms.establish(channel, term).await.unwrap();
        term
    }
}

#[async_trait]
impl Fencing for Racing {
    fn fences(&self) -> bool {
        true
    }

    async fn reserve(&self, channel: Id, floor: u64) -> Result<u64, ApiError> {
        self.terms.reserve(channel, floor).await
    }

    async fn establish(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        self.terms.establish(channel, term).await
    }

    async fn confirm(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        let race = self.before_confirm.lock().take();
        if let Some((c, log)) = race {
            self.take_over(c, log.as_ref()).await;
        }
        self.terms.confirm(channel, term).await
    }
}

struct Node {
    chat: Arc<Chat>,
    fencing: Arc<Racing>,
    log: Arc<dyn Log>,
    alice: Id,
    group: Id,
    /// Message events delivered on this node to a connection of alice's: (channel, id).
    events: crate::hub::EventReceiver,
    stop: CancellationToken,
}

/// An embedded node fenced by a [`Racing`], its persister running, with alice, her group
/// and a connection of hers attached to the hub.
async fn node() -> Node {
    let dir = std::env::temp_dir().join(format!(
        "parley-fenced-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut config = crate::config::Config::for_tests(dir);
    config.limits.send_rate = 100_000;
    config.limits.send_burst = 100_000;
    let fencing = Arc::new(Racing::default());
    let ownership = Ownership::of(SingleNode, fencing.clone());
    let chat = crate::node::embedded_with(config, "127.0.0.1:9".parse().unwrap(), ownership)
        .await
        .unwrap();
    let own = chat.own_log().expect("an embedded node").clone();
    let stop = CancellationToken::new();
    let batching = crate::persister::Batching {
        max_messages: 100,
        max_wait: Duration::from_millis(5),
    };
    tokio::spawn(crate::persister::run(
        own.log.clone(),
        own.store.clone(),
        batching,
        stop.clone(),
    ));
    let alice = chat
        .accounts()
        .register("alice", "password-alice", None)
        .await
        .unwrap()
        .user
        .id;
    let group = chat.channels().create_group(alice, "g").await.unwrap().id;
    let (tx, events) = crate::hub::queue(64);
    let hub = chat.hub().clone();
    hub.attach(hub.next_conn_id(), alice, &[group], tx, Closer::default())
        .await
        .unwrap();
    Node {
        chat,
        fencing,
        log: own.log,
        alice,
        group,
        events,
        stop,
    }
}

impl Node {
    async fn send(&self, cmid: &str) -> Result<parley_protocol::Message, ApiError> {
        let input = SendInput {
            text: cmid.to_owned(),
            client_msg_id: Some(cmid.to_owned()),
            ..SendInput::default()
        };
        self.chat
            .messages()
            .send(self.alice, self.group, input)
            .await
    }

    /// The message events delivered so far: (channel, id).
    fn delivered(&mut self) -> Vec<(Id, Id)> {
        let mut out = Vec::new();
        while let Ok(o) = self.events.try_recv() {
            if let Outbound::Frame(e) = o
                && let Some(m) = e.message
            {
                out.push(m);
            }
        }
        out
    }

    /// (seq, text) of the group's stored messages once the persister caught up.
    async fn stored(&self) -> Vec<(u64, String)> {
        assert!(self.chat.sequencing().confirm_persisted().await);
        let own = self.chat.own_log().unwrap();
        own.store
            .history(
                self.group,
                Page::After {
                    id: Id(0),
                    limit: 100,
                },
            )
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.seq, m.text))
            .collect()
    }

    fn fenced_sends(&self) -> String {
        self.chat
            .metrics()
            .render()
            .lines()
            .find(|l| l.starts_with("parley_fenced_sends_total"))
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test]
async fn a_send_fenced_after_its_append_is_unavailable_and_leaves_nothing_behind() {
    let mut n = node().await;
    let m1 = n.send("m1").await.unwrap();
    assert_eq!(m1.seq, 1);
    assert_eq!(n.delivered(), [(n.group, m1.id)]);

    // Another node takes the channel over; this one, unaware, still holds its term.
    n.fencing.take_over(n.group, n.log.as_ref()).await;
    let err = n.send("m2").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
    assert_eq!(n.fenced_sends(), "parley_fenced_sends_total 1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(n.delivered().is_empty(), "nothing published");
    let recent: Vec<u64> = n
        .chat
        .sequencing()
        .sequencer()
        .recent(n.group)
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(recent, [1], "nothing remembered");

    // The term was dropped: the next send takes the channel back (a fence, the persisters'
    // wait) and continues from the store, where the fenced record is not.
    let m3 = n.send("m3").await.unwrap();
    assert_eq!(m3.seq, 2, "the fenced send's seq was not used");
    assert_eq!(n.delivered(), [(n.group, m3.id)]);
    assert_eq!(
        n.stored().await,
        [(1, "m1".to_owned()), (2, "m3".to_owned())],
        "the persister dropped the fenced record"
    );
    n.stop.cancel();
}

#[tokio::test]
async fn a_send_fenced_before_the_next_owners_fence_is_found_by_its_retry() {
    let mut n = node().await;
    n.send("m1").await.unwrap();
    n.delivered();
    // The other node reserves and fences after this node's append, before its confirm:
    // the record stands before the fence, so it is stored, though its sender was told
    // `unavailable` (outcome unknown).
    *n.fencing.before_confirm.lock() = Some((n.group, n.log.clone()));
    let err = n.send("m2").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
    assert!(n.delivered().is_empty());
    // The retry (same client_msg_id) takes the channel back, waits for the persister
    // through the other node's fence and finds the message in the store.
    let again = n.send("m2").await.unwrap();
    assert_eq!(again.seq, 2);
    assert_eq!(n.send("m3").await.unwrap().seq, 3);
    assert_eq!(
        n.stored().await,
        [
            (1, "m1".to_owned()),
            (2, "m2".to_owned()),
            (3, "m3".to_owned())
        ]
    );
    n.stop.cancel();
}

#[tokio::test]
async fn ids_go_above_a_channel_s_ids_from_an_owner_whose_clock_was_ahead() {
    let mut n = node().await;
    let m1 = n.send("m1").await.unwrap();
    // Another node, its clock 30 s ahead, takes the channel over and sends seq 2.
    let term = n.fencing.take_over(n.group, n.log.as_ref()).await;
    let now = parley_protocol::Timestamp::now().unix_millis();
    let ahead = min_id_at(now + 30_000, DEFAULT_EPOCH_MS);
    let ahead = Id(ahead.0 | (1000 << 12) | 7);
    let other = StoredMessage {
        id: ahead,
        channel_id: n.group,
        seq: 2,
        author_id: n.alice,
        text: "m2".into(),
        client_msg_id: Some("other-m2".into()),
        attachments: vec![],
        reply_to: None,
        created_at: parley_protocol::Timestamp::now(),
        moderated: false,
    };
    let payload = Bytes::from(LogEntry::encode_message(&other, term).unwrap());
    n.log
        .append(&[LogRecord {
            key: n.group,
            payload,
        }])
        .await
        .unwrap();
    // This node's term is no longer in force: its next send is fenced; the retry takes the
    // channel back over and continues after the other node's message, in seq and in ID.
    let err = n.send("m3").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
    let m3 = n.send("m3").await.unwrap();
    assert_eq!(m3.seq, 3);
    assert!(m3.id > ahead, "{} not above {ahead}", m3.id);
    assert!(ahead > m1.id);
    let m4 = n.send("m4").await.unwrap();
    assert_eq!(m4.seq, 4);
    assert!(m4.id > m3.id);
    n.delivered();
    // History pages by ID: in ID order the seqs are 1..4.
    assert_eq!(
        n.stored().await,
        [
            (1, "m1".to_owned()),
            (2, "m2".to_owned()),
            (3, "m3".to_owned()),
            (4, "m4".to_owned())
        ]
    );
    n.stop.cancel();
}
