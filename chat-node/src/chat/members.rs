//! Membership ([`Members`]), cached on each node: a channel's member set is read from the directory once
//! and kept for a minute. Only positive answers are trusted from the cache (a user who just
//! joined elsewhere is checked against the directory), and every membership change
//! invalidates the entry on every node through the `cluster` pub/sub topic.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_protocol::Id;

use super::events::Events;
use crate::backend::{ChannelStore, MemberStore};
use crate::error::ApiError;
use crate::internal::ClusterEvent;

const TTL: Duration = Duration::from_secs(60);
const MAX_CHANNELS: usize = 50_000;

/// A channel's members and when they were read.
type Entry = (Arc<HashSet<Id>>, Instant);

/// Member sets by channel.
#[derive(Debug, Default)]
pub struct MembershipCache {
    map: Mutex<HashMap<Id, Entry>>,
}

impl MembershipCache {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<Id, Entry>> {
        self.map.lock()
    }

    /// The cached member set of `channel`, if read less than a minute ago.
    pub fn get(&self, channel: Id) -> Option<Arc<HashSet<Id>>> {
        self.lock()
            .get(&channel)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(set, _)| set.clone())
    }

    /// Caches `members` as `channel`'s member set (a full cache is swept, then emptied).
    pub fn put(&self, channel: Id, members: Vec<Id>) -> Arc<HashSet<Id>> {
        let set: Arc<HashSet<Id>> = Arc::new(members.into_iter().collect());
        let mut map = self.lock();
        if map.len() >= MAX_CHANNELS {
            map.retain(|_, (_, at)| at.elapsed() < TTL);
            if map.len() >= MAX_CHANNELS {
                map.clear();
            }
        }
        map.insert(channel, (set.clone(), Instant::now()));
        set
    }

    /// Forgets `channel`'s member set.
    pub fn invalidate(&self, channel: Id) {
        self.lock().remove(&channel);
    }

    /// Forgets every member set (their invalidations may have been lost).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Applies an event of the `cluster` topic.
    pub fn apply(&self, payload: &[u8]) {
        match serde_json::from_slice::<ClusterEvent>(payload) {
            Ok(ClusterEvent::MembersChanged(channel)) => self.invalidate(channel),
            // For the ring, not the cache (the node's pub/sub sink pokes the cluster).
            Ok(ClusterEvent::RingChanged) => {}
            Err(e) => tracing::warn!("undecodable cluster event dropped: {e}"),
        }
    }
}

/// Who is a member of which channel, as the checks of every operation need it.
#[derive(Debug)]
pub struct Members {
    members: Arc<dyn MemberStore>,
    channels: Arc<dyn ChannelStore>,
    /// Shared with the pub/sub's cluster inbox, which applies other nodes' invalidations.
    cache: Arc<MembershipCache>,
    events: Events,
}

impl Members {
    /// Membership checks over the stores, cached in `cache`; changes are announced with
    /// `events` on the `cluster` topic.
    pub fn new(
        members: Arc<dyn MemberStore>,
        channels: Arc<dyn ChannelStore>,
        cache: Arc<MembershipCache>,
        events: Events,
    ) -> Self {
        Self {
            members,
            channels,
            cache,
            events,
        }
    }

    /// The member IDs of `channel` (cached).
    pub async fn member_set(&self, channel: Id) -> Result<Arc<HashSet<Id>>, ApiError> {
        if let Some(set) = self.cache.get(channel) {
            return Ok(set);
        }
        let ids = self.members.member_ids(channel).await?;
        Ok(self.cache.put(channel, ids))
    }

    /// Fails with 403 unless `user` is a member of `channel` (404 if it does not exist).
    pub async fn require(&self, channel: Id, user: Id) -> Result<(), ApiError> {
        if self
            .cache
            .get(channel)
            .is_some_and(|set| set.contains(&user))
        {
            return Ok(());
        }
        // Not in the cache: the directory decides (the user may have joined a moment ago).
        let ids = self.members.member_ids(channel).await?;
        let set = self.cache.put(channel, ids);
        if set.contains(&user) {
            return Ok(());
        }
        if self.channels.channel(channel).await?.is_none() {
            return Err(ApiError::not_found("no such channel"));
        }
        Err(ApiError::forbidden("you are not a member of this channel"))
    }

    /// Drops `channel`'s member set here and on every other node.
    pub async fn changed(&self, channel: Id) {
        self.cache.invalidate(channel);
        if let Err(e) = self
            .events
            .cluster(&ClusterEvent::MembersChanged(channel))
            .await
        {
            tracing::warn!(%channel, "membership invalidation not published: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_invalidated_by_cluster_events() {
        let cache = MembershipCache::default();
        cache.put(Id(1), vec![Id(10), Id(11)]);
        assert!(cache.get(Id(1)).unwrap().contains(&Id(11)));
        let event = serde_json::to_vec(&ClusterEvent::MembersChanged(Id(1))).unwrap();
        cache.apply(&event);
        assert!(cache.get(Id(1)).is_none());
        cache.apply(b"garbage");
    }
}
