//! The persister: moves messages from the durable log into the store in batches.
//!
//! At-least-once into an idempotent store: a batch is inserted (duplicates skipped), and
//! only then is the log position committed. A failing store is retried with back-off; the
//! batch is kept, so nothing is lost or doubled.
//!
//! Fencing (docs/reliability.md): the log holds messages stamped with their owner's term
//! (`{generation, term}`) and fence records, each of which starts a new owner's term (its
//! generation, its offset + 1) if its generation is above the one in force. [`fence`] walks
//! a batch in log order and drops a message whose owner term is not the one in force for
//! its channel (the store's, changed by the fences seen): an owner fenced out wrote it, and
//! it was never acknowledged. The kept messages and the new terms in force are written
//! together ([`MessageStore::write_batch`], one transaction per shard).
//!
//! ```text
//!   poll (+ linger) ─► decode (LogEntry) ─► stored terms of the batch's fenced channels
//!        ─► fence(): keep / drop, terms raised ─► write_batch (retried) ─► commit offsets
//! ```
//!
//! Replaying a batch (a crash between the store's commit and the offset commit) keeps
//! only what the first pass kept: a term stored by the first pass was written in the same
//! transaction as every kept message of that channel, and terms in force only rise, so a
//! message the replay keeps was in force at its place in the first pass too, and one it
//! drops is either stored already or was dropped then.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::Id;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    BackendError, Log, LogConsumer, LogEntry, MessageStore, OwnerTerm, PolledRecord, StoredMessage,
};

/// Batching of the persister.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most messages per insert.
    pub max_messages: usize,
    /// How long a batch may fill, from the poll that brought its first record (the
    /// persister's linger: `PARLEY_PERSISTER_LINGER_MS` in distributed mode; 20 ms by
    /// default and on the embedded node).
    pub max_wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_messages: 500,
            max_wait: Duration::from_millis(20),
        }
    }
}

/// The consumer group persisters share.
pub const GROUP: &str = "persisters";

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until `shutdown`; `idle` is told each time the log had nothing left.
pub async fn run(
    log: Arc<dyn Log>,
    store: Arc<dyn MessageStore>,
    batching: Batching,
    shutdown: CancellationToken,
) -> Result<(), BackendError> {
    let mut consumer = log.consumer(GROUP).await?;
    while !shutdown.is_cancelled() {
        tokio::select! {
            r = step(consumer.as_mut(), store.as_ref(), batching, &shutdown) => { r?; }
            () = shutdown.cancelled() => break,
        }
    }
    Ok(())
}

