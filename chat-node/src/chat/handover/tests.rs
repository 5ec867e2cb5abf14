//! The take-over's steps and their order, with a log and a fencing that write what is done
//! to one journal (no services; the store is SQLite in memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parley_protocol::{ErrorCode, Id};

use super::*;
use crate::backend::sqlite::{SqliteStore, open_temp};
use crate::backend::{BackendError, LogConsumer, StoredMessage};
use crate::chat::fencing::{MemoryFencing, Unfenced};
use crate::chat::owners::SingleNode;

type Journal = Arc<parking_lot::Mutex<Vec<String>>>;

/// A log that numbers appended records from 100, writes what is appended and waited for to
/// the journal, and whose persisters take `wait` to catch up. With `store`, the wait also
/// persists what was appended as the persisters do (`persister::fence`, then the store's
/// write); without, the store is left alone (a persister of a version that keeps no terms).
/// A wait first appends the fence of each reserve in `overtaken` (another node's take-over,
/// its fence landing before the wait's end).
#[derive(Debug)]
struct JournaledLog {
    journal: Journal,
    next: AtomicU64,
    wait: Duration,
    appended: parking_lot::Mutex<Vec<(u64, LogEntry)>>,
    store: Option<Arc<SqliteStore>>,
    overtaken: Overtaken,
}

/// (channel, generation) of the reserves another node made.
type Overtaken = Arc<parking_lot::Mutex<Vec<(Id, u64)>>>;

impl JournaledLog {
    fn new(journal: Journal, wait: Duration, store: Option<Arc<SqliteStore>>) -> Self {
        Self {
            journal,
            next: AtomicU64::new(0),
            wait,
            appended: parking_lot::Mutex::default(),
            store,
            overtaken: Overtaken::default(),
        }
    }

    /// Another node's fence of `channel`, of reserve `generation`, appended now.
    async fn fence(&self, channel: Id, generation: u64) -> u64 {
        let payload = LogEntry::encode_fence(channel, generation).unwrap();
        self.append(&[LogRecord {
            key: channel,
            payload: payload.into(),
        }])
        .await
        .unwrap()[0]
    }

    async fn persist(&self) {
        let Some(store) = &self.store else { return };
        let entries = std::mem::take(&mut *self.appended.lock());
        crate::persister::write(store.as_ref(), &entries)
            .await
            .unwrap();
    }
}

