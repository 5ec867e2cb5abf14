//! Reading messages ([`History`]): history pages, sync, resume and cursors. The store has
//! every message the persisters wrote; the channel's owner (this node or another, asked
//! over the internal API) has the newest ones that may not be stored yet. Every read merges
//! both, so a client reads its own writes.
//!
//! ```text
//!   page(channel) ─► MessageStore::history ─┐
//!                 └► state_of(channels) ────┴► merge_page ─► Media::messages_wire
//!                      ├─ mine:   Sequencing::local_state
//!                      └─ theirs: ChannelOwners::state_on (one call per owner)
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use parley_crd::Member;
use parley_protocol::rest::{HistoryQuery, MessagePage};
use parley_protocol::ws::ChannelCursor;
use parley_protocol::{Id, Message, limits};

use super::media::Media;
use super::members::Members;
use super::owners::{ChannelOwners, Owner};
use super::sequencer::merge_page;
use super::sequencing::Sequencing;
use crate::backend::{ChannelStore, MessageStore, Page, StoredMessage};
use crate::error::ApiError;
use crate::internal::{ChannelState, StateRequest};

/// Default and largest page of `GET /v1/sync`.
const SYNC_DEFAULT: u32 = 100;
const SYNC_MAX: u32 = 1000;

/// The page a history query asks for. Errors: `bad_request` for a limit out of
/// `1..=MAX_PAGE` or both `before` and `after`.
pub(super) fn page_of(q: &HistoryQuery) -> Result<Page, ApiError> {
    let limit = q.limit.unwrap_or(limits::DEFAULT_PAGE);
    if !(1..=limits::MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={}",
            limits::MAX_PAGE
        )));
    }
    match (q.before, q.after) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give `before` or `after`, not both")),
        (Some(id), None) => Ok(Page::Before { id, limit }),
        (None, Some(id)) => Ok(Page::After { id, limit }),
        (None, None) => Ok(Page::Latest { limit }),
    }
}

/// Everything [`History::new`] needs.
#[derive(Debug)]
pub struct HistoryParts {
    pub messages: Arc<dyn MessageStore>,
    pub channels: Arc<dyn ChannelStore>,
    pub members: Arc<Members>,
    pub owners: Arc<dyn ChannelOwners>,
    pub sequencing: Arc<Sequencing>,
    pub media: Arc<Media>,
}

/// Message reads.
#[derive(Debug)]
pub struct History {
    messages: Arc<dyn MessageStore>,
    channels: Arc<dyn ChannelStore>,
    members: Arc<Members>,
    owners: Arc<dyn ChannelOwners>,
    sequencing: Arc<Sequencing>,
    media: Arc<Media>,
}

impl History {
    /// Reads over the stores and owners in `p`.
    pub fn new(p: HistoryParts) -> Self {
        Self {
            messages: p.messages,
            channels: p.channels,
            members: p.members,
            owners: p.owners,
            sequencing: p.sequencing,
            media: p.media,
        }
    }

    /// The owners' state of `channels`, asking every owner once.
    async fn state_of(
        &self,
        channels: &[Id],
        after: Option<Id>,
    ) -> Result<Vec<ChannelState>, ApiError> {
        let mut mine = Vec::new();
        let mut theirs: HashMap<String, (Member, Vec<Id>)> = HashMap::new();
        for c in channels {
            match self.owners.owner_of(*c) {
                Owner::Me => mine.push(*c),
                Owner::Other(m) => theirs
                    .entry(m.name.clone())
                    .or_insert_with(|| (m, Vec::new()))
                    .1
                    .push(*c),
            }
        }
        let mut out = if mine.is_empty() {
            Vec::new()
        } else {
            self.sequencing.local_state(&mine, after).await?
        };
        let calls = theirs.into_values().map(|(member, channels)| async move {
            self.owners
                .state_on(&member, &StateRequest { channels, after })
                .await
        });
        for r in futures_util::future::join_all(calls).await {
            out.extend(r?.channels);
        }
        Ok(out)
    }

    /// The recent messages of `channels` with id > `after` on their owners.
    async fn recent(
        &self,
        channels: &[Id],
        after: Option<Id>,
    ) -> Result<Vec<Arc<StoredMessage>>, ApiError> {
        Ok(self
            .state_of(channels, after)
            .await?
            .into_iter()
            .flat_map(|s| s.recent)
            .map(Arc::new)
            .collect())
    }

    /// A page of `channel`'s history for its member `user`.
    pub async fn page(
        &self,
        user: Id,
        channel: Id,
        q: &HistoryQuery,
    ) -> Result<MessagePage, ApiError> {
        let page = page_of(q)?;
        self.members.require(channel, user).await?;
        // The owner before the store: a message it no longer remembers was stored first.
        let recent = self.recent(&[channel], None).await?;
        let stored = self
            .messages
            .history(channel, page.with_limit(page.limit() + 1))
            .await?;
        let (messages, has_more) = merge_page(stored, &recent, page);
        Ok(MessagePage {
            messages: self.media.messages_wire(&messages).await?,
            has_more,
        })
    }

    /// Messages of `channels` with id > `after`, oldest first: at most `limit`, and whether
    /// there are more.
    pub async fn messages_after(
        &self,
        channels: &[Id],
        after: Id,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), ApiError> {
        if channels.is_empty() {
            return Ok((Vec::new(), false));
        }
        let states = self.state_of(channels, Some(after)).await?;
        self.after_states(states, after, limit).await
    }

