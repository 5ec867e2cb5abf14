//! The take-over's steps and their order, with a log and a fencing that write what is done
//! to one journal (no services; the store is SQLite in memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parley_protocol::{ErrorCode, Id};

use super::*;
use crate::backend::sqlite::{SqliteStore, open_memory};
use crate::backend::{BackendError, LogConsumer, StoredMessage};
use crate::chat::fencing::{MemoryFencing, Unfenced};
use crate::chat::owners::SingleNode;

type Journal = Arc<parking_lot::Mutex<Vec<String>>>;

/// A log that numbers appended records from 100, writes what is appended and waited for to
/// the journal, and whose persisters take `wait` to catch up.
#[derive(Debug)]
struct JournaledLog {
    journal: Journal,
    next: AtomicU64,
    wait: Duration,
}

#[async_trait]
impl Log for JournaledLog {
    async fn append(&self, records: &[LogRecord]) -> Result<Vec<u64>, BackendError> {
        let mut offsets = Vec::new();
        for r in records {
            let offset = self.next.fetch_add(1, Ordering::SeqCst) + 100;
            let what = match LogEntry::decode(&r.payload).unwrap() {
                LogEntry::Fence { channel } => format!("fence {channel} at {offset}"),
                LogEntry::Message { message, term } => {
                    format!(
                        "message {} seq {} term {term}",
                        message.channel_id, message.seq
                    )
                }
            };
            self.journal.lock().push(what);
            offsets.push(offset);
        }
        Ok(offsets)
    }

    async fn consumer(&self, _group: &str) -> Result<Box<dyn LogConsumer>, BackendError> {
        Err(BackendError::internal("journal", "no consumers"))
    }

    async fn wait_consumed(&self, _group: &str, _timeout: Duration) -> Result<(), BackendError> {
        self.journal.lock().push("wait".into());
        tokio::time::sleep(self.wait).await;
        Ok(())
    }
}

/// A [`MemoryFencing`] that writes its calls to the journal; when `race` is set, another
/// node reserves the channel right after each of this node's reserves, when `overtake` is,
/// right after each of its establishes.
#[derive(Debug)]
struct JournaledFencing {
    journal: Journal,
    terms: MemoryFencing,
    race: std::sync::atomic::AtomicBool,
    overtake: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Fencing for JournaledFencing {
    fn fences(&self) -> bool {
        true
    }

    async fn reserve(&self, channel: Id) -> Result<u64, ApiError> {
        let generation = self.terms.reserve(channel).await?;
        self.journal
            .lock()
            .push(format!("reserve {channel} -> {generation}"));
        if self.race.load(Ordering::SeqCst) {
            self.terms.reserve(channel).await?;
        }
        Ok(generation)
    }

    async fn establish(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        let r = self.terms.establish(channel, term).await;
        self.journal.lock().push(format!(
            "establish {channel} {}/{}: {}",
            term.generation,
            term.term,
            if r.is_ok() { "ok" } else { "superseded" }
        ));
        if self.overtake.load(Ordering::SeqCst) {
            self.terms.reserve(channel).await?;
        }
        r
    }

    async fn confirm(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        self.terms.confirm(channel, term).await
    }
}

struct Setup {
    handover: Handover,
    journal: Journal,
    fencing: Arc<JournaledFencing>,
    store: Arc<SqliteStore>,
    sequencer: Arc<Sequencer>,
}

async fn setup(wait: Duration) -> Setup {
    let journal: Journal = Arc::default();
    let fencing = Arc::new(JournaledFencing {
        journal: journal.clone(),
        terms: MemoryFencing::default(),
        race: false.into(),
        overtake: false.into(),
    });
    let log = Arc::new(JournaledLog {
        journal: journal.clone(),
        next: AtomicU64::new(0),
        wait,
    });
    let store = Arc::new(SqliteStore::new(open_memory().await.unwrap()));
    let sequencer = Arc::new(Sequencer::default());
    let handover = Handover::new(
        Arc::new(SingleNode),
        fencing.clone(),
        log,
        store.clone(),
        sequencer.clone(),
    );
    Setup {
        handover,
        journal,
        fencing,
        store,
        sequencer,
    }
}

fn stored(channel: Id, seq: u64) -> StoredMessage {
    StoredMessage {
        id: Id(1000 + seq),
        channel_id: channel,
        seq,
        author_id: Id(1),
        text: format!("m{seq}"),
        client_msg_id: None,
        attachments: vec![],
        reply_to: None,
        created_at: parley_protocol::Timestamp(0),
        moderated: false,
    }
}

impl Setup {
    async fn hold(&self, channel: Id, epoch: u64) -> Result<(OwnerTerm, Option<u64>), ApiError> {
        let state = self.sequencer.channel(channel);
        let mut owner = state.owner.lock().await;
        let term = self
            .handover
            .hold(&state, &mut owner, channel, epoch)
            .await?;
        assert_eq!(owner.held.map(|h| h.term), Some(term));
        Ok((term, owner.last_seq))
    }