#[async_trait]
impl Log for JournaledLog {
    async fn append(&self, records: &[LogRecord]) -> Result<Vec<u64>, BackendError> {
        let mut offsets = Vec::new();
        for r in records {
            let offset = self.next.fetch_add(1, Ordering::SeqCst) + 100;
            let entry = LogEntry::decode(&r.payload).unwrap();
            let what = match &entry {
                LogEntry::Fence {
                    channel,
                    generation,
                } => format!("fence {channel} gen {generation} at {offset}"),
                LogEntry::Message { message, term } => {
                    format!(
                        "message {} seq {} term {}/{}",
                        message.channel_id, message.seq, term.generation, term.term
                    )
                }
            };
            self.journal.lock().push(what);
            self.appended.lock().push((offset, entry));
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
        let overtaken = std::mem::take(&mut *self.overtaken.lock());
        for (channel, generation) in overtaken {
            self.fence(channel, generation).await;
        }
        self.persist().await;
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
    /// (channel, generation) of each reserve `overtake` made.
    overtaken: Overtaken,
}

#[async_trait]
impl Fencing for JournaledFencing {
    fn fences(&self) -> bool {
        true
    }

    async fn reserve(&self, channel: Id, floor: u64) -> Result<u64, ApiError> {
        let generation = self.terms.reserve(channel, floor).await?;
        self.journal
            .lock()
            .push(format!("reserve {channel} above {floor} -> {generation}"));
        if self.race.load(Ordering::SeqCst) {
            self.terms.reserve(channel, 0).await?;
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
            let generation = self.terms.reserve(channel, 0).await?;
            self.overtaken.lock().push((channel, generation));
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
    log: Arc<JournaledLog>,
    store: Arc<SqliteStore>,
    sequencer: Arc<Sequencer>,
}

/// A take-over setup whose persisters take `wait` and keep terms.
async fn setup(wait: Duration) -> Setup {
    setup_with(wait, true).await
}

/// As [`setup`]; `persisting`: whether the log's wait persists (else the persisters are of
/// a version that keeps no terms).
async fn setup_with(wait: Duration, persisting: bool) -> Setup {
    let journal: Journal = Arc::default();
    let store = Arc::new(SqliteStore::new(open_temp().await.unwrap()));
    let log = Arc::new(JournaledLog::new(
        journal.clone(),
        wait,
        persisting.then(|| store.clone()),
    ));
    let fencing = Arc::new(JournaledFencing {
        journal: journal.clone(),
        terms: MemoryFencing::default(),
        race: false.into(),
        overtake: false.into(),
        overtaken: log.overtaken.clone(),
    });
    let sequencer = Arc::new(Sequencer::default());
    let handover = Handover::new(
        Arc::new(SingleNode),
        fencing.clone(),
        log.clone(),
        store.clone(),
        sequencer.clone(),
    );
    Setup {
        handover,
        journal,
        fencing,
        log,
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
            "reserve 7 above 0 -> 1",
            "fence 7 gen 1 at 100",
            "establish 7 1/101: ok",
            "wait"
        ]
    );
    assert_eq!(
        s.store.channel_terms(&[c]).await.unwrap(),
        [(c, term)],
        "the persisters put the fence in force"
    );
    assert_eq!(s.sequencer.channel(c).loaded_in(), 3);

    // Held: the same epoch does nothing more.
    assert_eq!(s.hold(c, 3).await.unwrap().0, term);
    assert!(s.journal().is_empty());
    // A new ring epoch takes the channel over again, above the stored generation.
    let (again, _) = s.hold(c, 4).await.unwrap();
    assert_eq!(
        again,
        OwnerTerm {
            generation: 2,
            term: 102
        }
    );
    let journal = s.journal();
    assert_eq!(journal.len(), 4);
    assert_eq!(journal[0], "reserve 7 above 1 -> 2");
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
            "reserve 8 above 0 -> 1",
            "fence 8 gen 1 at 100",
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
async fn a_stored_term_without_generation_above_the_fences_is_refused() {
    // Persisters of a version that keeps no generations, and the log's offsets went back (a
    // topic created anew): they would drop messages of the new term, so none may be
    // acknowledged.
    let s = setup_with(Duration::ZERO, false).await;
    let c = Id(9);
    s.store
        .write_batch(
            &[],
            &[(
                c,
                OwnerTerm {
                    generation: 0,
                    term: 5000,
                },
            )],
        )
        .await
        .unwrap();
    let err = s.hold(c, 1).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(err.message.contains("cannot be taken over now"), "{err:?}");
    assert!(s.sequencer.channel(c).owner.lock().await.held.is_none());
}

#[tokio::test]
async fn a_topic_created_anew_is_taken_over_by_generation() {
    // The stored term came from a topic whose offsets were far above the new one's: the
    // new fence's generation, above the stored one, puts it in force all the same.
    let s = setup(Duration::ZERO).await;
    let c = Id(9);
    let old = OwnerTerm {
        generation: 60,
        term: 5000,
    };
    s.store.write_batch(&[], &[(c, old)]).await.unwrap();
    let (term, _) = s.hold(c, 1).await.unwrap();
    assert_eq!(
        term,
        OwnerTerm {
            generation: 61,
            term: 101
        },
        "reserved above the stored generation"
    );
    assert_eq!(s.store.channel_terms(&[c]).await.unwrap(), [(c, term)]);
}

#[tokio::test]
async fn a_later_fence_stored_during_the_wait_means_superseded() {
    // Another node reserved after this one established, and its fence was persisted.
    let s = setup(Duration::ZERO).await;
    let c = Id(10);
    s.fencing.overtake.store(true, Ordering::SeqCst);
    let err = s.hold(c, 1).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(
        err.message.contains("taken over by another node"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_fence_passed_over_for_a_repeated_generation_means_superseded() {
    // The fencing's state was lost (Redis restarted empty) while a fence of generation 1
    // stood in the log, not yet persisted: this node's reserve gets generation 1 again,
    // and the persisters pass its fence over. The take-over must fail, and the next one
    // reserves above the stored generation.
    let s = setup(Duration::ZERO).await;
    let c = Id(12);
    s.log.fence(c, 1).await;
    s.journal();
    let err = s.hold(c, 1).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(
        err.message.contains("taken over by another node"),
        "{err:?}"
    );
    assert_eq!(
        s.store.channel_terms(&[c]).await.unwrap(),
        [(
            c,
            OwnerTerm {
                generation: 1,
                term: 101
            }
        )],
        "the earlier fence is the one in force"
    );
    let (term, _) = s.hold(c, 1).await.unwrap();
    assert_eq!(
        term,
        OwnerTerm {
            generation: 2,
            term: 103
        }
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
    let store = Arc::new(SqliteStore::new(open_temp().await.unwrap()));
    let log = Arc::new(JournaledLog::new(
        journal.clone(),
        Duration::ZERO,
        Some(store.clone()),
    ));
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