    /// For a `hello` with `resume_after`: the cursors of `channels` (as [`History::cursors`])
    /// and their messages with id > `after` (as [`History::messages_after`]), from one
    /// question to their owners.
    pub async fn resume(
        &self,
        channels: &[Id],
        after: Id,
        limit: u32,
    ) -> Result<(Vec<ChannelCursor>, Vec<Message>, bool), ApiError> {
        let states = self.state_of(channels, Some(after)).await?;
        let cursors = cursors_of(channels, &states);
        let (messages, has_more) = self.after_states(states, after, limit).await?;
        Ok((cursors, messages, has_more))
    }

    /// The messages with id > `after` of the channels whose owners answered `states` (asked
    /// with `after`): their recent messages, and the store's of the channels whose last ID
    /// may be above `after` (a reconnect usually finds most channels quiet: no store query
    /// for them). The owners are asked before the store: a message an owner no longer
    /// remembers was stored before it was forgotten.
    async fn after_states(
        &self,
        states: Vec<ChannelState>,
        after: Id,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), ApiError> {
        let behind: Vec<Id> = states
            .iter()
            .filter(|s| s.last_id.is_none_or(|last| last > after))
            .map(|s| s.id)
            .collect();
        let stored = if behind.is_empty() {
            Vec::new()
        } else {
            self.messages
                .messages_after(&behind, after, limit + 1)
                .await?
        };
        let recent: Vec<Arc<StoredMessage>> = states
            .into_iter()
            .flat_map(|s| s.recent)
            .map(Arc::new)
            .collect();
        let (messages, has_more) = merge_page(stored, &recent, Page::After { id: after, limit });
        Ok((self.media.messages_wire(&messages).await?, has_more))
    }

    /// `GET /v1/sync`: every message in the caller's channels with id > `after`, at most
    /// `limit` (1..=1000, default 100; `bad_request` beyond).
    pub async fn sync(
        &self,
        user: Id,
        after: Option<Id>,
        limit: Option<u32>,
    ) -> Result<MessagePage, ApiError> {
        let limit = limit.unwrap_or(SYNC_DEFAULT);
        if !(1..=SYNC_MAX).contains(&limit) {
            return Err(ApiError::bad_request("limit must be 1..=1000"));
        }
        let channels: Vec<Id> = self
            .channels
            .channels_of(user)
            .await?
            .iter()
            .map(|c| c.id)
            .collect();
        let (messages, has_more) = self
            .messages_after(&channels, after.unwrap_or_default(), limit)
            .await?;
        Ok(MessagePage { messages, has_more })
    }

    /// Fails with `bad_request` unless `message` is a message of `channel`, stored or not
    /// yet stored: like history, it looks in the store, then in the recent messages of the
    /// channel's owner (here or on another node), where a message just sent may be before
    /// the persister writes it. `field` names the offending field in the answer. IDs sent
    /// as body fields that name nothing in scope are `bad_request` (a path ID naming nothing
    /// is `not_found`).
    pub async fn require_message_in(
        &self,
        channel: Id,
        message: Id,
        field: &str,
    ) -> Result<(), ApiError> {
        if self.messages.message(channel, message).await?.is_some() {
            return Ok(());
        }
        let after = message.0.checked_sub(1).map(Id);
        let recent = self.state_of(&[channel], after).await?;
        if recent
            .iter()
            .flat_map(|s| &s.recent)
            .any(|m| m.id == message && m.channel_id == channel)
        {
            return Ok(());
        }
        Err(ApiError::bad_request(format!(
            "{field} {message} is not a message of channel {channel}"
        )))
    }

    /// The last seq of each channel.
    pub async fn cursors(&self, channels: &[Id]) -> Result<Vec<ChannelCursor>, ApiError> {
        // No message is after the largest ID: the owners send no recent messages back.
        let states = self.state_of(channels, Some(Id::MAX)).await?;
        Ok(cursors_of(channels, &states))
    }
}

/// The cursor of each of `channels` from its owner's state in `states` (0 where missing).
fn cursors_of(channels: &[Id], states: &[ChannelState]) -> Vec<ChannelCursor> {
    let last: HashMap<Id, u64> = states.iter().map(|s| (s.id, s.last_seq)).collect();
    channels
        .iter()
        .map(|c| ChannelCursor {
            id: *c,
            last_seq: last.get(c).copied().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_queries() {
        let q = |before: Option<u64>, after: Option<u64>, limit: Option<u32>| HistoryQuery {
            before: before.map(Id),
            after: after.map(Id),
            limit,
        };
        assert_eq!(
            page_of(&q(None, None, None)).unwrap(),
            Page::Latest { limit: 50 }
        );
        assert_eq!(
            page_of(&q(Some(5), None, Some(10))).unwrap(),
            Page::Before {
                id: Id(5),
                limit: 10
            }
        );
        assert_eq!(
            page_of(&q(None, Some(5), Some(100))).unwrap(),
            Page::After {
                id: Id(5),
                limit: 100
            }
        );
        assert!(page_of(&q(Some(1), Some(2), None)).is_err());
        assert!(page_of(&q(None, None, Some(0))).is_err());
        assert!(page_of(&q(None, None, Some(101))).is_err());
    }
}