    fn journal(&self) -> Vec<String> {
        std::mem::take(&mut *self.journal.lock())
    }
}

#[tokio::test]
async fn a_take_over_reserves_fences_establishes_waits_then_loads_the_last_seq() {
    let s = setup(Duration::ZERO).await;
    let c = Id(7);
    s.store
        .insert_messages(&[stored(c, 1), stored(c, 2)])
        .await
        .unwrap();
    let (term, last) = s.hold(c, 3).await.unwrap();
    assert_eq!(
        term,
        OwnerTerm {
            generation: 1,
            term: 101
        },
        "the fence's offset + 1"
    );
    assert_eq!(last, Some(2), "the store's last seq");
    assert_eq!(
        s.journal(),
        [
            "reserve 7 -> 1",
            "fence 7 at 100",
            "establish 7 1/101: ok",
            "wait"
        ]
    );
    assert_eq!(s.sequencer.channel(c).loaded_in(), 3);

    // Held: the same epoch does nothing more.
    assert_eq!(s.hold(c, 3).await.unwrap().0, term);
    assert!(s.journal().is_empty());
    // A new ring epoch takes the channel over again.
    let (again, _) = s.hold(c, 4).await.unwrap();
    assert_eq!(
        again,
        OwnerTerm {
            generation: 2,
            term: 102
        }
    );
    assert_eq!(s.journal().len(), 4);
}

#[tokio::test]
async fn a_take_over_superseded_before_it_establishes_holds_nothing() {
    let s = setup(Duration::ZERO).await;
    let c = Id(8);
    s.fencing.race.store(true, Ordering::SeqCst);
    let err = s.hold(c, 1).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert_eq!(
        s.journal(),
        [
            "reserve 8 -> 1",
            "fence 8 at 100",
            "establish 8 1/101: superseded"
        ],
        "no wait, no last seq"
    );
    let state = s.sequencer.channel(c);
    assert!(state.owner.lock().await.held.is_none());
    // The race over, the next attempt wins.
    s.fencing.race.store(false, Ordering::SeqCst);
    assert_eq!(
        s.hold(c, 1).await.unwrap().0,
        OwnerTerm {
            generation: 3,
            term: 102
        }
    );
}

#[tokio::test]
async fn a_stored_term_above_the_fences_is_refused() {
    // The log's offsets went back (a topic created anew): messages of the new term would
    // be dropped by the persisters, so none may be acknowledged.
    let s = setup(Duration::ZERO).await;
    let c = Id(9);
    s.store.write_batch(&[], &[(c, 5000)]).await.unwrap();
    let err = s.hold(c, 1).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(err.message.contains("cannot be taken over now"), "{err:?}");
    assert!(s.sequencer.channel(c).owner.lock().await.held.is_none());
}

#[tokio::test]
async fn a_later_fence_stored_during_the_wait_means_superseded() {
    // Another node reserved after this one established, and its fence was persisted.
    let s = setup(Duration::ZERO).await;
    let c = Id(10);
    s.store.write_batch(&[], &[(c, 5000)]).await.unwrap();
    s.fencing.overtake.store(true, Ordering::SeqCst);
    let err = s.hold(c, 1).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(
        err.message.contains("taken over by another node"),
        "{err:?}"
    );
}

#[tokio::test]
async fn many_take_overs_at_once_share_a_few_persister_waits() {
    let s = Arc::new(setup(Duration::from_millis(100)).await);
    let mut tasks = Vec::new();
    for c in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.hold(Id(100 + c), 1).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let journal = s.journal();
    let waits = journal.iter().filter(|l| *l == "wait").count();
    assert!((1..=3).contains(&waits), "{waits} waits for 20 take-overs");
    // Still, each channel's wait came after its fence: the first wait after the last
    // fence covers every take-over that had not been covered before it.
    let last_fence = journal
        .iter()
        .rposition(|l| l.starts_with("fence"))
        .unwrap();
    assert!(journal[last_fence..].iter().any(|l| l == "wait"));
}

#[tokio::test]
async fn an_unfenced_take_over_appends_nothing_and_waits_for_nothing() {
    let journal: Journal = Arc::default();
    let log = Arc::new(JournaledLog {
        journal: journal.clone(),
        next: AtomicU64::new(0),
        wait: Duration::ZERO,
    });
    let store = Arc::new(SqliteStore::new(open_memory().await.unwrap()));
    store.insert_messages(&[stored(Id(5), 1)]).await.unwrap();
    let sequencer = Arc::new(Sequencer::default());
    let handover = Handover::new(
        Arc::new(SingleNode),
        Arc::new(Unfenced),
        log,
        store,
        sequencer.clone(),
    );
    let state = sequencer.channel(Id(5));
    let mut owner = state.owner.lock().await;
    owner.last_seq = Some(4);
    let term = handover.hold(&state, &mut owner, Id(5), 0).await.unwrap();
    assert_eq!(
        term,
        OwnerTerm {
            generation: 0,
            term: 0
        }
    );
    assert_eq!(owner.last_seq, Some(4), "never below what this node gave");
    drop(owner);
    assert_eq!(handover.acquire(&[Id(6)]).await.unwrap(), 0);
    assert!(journal.lock().is_empty());
}

#[tokio::test]
async fn a_take_over_loads_the_highest_stored_id_as_the_floor() {
    // The channel's earlier owner had a clock ahead: its IDs are above anything this node's
    // clock makes, and not in seq order with the ones before them.
    let s = setup(Duration::ZERO).await;
    let c = Id(11);
    let ahead = Id(1 << 60);
    let mut first = stored(c, 1);
    first.id = ahead;
    s.store
        .insert_messages(&[first, stored(c, 2)])
        .await
        .unwrap();
    let state = s.sequencer.channel(c);
    {
        let mut owner = state.owner.lock().await;
        s.handover.hold(&state, &mut owner, c, 1).await.unwrap();
        assert_eq!(owner.last_seq, Some(2));
        assert_eq!(
            owner.last_id,
            Some(ahead),
            "the highest ID, not the last seq's"
        );
        // This node's own, newer knowledge is kept when the store is behind it.
        owner.last_seq = Some(3);
        owner.last_id = Some(Id(ahead.0 + 1));
    }
    let mut owner = state.owner.lock().await;
    s.handover.hold(&state, &mut owner, c, 2).await.unwrap();
    assert_eq!(
        (owner.last_seq, owner.last_id),
        (Some(3), Some(Id(ahead.0 + 1)))
    );
}