/// Persists everything the log holds now, then returns how many records it handled
/// (start-up catch-up).
pub async fn drain(
    log: &dyn Log,
    store: &dyn MessageStore,
    batching: Batching,
) -> Result<usize, BackendError> {
    let mut consumer = log.consumer(GROUP).await?;
    let never = CancellationToken::new();
    let mut total = 0;
    loop {
        let n = step(consumer.as_mut(), store, batching, &never).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// One batch: poll, filter and write (retrying), commit. Returns how many records it
/// handled.
async fn step(
    consumer: &mut dyn LogConsumer,
    store: &dyn MessageStore,
    batching: Batching,
    shutdown: &CancellationToken,
) -> Result<usize, BackendError> {
    let polled_at = tokio::time::Instant::now();
    let mut records = consumer
        .poll(batching.max_messages, batching.max_wait)
        .await?;
    if records.is_empty() {
        return Ok(0);
    }
    // Linger: a consumer may answer with the first record (SQLite's does); the batch fills
    // until `max_wait` after the poll began, so a steady trickle of sends costs one store
    // write and one offset commit per window instead of one per send.
    if records.len() < batching.max_messages {
        tokio::select! {
            () = tokio::time::sleep_until(polled_at + batching.max_wait) => {}
            () = shutdown.cancelled() => {}
        }
        let more = consumer
            .poll(batching.max_messages - records.len(), Duration::ZERO)
            .await?;
        records.extend(more);
    }
    let entries = decode(&records);
    let mut backoff = Duration::from_millis(100);
    loop {
        match write(store, &entries).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(
                    records = records.len(),
                    "persisting failed, retrying in {backoff:?}: {e}"
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Err(e),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = consumer.commit().await {
        tracing::warn!("committing the log position failed, retrying in {backoff:?}: {e}");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return Err(e),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Ok(records.len())
}

/// The entries of `records` with their offsets, in log order; a record no version of the
/// node wrote is logged and skipped (all that can be done with it).
fn decode(records: &[PolledRecord]) -> Vec<(u64, LogEntry)> {
    records
        .iter()
        .filter_map(|r| match LogEntry::decode(&r.payload) {
            Ok(entry) => Some((r.offset, entry)),
            Err(e) => {
                tracing::error!(key = %r.key, offset = r.offset, "undecodable log record skipped: {e}");
                None
            }
        })
        .collect()
}

/// The channels of `entries` whose stored term matters: those with a fence or a message of a
/// term above 0. (None on an embedded node: its batches cost no extra read.)
fn fenced_channels(entries: &[(u64, LogEntry)]) -> Vec<Id> {
    let mut channels: Vec<Id> = entries
        .iter()
        .filter_map(|(_, e)| match e {
            LogEntry::Fence { channel, .. } => Some(*channel),
            LogEntry::Message { message, term } if term.term > 0 => Some(message.channel_id),
            LogEntry::Message { .. } => None,
        })
        .collect();
    channels.sort_unstable();
    channels.dedup();
    channels
}

/// Persists `entries` ((offset, entry) in log order) as one batch: reads the stored terms of
/// their fenced channels, filters them ([`fence`]) and writes what is kept with the new
/// terms. Errors: the store's.
pub(crate) async fn write(
    store: &dyn MessageStore,
    entries: &[(u64, LogEntry)],
) -> Result<(), BackendError> {
    let fenced = fenced_channels(entries);
    let stored: HashMap<Id, OwnerTerm> = if fenced.is_empty() {
        HashMap::new()
    } else {
        store.channel_terms(&fenced).await?.into_iter().collect()
    };
    let filtered = fence(entries, &stored);
    if let Some(first) = filtered.dropped.first() {
        tracing::warn!(
            dropped = filtered.dropped.len(),
            channel = %first.message.channel_id,
            seq = first.message.seq,
            id = %first.message.id,
            generation = first.term.generation,
            term = first.term.term,
            in_force_generation = first.in_force.generation,
            in_force = first.in_force.term,
            "messages of fenced-out owners dropped (never acknowledged)"
        );
    }
    for (offset, channel, generation, in_force) in &filtered.passed_over {
        tracing::info!(
            offset,
            %channel,
            generation,
            in_force_generation = in_force.generation,
            in_force = in_force.term,
            "a fence of a generation not above the one in force passed over (a take-over \
             that lost the race to a later reserve)"
        );
    }
    store.write_batch(&filtered.kept, &filtered.terms).await?;
    Ok(())
}

/// What [`fence`] makes of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filtered {
    /// The messages to store, in log order.
    pub kept: Vec<StoredMessage>,
    /// (channel, term in force) for each channel whose term in force the batch's fences
    /// changed from the stored one, by channel.
    pub terms: Vec<(Id, OwnerTerm)>,
    /// The messages dropped: written by an owner fenced out.
    pub dropped: Vec<Dropped>,
    /// The fences that put nothing in force, their generation not above the one in force
    /// (but for the fence in force itself, met again in a replayed batch):
    /// (offset, channel, generation, term in force).
    pub passed_over: Vec<(u64, Id, u64, OwnerTerm)>,
}

/// A message [`fence`] dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub message: StoredMessage,
    /// The owner term the message was written in.
    pub term: OwnerTerm,
    /// The channel's term in force where the message stands in the log.
    pub in_force: OwnerTerm,
}

/// The fencing filter, pure: walks `entries` ((offset, entry) in log order) keeping per
/// channel the owner term in force, starting from `stored` (the store's; absent = `{0, 0}`):
///
/// - a fence of generation `g` at offset `o` puts `{g, o + 1}` in force if `g` is above the
///   generation in force, and is passed over otherwise (a contender whose reserve lost the
///   race to a later one appended it late: its establish failed and it wrote nothing; or
///   its generation repeats the one in force, Redis having lost the channel's hash: its
///   take-over fails at its check of the stored term, so it acknowledges nothing);
/// - a fence of generation 0 (a version whose fences carried none) raises the term in force
///   to `o + 1`, as before generations;
/// - a message is kept if its term is 0 (a node that fences nothing, or an older version,
///   as before fencing), or if its generation is not below the one in force and its term
///   not below the term in force. Any other is dropped. (A message's generation is the one
///   in force where it stands unless its fence was put in force by a persister that kept
///   no generations (generation 0 then, an older version during a rollout): then its term
///   decides, as before generations.)
///
/// Terms in force only rise in [`OwnerTerm`]'s order.
pub fn fence(entries: &[(u64, LogEntry)], stored: &HashMap<Id, OwnerTerm>) -> Filtered {
    let mut in_force: BTreeMap<Id, OwnerTerm> = BTreeMap::new();
    let mut out = Filtered::default();
    let stored_of = |c: &Id| stored.get(c).copied().unwrap_or_default();
    for (offset, entry) in entries {
        match entry {
            LogEntry::Fence {
                channel,
                generation,
            } => {
                let term = offset.saturating_add(1);
                let current = in_force
                    .entry(*channel)
                    .or_insert_with(|| stored_of(channel));
                if *generation == 0 {
                    current.term = current.term.max(term);
                } else if *generation > current.generation {
                    *current = OwnerTerm {
                        generation: *generation,
                        term,
                    };
                } else if *generation != current.generation || term != current.term {
                    // (Not the fence in force itself, which a replayed batch holds.)
                    out.passed_over
                        .push((*offset, *channel, *generation, *current));
                }
            }
            LogEntry::Message { message, term } => {
                let channel = message.channel_id;
                let current = *in_force
                    .entry(channel)
                    .or_insert_with(|| stored_of(&channel));
                let kept = term.term == 0
                    || ((term.generation == 0 || term.generation >= current.generation)
                        && term.term >= current.term);
                if kept {
                    out.kept.push(message.clone());
                } else {
                    out.dropped.push(Dropped {
                        message: message.clone(),
                        term: *term,
                        in_force: current,
                    });
                }
            }
        }
    }
    out.terms = in_force
        .into_iter()
        .filter(|(c, t)| *t > stored_of(c))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sqlite::{SqliteLog, SqliteStore, open_temp};
    use crate::backend::{LogRecord, Page};
    use parley_protocol::Timestamp;

    fn msg(seq: u64) -> StoredMessage {
        StoredMessage {
            id: Id(1000 + seq),
            channel_id: Id(7),
            seq,
            author_id: Id(1),
            text: format!("m{seq}"),
            client_msg_id: None,
            attachments: vec![],
            reply_to: None,
            created_at: Timestamp(0),
            moderated: false,
        }
    }

    /// The stored messages of channel 7, oldest first.
    async fn stored_of_7(store: &SqliteStore) -> Vec<StoredMessage> {
        store
            .history(
                Id(7),
                Page::After {
                    id: Id(0),
                    limit: 100,
                },
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn drains_the_log_into_the_store_once() {
        let pool = open_temp().await.unwrap();
        let log = SqliteLog::new(pool.clone(), "messages");
        let store = SqliteStore::new(pool);
        let records: Vec<LogRecord> = (1..=5)
            .map(|i| LogRecord {
                key: Id(7),
                payload: serde_json::to_vec(&msg(i)).unwrap().into(),
            })
            .collect();
        log.append(&records).await.unwrap();
        // A duplicate record (a producer retry) is stored once.
        log.append(&records[4..]).await.unwrap();
        let n = drain(
            &log,
            &store,
            Batching {
                max_messages: 2,
                max_wait: Duration::from_millis(5),
            },
        )
        .await
        .unwrap();
        assert_eq!(n, 6);
        let stored = stored_of_7(&store).await;
        assert_eq!(
            stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            drain(&log, &store, Batching::default()).await.unwrap(),
            0,
            "committed: nothing again"
        );
    }

    /// Owner term `{generation, term}`.
    fn t(generation: u64, term: u64) -> OwnerTerm {
        OwnerTerm { generation, term }
    }

    /// Message `seq` of channel 7 written in owner term `term`, as an entry at `offset`.
    fn m(offset: u64, seq: u64, term: OwnerTerm) -> (u64, LogEntry) {
        (
            offset,
            LogEntry::Message {
                message: StoredMessage {
                    id: Id(1000 + offset),
                    ..msg(seq)
                },
                term,
            },
        )
    }

    /// A fence of channel 7 of reserve `generation` at `offset` (its term is `offset + 1`).
    fn f(offset: u64, generation: u64) -> (u64, LogEntry) {
        (
            offset,
            LogEntry::Fence {
                channel: Id(7),
                generation,
            },
        )
    }

    fn seqs(v: &[StoredMessage]) -> Vec<(u64, u64)> {
        v.iter().map(|m| (m.id.0 - 1000, m.seq)).collect()
    }

    #[test]
    fn a_message_before_a_fence_is_kept_and_one_of_the_old_term_after_it_dropped() {
        // Owner A ({1, 4}: a fence at offset 3) writes seqs 1, 2; owner B (generation 2)
        // fences at offset 12 and writes seq 3; A, paused, wakes and writes seq 3 too.
        let (a, b) = (t(1, 4), t(2, 13));
        let entries = [m(10, 1, a), m(11, 2, a), f(12, 2), m(13, 3, b), m(14, 3, a)];
        let out = fence(&entries, &HashMap::from([(Id(7), a)]));
        assert_eq!(seqs(&out.kept), [(10, 1), (11, 2), (13, 3)]);
        assert_eq!(out.terms, [(Id(7), b)]);
        assert_eq!(out.dropped.len(), 1);
        assert_eq!(
            (
                out.dropped[0].message.seq,
                out.dropped[0].term,
                out.dropped[0].in_force
            ),
            (3, a, b)
        );
        assert!(out.passed_over.is_empty());
    }

    #[test]
    fn a_losing_contenders_fence_after_the_winners_deposes_nobody() {
        // The race the Redis-partition scenario found: B reserves generation 10, then A
        // reserves 11, fences at offset 225, establishes and sends; B's fence, its append
        // held back, lands at offset 229 (B's establish then fails: 11 came after 10). A's
        // acknowledged messages after it must be kept.
        let (old, a) = (t(9, 205), t(11, 226));
        let entries = [
            m(224, 217, old),
            f(225, 11),
            m(226, 218, a),
            m(227, 218, old),
            m(228, 219, a),
            f(229, 10),
            m(230, 220, a),
        ];
        let out = fence(&entries, &HashMap::from([(Id(7), old)]));
        assert_eq!(
            seqs(&out.kept),
            [(224, 217), (226, 218), (228, 219), (230, 220)]
        );
        assert_eq!(out.terms, [(Id(7), a)]);
        assert_eq!(out.dropped.len(), 1, "only the deposed owner's late write");
        assert_eq!(out.passed_over, [(229, Id(7), 10, a)]);
        // The same with B's fence in an earlier batch than A's messages: the store's term
        // decides.
        let out = fence(&[f(229, 10), m(230, 220, a)], &HashMap::from([(Id(7), a)]));
        assert_eq!(seqs(&out.kept), [(230, 220)]);
        assert!(out.terms.is_empty());
        // And B's fence before A's: A's puts A in force all the same.
        let out = fence(
            &[f(224, 10), f(225, 11), m(226, 218, a)],
            &HashMap::from([(Id(7), old)]),
        );
        assert_eq!(seqs(&out.kept), [(226, 218)]);
        assert_eq!(out.terms, [(Id(7), a)]);
    }

    #[test]
    fn only_the_owner_term_in_force_is_kept_whatever_the_offsets() {
        // The log's offsets went back (a topic created anew): the new owner's fence is
        // of a higher generation and goes in force at its small offset; a zombie of the
        // old topic writing its old, larger term is dropped.
        let (zombie, new) = (t(60, 5000), t(61, 4));
        let out = fence(
            &[f(3, 61), m(4, 1, new), m(5, 1, zombie)],
            &HashMap::from([(Id(7), zombie)]),
        );
        assert_eq!(seqs(&out.kept), [(4, 1)]);
        assert_eq!(out.terms, [(Id(7), new)]);
        assert_eq!(out.dropped[0].term, zombie);
    }

    #[test]
    fn the_stored_term_fences_a_batch_without_a_fence() {
        let entries = [m(20, 5, t(1, 4)), m(21, 5, t(2, 13))];
        let out = fence(&entries, &HashMap::from([(Id(7), t(2, 13))]));
        assert_eq!(seqs(&out.kept), [(21, 5)]);
        assert!(out.terms.is_empty(), "nothing raised above the store's");
        // A fence of a generation below the stored one puts nothing in force either.
        let out = fence(
            &[f(2, 1), m(3, 6, t(1, 3))],
            &HashMap::from([(Id(7), t(2, 13))]),
        );
        assert!(out.kept.is_empty() && out.terms.is_empty());
        assert_eq!(out.passed_over, [(2, Id(7), 1, t(2, 13))]);
    }

    #[test]
    fn old_records_without_a_term_are_kept_fence_or_not() {
        let entries = [m(1, 1, t(0, 0)), m(2, 2, t(0, 0))];
        let out = fence(&entries, &HashMap::new());
        assert_eq!(seqs(&out.kept), [(1, 1), (2, 2)]);
        assert!(out.terms.is_empty() && out.dropped.is_empty());
        // Term 0 is a writer that fences nothing (the embedded node, an older version
        // during a rollout): its acknowledged messages are never dropped.
        let out = fence(
            &[f(5, 3), m(6, 3, t(0, 0))],
            &HashMap::from([(Id(7), t(2, 2))]),
        );
        assert_eq!(seqs(&out.kept), [(6, 3)]);
        assert_eq!(out.terms, [(Id(7), t(3, 6))]);
    }

    #[test]
    fn records_without_a_generation_are_fenced_by_their_terms_as_before() {
        // A version whose records carried no generation: its fence raises the term in
        // force; its messages are kept unless below it.
        let entries = [
            m(1, 1, t(0, 1)),
            f(2, 0),
            m(3, 2, t(0, 3)),
            m(4, 2, t(0, 1)),
        ];
        let out = fence(&entries, &HashMap::new());
        assert_eq!(seqs(&out.kept), [(1, 1), (3, 2)]);
        assert_eq!(out.terms, [(Id(7), t(0, 3))]);
        // Such a fence after a generation's fence deposes that owner too (its reserve came
        // after), and a later generation's fence goes in force after it.
        let out = fence(
            &[f(10, 5), m(11, 1, t(5, 11)), f(12, 0), m(13, 2, t(5, 11))],
            &HashMap::new(),
        );
        assert_eq!(seqs(&out.kept), [(11, 1)]);
        assert_eq!(out.terms, [(Id(7), t(5, 13))]);
        let out = fence(
            &[f(14, 6), m(15, 2, t(6, 15))],
            &HashMap::from([(Id(7), t(5, 13))]),
        );
        assert_eq!(seqs(&out.kept), [(15, 2)]);
        // A persister of such a version put a new owner's fence in force, keeping no
        // generation: that owner's messages are kept by their term, its predecessor's not.
        let out = fence(
            &[m(16, 3, t(6, 15)), m(17, 3, t(5, 11))],
            &HashMap::from([(Id(7), t(0, 15))]),
        );
        assert_eq!(seqs(&out.kept), [(16, 3)]);
    }

    #[test]
    fn channels_are_fenced_apart() {
        let other = |offset: u64, term: OwnerTerm| {
            let (o, e) = m(offset, 1, term);
            let LogEntry::Message { mut message, term } = e else {
                unreachable!()
            };
            message.channel_id = Id(8);
            (o, LogEntry::Message { message, term })
        };
        let entries = [f(1, 4), other(2, t(1, 1)), m(3, 1, t(4, 2))];
        let out = fence(&entries, &HashMap::new());
        assert_eq!(
            out.kept.len(),
            2,
            "a fence of channel 7 leaves channel 8 alone"
        );
        assert_eq!(out.terms, [(Id(7), t(4, 2))]);
    }

    #[tokio::test]
    async fn a_replayed_batch_keeps_what_the_first_pass_kept_and_stores_nothing_new() {
        // A crash between the store's commit and the offset commit: the batch comes again,
        // now with the raised term stored.
        let store = SqliteStore::new(open_temp().await.unwrap());
        let (a, b) = (t(1, 4), t(2, 12));
        let entries = [
            m(10, 1, a),
            f(11, 2),
            m(12, 2, b),
            m(13, 2, a),
            f(14, 1),
            m(15, 3, b),
        ];
        let first = fence(&entries, &HashMap::new());
        store.write_batch(&first.kept, &first.terms).await.unwrap();
        let stored_terms: HashMap<Id, OwnerTerm> = store
            .channel_terms(&[Id(7)])
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(stored_terms, HashMap::from([(Id(7), b)]));
        let replay = fence(&entries, &stored_terms);
        assert_eq!(
            replay.passed_over,
            [(14, Id(7), 1, b)],
            "the fence in force met again is not reported"
        );
        assert!(
            replay.kept.iter().all(|k| first.kept.contains(k)),
            "the replay keeps nothing the first pass dropped"
        );
        assert_eq!(
            store
                .write_batch(&replay.kept, &replay.terms)
                .await
                .unwrap(),
            0,
            "nothing new"
        );
        let all = stored_of_7(&store).await;
        assert_eq!(seqs(&all), [(10, 1), (12, 2), (15, 3)]);
    }

    #[tokio::test]
    async fn the_persister_drops_a_fenced_owners_records_from_the_log() {
        let pool = open_temp().await.unwrap();
        let log = SqliteLog::new(pool.clone(), "messages");
        let store = SqliteStore::new(pool);
        let record = |payload: Vec<u8>| LogRecord {
            key: Id(7),
            payload: payload.into(),
        };
        let fence_of = |log: &SqliteLog, generation: u64| {
            let log = log.clone();
            async move {
                let offsets = log
                    .append(&[record(LogEntry::encode_fence(Id(7), generation).unwrap())])
                    .await
                    .unwrap();
                t(generation, offsets[0] + 1)
            }
        };
        let message = |seq: u64, term: OwnerTerm| {
            let m = StoredMessage {
                id: Id(2000 + seq * 100 + term.term),
                text: format!("{seq} in term {}", term.term),
                ..msg(seq)
            };
            record(LogEntry::encode_message(&m, term).unwrap())
        };
        let a = fence_of(&log, 1).await;
        log.append(&[message(1, a), message(2, a)]).await.unwrap();
        let b = fence_of(&log, 3).await;
        // B continues at 3; A's late write of 3 comes after B's fence, and so does the
        // fence of a take-over of generation 2 that lost the race to B's.
        log.append(&[message(3, b), message(3, a)]).await.unwrap();
        fence_of(&log, 2).await;
        log.append(&[message(4, b)]).await.unwrap();
        let n = drain(&log, &store, Batching::default()).await.unwrap();
        assert_eq!(n, 8);
        let stored = stored_of_7(&store).await;
        let texts: Vec<&str> = stored.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                format!("1 in term {}", a.term),
                format!("2 in term {}", a.term),
                format!("3 in term {}", b.term),
                format!("4 in term {}", b.term)
            ]
        );
        assert_eq!(store.channel_terms(&[Id(7)]).await.unwrap(), [(Id(7), b)]);
    }
}
