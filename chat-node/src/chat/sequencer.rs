//! Per-channel sequencing on the channel's owner: the next `seq`, the recent messages that
//! may not have reached the store yet (so history and resume read their writes), and the
//! idempotency keys of recent sends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use parley_protocol::{Id, Timestamp};

use crate::backend::{Page, StoredMessage};

/// Recent messages kept per channel.
const RECENT_MAX: usize = 256;
/// Idempotency keys kept in memory (older ones are found in the store).
const CLIENT_IDS_MAX: usize = 100_000;

/// The epoch of a channel state that was never loaded.
pub(crate) const UNLOADED: u64 = u64::MAX;

/// One channel's sequencing state.
#[derive(Debug)]
pub struct ChannelSeq {
    /// The last assigned seq (`None` until read from the store). Held across the durable
    /// append, so seq order is log order.
    pub last_seq: tokio::sync::Mutex<Option<u64>>,
    /// The ring epoch the state was loaded in; a state from an older epoch is reloaded
    /// (another node may have owned the channel meanwhile).
    pub epoch: AtomicU64,
    /// Mirror of `last_seq` for readers that must not wait (0 = unknown).
    hint: AtomicU64,
    recent: Mutex<VecDeque<Arc<StoredMessage>>>,
}

impl Default for ChannelSeq {
    fn default() -> Self {
        Self {
            last_seq: tokio::sync::Mutex::new(None),
            epoch: AtomicU64::new(UNLOADED),
            hint: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        }
    }
}

impl ChannelSeq {
    /// Marks the state as loaded in `epoch` (called with `last_seq` locked). The recent
    /// messages stay: they are real messages of the channel, and reads merge them with the
    /// store.
    pub fn reset(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    pub fn loaded_in(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct ClientIds {
    map: HashMap<(Id, String), Arc<StoredMessage>>,
    order: VecDeque<(Id, String)>,
}

/// Sequencing state of the channels this node owns.
#[derive(Debug, Default)]
pub struct Sequencer {
    channels: Mutex<HashMap<Id, Arc<ChannelSeq>>>,
    client_ids: Mutex<ClientIds>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sequencer {
    pub fn channel(&self, id: Id) -> Arc<ChannelSeq> {
        lock(&self.channels).entry(id).or_default().clone()
    }

    /// Records a message that was just made durable.
    pub fn remember(&self, channel: &ChannelSeq, message: Arc<StoredMessage>) {
        channel.hint.store(message.seq, Ordering::Relaxed);
        {
            let mut recent = lock(&channel.recent);
            recent.push_back(message.clone());
            while recent.len() > RECENT_MAX {
                recent.pop_front();
            }
        }
        if let Some(cmid) = &message.client_msg_id {
            let key = (message.author_id, cmid.clone());
            let mut ids = lock(&self.client_ids);
            if ids.map.insert(key.clone(), message).is_none() {
                ids.order.push_back(key);
            }
            while ids.order.len() > CLIENT_IDS_MAX {
                if let Some(old) = ids.order.pop_front() {
                    ids.map.remove(&old);
                }
            }
        }
    }

    /// A recent message of `author` with `client_msg_id`, made at or after `since`.
    pub fn by_client_id(
        &self,
        author: Id,
        client_msg_id: &str,
        since: Timestamp,
    ) -> Option<Arc<StoredMessage>> {
        lock(&self.client_ids)
            .map
            .get(&(author, client_msg_id.to_owned()))
            .filter(|m| m.created_at >= since)
            .cloned()
    }

    /// The channel's recent messages, oldest first.
    pub fn recent(&self, id: Id) -> Vec<Arc<StoredMessage>> {
        let Some(channel) = lock(&self.channels).get(&id).cloned() else {
            return Vec::new();
        };
        let recent = lock(&channel.recent);
        recent.iter().cloned().collect()
    }

    /// The last seq this node assigned in `id`, if it assigned any.
    pub fn known_last_seq(&self, id: Id) -> Option<u64> {
        let channel = lock(&self.channels).get(&id).cloned()?;
        match channel.hint.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
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
mod tests {
    use super::*;

    fn m(id: u64) -> StoredMessage {
        StoredMessage {
            id: Id(id),
            channel_id: Id(1),
            seq: id,
            author_id: Id(9),
            text: String::new(),
            client_msg_id: None,
            attachments: vec![],
            reply_to: None,
            created_at: Timestamp(0),
            moderated: false,
        }
    }

    fn ids(v: &[StoredMessage]) -> Vec<u64> {
        v.iter().map(|m| m.id.0).collect()
    }

    #[test]
    fn recent_messages_fill_what_the_store_lacks() {
        let recent: Vec<Arc<StoredMessage>> = (8..=12).map(|i| Arc::new(m(i))).collect();
        let stored: Vec<StoredMessage> = (7..=10).rev().map(m).collect(); // newest first, limit+1 = 4
        let (page, more) = merge_page(stored, &recent, Page::Latest { limit: 3 });
        assert_eq!(ids(&page), [12, 11, 10]);
        assert!(more);

        let stored: Vec<StoredMessage> = vec![m(9), m(10)];
        let (page, more) = merge_page(
            stored,
            &recent,
            Page::After {
                id: Id(8),
                limit: 10,
            },
        );
        assert_eq!(ids(&page), [9, 10, 11, 12]);
        assert!(!more);

        let (page, _) = merge_page(
            vec![],
            &recent,
            Page::Before {
                id: Id(10),
                limit: 10,
            },
        );
        assert_eq!(ids(&page), [9, 8]);
    }

    #[test]
    fn idempotency_keys_expire_by_time() {
        let seq = Sequencer::default();
        let ch = seq.channel(Id(1));
        let mut msg = m(5);
        msg.client_msg_id = Some("c1".into());
        msg.created_at = Timestamp(1000);
        seq.remember(&ch, Arc::new(msg));
        assert!(seq.by_client_id(Id(9), "c1", Timestamp(0)).is_some());
        assert!(seq.by_client_id(Id(9), "c1", Timestamp(2000)).is_none());
        assert!(seq.by_client_id(Id(8), "c1", Timestamp(0)).is_none());
        assert_eq!(seq.known_last_seq(Id(1)), Some(5));
        assert_eq!(seq.known_last_seq(Id(2)), None);
    }
}
