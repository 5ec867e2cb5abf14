//! Per-channel sequencing on the channel's owner: the next `seq`, the recent messages that
//! may not have reached the store yet (so history and resume read their writes), and the
//! idempotency keys of recent sends.
//!
//! Memory is bounded by bytes ([`SequencerMemory`]), whatever clients do:
//!
//! - **Recent messages** (and the per-channel state itself) count against
//!   `PARLEY_RECENT_MESSAGES_BYTES`. Over it, the least recently used channels lose their
//!   recent messages first, and a channel with none left (and nobody using it) is dropped
//!   altogether; its `last_seq` is read from the store again when it is next used.
//! - **Idempotency keys** are IDs only, `(author, client_msg_id) -> (channel, message id)`,
//!   and count against `PARLEY_IDEMPOTENCY_KEYS_BYTES`; the oldest go first. A send whose key
//!   is not in memory is looked up in the store (`by_client_msg_id`), unless memory is known
//!   to hold every key of the window ([`Sequencer::keys_complete_since`]: the embedded node,
//!   which makes every message itself; an eviction narrows it).
//!
//! **Only what the store already has is evicted.** The persister writes a message some time
//! after it was appended to the log (its batching, a slow or failing store, or in
//! distributed mode another process that may be down); no bound on that lag can be proven,
//! so time alone never makes a message evictable. Each remembered message gets a stamp (a
//! node-local counter); [`Sequencer::persisted_through`] is told, after the log reported that
//! the persisters committed everything appended before a given moment
//! ([`crate::backend::Log::wait_consumed`]), that every message stamped before that moment is
//! in the store, and only those may leave memory. A message not yet stored therefore stays
//! readable (history, resume, `reply_to`/read-marker checks) and its key stays found, so
//! neither read-your-writes nor idempotency depends on the store's lag. When the messages
//! not yet stored alone fill the budget (the persisters are far behind or down), new sends
//! are refused with `unavailable` ([`Sequencer::admit`]) instead of growing memory; retries
//! of sends already made are still answered.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parley_protocol::{Id, Timestamp};

use super::fencing::OwnerTerm;
use crate::backend::{HighWater, Page, StoredMessage};
use crate::config::SequencerMemory;
use crate::error::ApiError;

/// Recent messages kept per channel at most (of those the store has; the ones it may lack
/// are all kept).
const RECENT_MAX: usize = 256;
/// Bytes counted for one channel's state besides its messages.
const CHANNEL_BYTES: usize = 256;
/// Bytes counted for one idempotency key besides its `client_msg_id`: the map entry, the
/// eviction queue entry and their allocations.
const CLIENT_ID_BYTES: usize = 128;
/// Eviction frees down to this share (in 1/8) of a budget, so it does not run on every
/// message once memory is full.
const EVICT_TO_EIGHTHS: usize = 7;

/// The epoch of a channel state that was never loaded.
pub(crate) const UNLOADED: u64 = u64::MAX;

/// One recent message with its stamp and the bytes it is counted for.
#[derive(Debug)]
struct Recent {
    stamp: u64,
    bytes: usize,
    message: Arc<StoredMessage>,
}

/// What the owner of a channel keeps under the channel's lock.
#[derive(Debug, Default)]
pub struct OwnerState {
    /// The last assigned seq (`None` until read from the store).
    pub last_seq: Option<u64>,
    /// At least the highest message ID of the channel (`None` until read from the store):
    /// the floor the next message's ID goes above, so per channel ID order is seq order
    /// whatever the clocks of the channel's owners (snowflake.rs).
    pub last_id: Option<Id>,
    /// The owner term this node took the channel over with; `None` until it takes it over
    /// (again after a ring change, a send that was fenced or failed, or an eviction of the
    /// state).
    pub held: Option<HeldTerm>,
}

impl OwnerState {
    /// Takes in the store's high water of the channel (`None`: it has no messages): the last
    /// seq and last ID become the larger of the store's and the state's (this node's own may
    /// be newer than the store's), never going back. Returns them.
    pub fn load(&mut self, stored: Option<HighWater>) -> HighWater {
        let stored = stored.unwrap_or(HighWater { seq: 0, id: Id(0) });
        let loaded = HighWater {
            seq: stored.seq.max(self.last_seq.unwrap_or(0)),
            id: stored.id.max(self.last_id.unwrap_or(Id(0))),
        };
        self.last_seq = Some(loaded.seq);
        self.last_id = Some(loaded.id);
        loaded
    }
}

/// An owner term as a channel's state holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldTerm {
    pub term: OwnerTerm,
    /// The ring epoch of the take-over: in another epoch the channel is taken over again.
    pub epoch: u64,
    /// When the take-over finished (a term is renewed before the fencing's record of it can
    /// expire).
    pub since: std::time::Instant,
}

/// One channel's sequencing state.
#[derive(Debug)]
pub struct ChannelSeq {
    /// The last assigned seq and the owner term. Held across the durable append and its
    /// confirmation, so seq order is log order.
    pub owner: tokio::sync::Mutex<OwnerState>,
    /// The ring epoch the state was loaded in; a state from an older epoch is reloaded
    /// (another node may have owned the channel meanwhile).
    pub epoch: AtomicU64,
    /// Mirror of `last_seq` for readers that must not wait (0 = unknown).
    hint: AtomicU64,
    /// When the channel was last used (the sequencer's tick), for LRU eviction.
    used: AtomicU64,
    /// The stamp of the newest message remembered here (0: none). The state may be dropped
    /// only once the store has that message: `last_seq` is then the store's.
    newest: AtomicU64,
    recent: Mutex<VecDeque<Recent>>,
}

impl Default for ChannelSeq {
    fn default() -> Self {
        Self {
            owner: tokio::sync::Mutex::new(OwnerState::default()),
            epoch: AtomicU64::new(UNLOADED),
            hint: AtomicU64::new(0),
            used: AtomicU64::new(0),
            newest: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        }
    }
}

impl ChannelSeq {
    /// Marks the state as loaded in `epoch` (called with `owner` locked). The recent
    /// messages stay: they are real messages of the channel, and reads merge them with the
    /// store.
    pub fn reset(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// The epoch the state was loaded in ([`UNLOADED`] if never).
    pub fn loaded_in(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }
}

/// Where the message a `client_msg_id` was used for is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdHit {
    pub channel: Id,
    pub message: Id,
}

#[derive(Debug)]
struct ClientIdEntry {
    hit: ClientIdHit,
    created_at: Timestamp,
    stamp: u64,
}

#[derive(Debug, Default)]
struct ClientIds {
    map: HashMap<(Id, Arc<str>), ClientIdEntry>,
    /// Keys oldest first, with their stamps and bytes.
    order: VecDeque<((Id, Arc<str>), u64, usize)>,
    bytes: usize,
}

/// Sequencing state of the channels this node owns.
#[derive(Debug)]
pub struct Sequencer {
    channels: Mutex<HashMap<Id, Arc<ChannelSeq>>>,
    client_ids: Mutex<ClientIds>,
    recent_budget: usize,
    ids_budget: usize,
    /// Bytes of recent messages and channel states.
    recent_bytes: AtomicUsize,
    /// The last stamp given to a remembered message.
    stamp: AtomicU64,
    /// Every message stamped at or below this is in the store.
    persisted: AtomicU64,
    /// The LRU clock.
    tick: AtomicU64,
    /// Whether a confirmation of what is stored is under way.
    confirming: AtomicBool,
    /// Unix ms from which memory holds every idempotency key there is (none evicted since,
    /// and no other process made any): a key missing from memory and made at or after it
    /// does not exist. `i64::MAX` (never) unless [`Sequencer::keys_complete_since`] said so.
    keys_complete_since: AtomicI64,
}

impl Default for Sequencer {
    fn default() -> Self {
        Self::new(&SequencerMemory {
            recent_messages_bytes: 64 * 1024 * 1024,
            idempotency_keys_bytes: 16 * 1024 * 1024,
        })
    }
}

/// The bytes a message is counted for: its allocations and the bookkeeping around it.
fn message_bytes(m: &StoredMessage) -> usize {
    std::mem::size_of::<StoredMessage>()
        + std::mem::size_of::<Recent>()
        + 16 // the Arc's counts
        + m.text.len()
        + m.client_msg_id.as_ref().map_or(0, String::len)
        + m.attachments
            .iter()
            .map(|a| {
                std::mem::size_of_val(a) + a.key.len() + a.filename.len() + a.content_type.len()
            })
            .sum::<usize>()
}

impl Sequencer {
    /// An empty sequencer bounded by `memory`.
    pub fn new(memory: &SequencerMemory) -> Self {
        let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            channels: Mutex::default(),
            client_ids: Mutex::default(),
            recent_budget: clamp(memory.recent_messages_bytes),
            ids_budget: clamp(memory.idempotency_keys_bytes),
            recent_bytes: AtomicUsize::new(0),
            stamp: AtomicU64::new(0),
            persisted: AtomicU64::new(0),
            tick: AtomicU64::new(0),
            confirming: AtomicBool::new(false),
            keys_complete_since: AtomicI64::new(i64::MAX),
        }
    }

    /// The state of channel `id`, made (and counted) when there is none.
    pub fn channel(&self, id: Id) -> Arc<ChannelSeq> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        let (state, made) = {
            let mut channels = self.channels.lock();
            match channels.get(&id) {
                Some(c) => (c.clone(), false),
                None => {
                    let c = Arc::new(ChannelSeq::default());
                    channels.insert(id, c.clone());
                    (c, true)
                }
            }
        };
        state.used.store(tick, Ordering::Relaxed);
        if made {
            self.recent_bytes
                .fetch_add(CHANNEL_BYTES, Ordering::Relaxed);
            self.evict_recent(0);
        }
        state
    }

    /// Records a message that was just made durable.
    pub fn remember(&self, channel: &ChannelSeq, message: Arc<StoredMessage>) {
        let stamp = self.stamp.fetch_add(1, Ordering::SeqCst) + 1;
        channel.hint.store(message.seq, Ordering::Relaxed);
        channel.newest.store(stamp, Ordering::SeqCst);
        let bytes = message_bytes(&message);
        if let Some(cmid) = &message.client_msg_id {
            self.remember_client_id(&message, cmid, stamp);
        }
        {
            let persisted = self.persisted.load(Ordering::SeqCst);
            let mut recent = channel.recent.lock();
            recent.push_back(Recent {
                stamp,
                bytes,
                message,
            });
            self.recent_bytes.fetch_add(bytes, Ordering::Relaxed);
            while recent.len() > RECENT_MAX && recent.front().is_some_and(|r| r.stamp <= persisted)
            {
                if let Some(old) = recent.pop_front() {
                    self.recent_bytes.fetch_sub(old.bytes, Ordering::Relaxed);
                }
            }
        }
        self.evict_recent(0);
    }

    fn remember_client_id(&self, message: &StoredMessage, cmid: &str, stamp: u64) {
        let key: (Id, Arc<str>) = (message.author_id, Arc::from(cmid));
        let bytes = CLIENT_ID_BYTES + cmid.len();
        let entry = ClientIdEntry {
            hit: ClientIdHit {
                channel: message.channel_id,
                message: message.id,
            },
            created_at: message.created_at,
            stamp,
        };
        let mut ids = self.client_ids.lock();
        if ids.map.insert(key.clone(), entry).is_none() {
            ids.order.push_back((key, stamp, bytes));
            ids.bytes += bytes;
        }
        self.evict_client_ids(&mut ids);
    }

    /// Drops the oldest keys the store has while over the budget.
    fn evict_client_ids(&self, ids: &mut ClientIds) {
        let persisted = self.persisted.load(Ordering::SeqCst);
        if ids.bytes <= self.ids_budget {
            return;
        }
        let target = self.ids_budget / 8 * EVICT_TO_EIGHTHS;
        while ids.bytes > target {
            match ids.order.front() {
                Some((_, stamp, _)) if *stamp <= persisted => {}
                // The oldest key's message may not be stored yet: it stays, and so do the
                // newer ones (they are bounded by the recent messages' budget).
                _ => break,
            }
            if let Some((key, stamp, bytes)) = ids.order.pop_front() {
                ids.bytes -= bytes;
                // A key used again later has a newer entry: keep that one.
                if ids.map.get(&key).is_some_and(|e| e.stamp == stamp)
                    && let Some(gone) = ids.map.remove(&key)
                {
                    self.key_only_in_store(gone.created_at);
                }
            }
        }
    }

    /// Evicts stored recent messages, least recently used channels first, and the states of
    /// channels left with nothing the store lacks, while `incoming` more bytes would not fit
    /// in the budget.
    fn evict_recent(&self, incoming: usize) {
        if self.recent_bytes.load(Ordering::Relaxed) + incoming <= self.recent_budget {
            return;
        }
        let target = (self.recent_budget / 8 * EVICT_TO_EIGHTHS).saturating_sub(incoming);
        let persisted = self.persisted.load(Ordering::SeqCst);
        let mut channels = self.channels.lock();
        let mut by_use: Vec<(u64, Id)> = channels
            .iter()
            .map(|(id, c)| (c.used.load(Ordering::Relaxed), *id))
            .collect();
        by_use.sort_unstable();
        for (_, id) in by_use {
            if self.recent_bytes.load(Ordering::Relaxed) <= target {
                break;
            }
            let Some(state) = channels.get(&id) else {
                continue;
            };
            let empty = {
                let mut recent = state.recent.lock();
                while recent.front().is_some_and(|r| r.stamp <= persisted) {
                    if let Some(old) = recent.pop_front() {
                        self.recent_bytes.fetch_sub(old.bytes, Ordering::Relaxed);
                    }
                }
                recent.is_empty()
            };
            // Nobody else holds it (a send or a read would), and the store has all it wrote:
            // its last seq is the store's, read again on next use.
            if empty
                && Arc::strong_count(state) == 1
                && state.newest.load(Ordering::SeqCst) <= persisted
            {
                channels.remove(&id);
                self.recent_bytes
                    .fetch_sub(CHANNEL_BYTES, Ordering::Relaxed);
            }
        }
    }

    /// `unavailable` when a new message of `bytes` would take the recent messages over their
    /// budget even after evicting everything the store has (the persisters are behind).
    pub fn admit(&self, message_bytes: usize) -> Result<(), ApiError> {
        self.evict_recent(message_bytes);
        if self.recent_bytes.load(Ordering::Relaxed) + message_bytes > self.recent_budget {
            return Err(ApiError::unavailable(
                "messages wait to be stored: this node holds as many as its memory allows; \
                 try again shortly",
            ));
        }
        Ok(())
    }

    /// The bytes a message with `text` and `client_msg_id` will be counted for (attachments
    /// aside), for [`Sequencer::admit`].
    pub fn bytes_of(text: &str, client_msg_id: Option<&str>) -> usize {
        std::mem::size_of::<StoredMessage>()
            + std::mem::size_of::<Recent>()
            + 16
            + text.len()
            + client_msg_id.map_or(0, str::len)
    }

    /// The last stamp given to a message; pass it to [`Sequencer::persisted_through`] once
    /// the log reports that everything appended before this call is stored.
    pub fn stamped(&self) -> u64 {
        self.stamp.load(Ordering::SeqCst)
    }

    /// Learns that every message stamped at or below `stamp` is in the store, and evicts
    /// what that allows.
    pub fn persisted_through(&self, stamp: u64) {
        self.persisted.fetch_max(stamp, Ordering::SeqCst);
        self.evict_recent(0);
        self.evict_client_ids(&mut self.client_ids.lock());
    }

    /// Whether messages the store may lack take up so much of a budget that the store
    /// should be asked what it has: more than 3/4 of either.
    pub fn wants_confirmation(&self) -> bool {
        let unconfirmed = self.stamp.load(Ordering::SeqCst) > self.persisted.load(Ordering::SeqCst);
        unconfirmed
            && (self.recent_bytes.load(Ordering::Relaxed) > self.recent_budget / 4 * 3
                || self.client_ids.lock().bytes > self.ids_budget / 4 * 3)
    }

    /// Claims the one confirmation that may run at a time; `false` when one is running.
    pub fn start_confirmation(&self) -> bool {
        !self.confirming.swap(true, Ordering::SeqCst)
    }

    /// Releases the claim of [`Sequencer::start_confirmation`].
    pub fn end_confirmation(&self) {
        self.confirming.store(false, Ordering::SeqCst);
    }

    /// Tells the sequencer that this process makes every message of its store and that the
    /// store has no message made at or after `since`: the embedded node, from its start. From
    /// then on [`Sequencer::key_exists_only_in_memory`] answers for keys made at or after
    /// `since`, as long as none of them is evicted or left out of memory
    /// ([`Sequencer::key_only_in_store`]).
    pub fn keys_complete_since(&self, since: Timestamp) {
        self.keys_complete_since
            .store(since.unix_millis(), Ordering::SeqCst);
    }

    /// A key made at `created_at` may be in the store but not in memory (evicted, or its
    /// message appended but not remembered after a failure): memory no longer answers for
    /// keys made up to then.
    pub fn key_only_in_store(&self, created_at: Timestamp) {
        self.keys_complete_since
            .fetch_max(created_at.unix_millis().saturating_add(1), Ordering::SeqCst);
    }

    /// Whether memory alone decides if a key made at or after `since` exists: every such key
    /// is in memory (so a miss means there is none, and the store need not be asked).
    pub fn key_exists_only_in_memory(&self, since: Timestamp) -> bool {
        since.unix_millis() >= self.keys_complete_since.load(Ordering::SeqCst)
    }

    /// Where a recent message of `author` with `client_msg_id`, made at or after `since`, is.
    /// `None` when memory has no such key: the store may (keys leave memory only once their
    /// messages are stored).
    pub fn by_client_id(
        &self,
        author: Id,
        client_msg_id: &str,
        since: Timestamp,
    ) -> Option<ClientIdHit> {
        self.client_ids
            .lock()
            .map
            .get(&(author, Arc::from(client_msg_id)))
            .filter(|e| e.created_at >= since)
            .map(|e| e.hit)
    }

    /// The recent message `id` of `channel`, if memory still holds it.
    pub fn recent_message(&self, channel: Id, id: Id) -> Option<Arc<StoredMessage>> {
        let state = self.channels.lock().get(&channel).cloned()?;
        let recent = state.recent.lock();
        recent
            .iter()
            .rev()
            .find(|r| r.message.id == id)
            .map(|r| r.message.clone())
    }

    /// The channel's recent messages, oldest first.
    pub fn recent(&self, id: Id) -> Vec<Arc<StoredMessage>> {
        let Some(channel) = self.channels.lock().get(&id).cloned() else {
            return Vec::new();
        };
        let recent = channel.recent.lock();
        recent.iter().map(|r| r.message.clone()).collect()
    }

    /// The last seq this node assigned in `id`, if it assigned any.
    #[cfg(test)]
    fn known_last_seq(&self, id: Id) -> Option<u64> {
        let channel = self.channels.lock().get(&id).cloned()?;
        match channel.hint.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Bytes counted for recent messages and channel states.
    pub fn recent_bytes(&self) -> usize {
        self.recent_bytes.load(Ordering::Relaxed)
    }

    /// Bytes counted for idempotency keys.
    pub fn client_id_bytes(&self) -> usize {
        self.client_ids.lock().bytes
    }

    /// Channel states held.
    pub fn channels_held(&self) -> usize {
        self.channels.lock().len()
    }
}

/// Merges a store page (fetched with one more than the limit) with recent messages that
/// may not be stored yet. Returns the page in its order and whether there is more.
pub(super) fn merge_page(
    stored: Vec<StoredMessage>,
    recent: &[Arc<StoredMessage>],
    page: Page,
) -> (Vec<StoredMessage>, bool) {
    let limit = page.limit() as usize;
    let mut all = stored;
    let known: std::collections::HashSet<Id> = all.iter().map(|m| m.id).collect();
    all.extend(
        recent
            .iter()
            .filter(|m| page.admits(m.id) && !known.contains(&m.id))
            .map(|m| (**m).clone()),
    );
    if page.descending() {
        all.sort_by_key(|m| std::cmp::Reverse(m.id));
    } else {
        all.sort_by_key(|m| m.id);
    }
    let has_more = all.len() > limit;
    all.truncate(limit);
    (all, has_more)
}

#[cfg(test)]
mod tests;
