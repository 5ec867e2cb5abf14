//! Sending, history, sync, read markers and typing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parley_protocol::rest::{HistoryQuery, MessagePage};
use parley_protocol::ws::{ChannelCursor, ReadEvent, TypingEvent};
use parley_protocol::{Attachment, ErrorCode, Id, Message, Timestamp, limits};

use super::owners::Owner;
use super::sequencer::{ChannelSeq, Sequencer, merge_page};
use super::{Chat, DOWNLOAD_URL_TTL, ev};
use crate::backend::{AttachmentRecord, LogRecord, Page, StoredMessage, Topic};
use crate::error::ApiError;
use crate::hub::Header;
use crate::internal::{ChannelState, Hop, Prepared, StateRequest};
use crate::moderation::Verdict;

/// Idempotency window of `client_msg_id`.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
const CLIENT_MSG_ID_MAX: usize = 128;
/// How long the sequencer waits to learn that the persisters stored what it remembered.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a new owner waits for the persisters to store what earlier owners wrote.
const HANDOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A send, from REST or WebSocket.
#[derive(Debug, Clone, Default)]
pub struct SendInput {
    pub text: String,
    pub client_msg_id: Option<String>,
    pub attachments: Vec<Id>,
    pub reply_to: Option<Id>,
}

/// Checks a message text: 1..=max Unicode scalar values after trimming, and not blank (only
/// White_Space and default-ignorable code points such as U+200B: `bad_request`).
pub(super) fn clean_text(text: &str, max_chars: usize) -> Result<&str, ApiError> {
    let text = text.trim();
    if crate::text::is_blank(text) {
        return Err(ApiError::bad_request(
            "the text is empty (only spaces or invisible characters)",
        ));
    }
    let n = text.chars().count();
    if n > max_chars {
        return Err(ApiError::too_large(format!(
            "the text has {n} characters; the limit is {max_chars}"
        )));
    }
    Ok(text)
}

/// The page a history query asks for.
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

impl Chat {
    /// The wire form of a stored message, with fresh download URLs.
    pub async fn to_wire(&self, m: &StoredMessage) -> Result<Message, ApiError> {
        let mut attachments = Vec::with_capacity(m.attachments.len());
        for a in &m.attachments {
            attachments.push(self.attachment_wire(a).await?);
        }
        Ok(Message {
            id: m.id,
            channel_id: m.channel_id,
            seq: m.seq,
            author_id: m.author_id,
            text: m.text.clone(),
            client_msg_id: m.client_msg_id.clone(),
            attachments,
            reply_to: m.reply_to,
            created_at: m.created_at,
            moderated: m.moderated,
        })
    }

    pub async fn attachment_wire(&self, a: &AttachmentRecord) -> Result<Attachment, ApiError> {
        Ok(Attachment {
            id: a.id,
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            size: a.size,
            url: self.blobs.presign_get(&a.key, DOWNLOAD_URL_TTL).await?,
        })
    }

    async fn wire_all(&self, messages: &[StoredMessage]) -> Result<Vec<Message>, ApiError> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(self.to_wire(m).await?);
        }
        Ok(out)
    }

    fn check_send_rate(&self, author: Id) -> Result<(), ApiError> {
        let allowed = self
            .send_limiter
            .lock()
            .allow(author, self.now().unix_millis());
        if allowed {
            Ok(())
        } else {
            let l = &self.config.limits;
            Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "slow down: at most {} messages per second (bursts of {})",
                    l.send_rate, l.send_burst
                ),
            ))
        }
    }

    async fn resolve_attachments(
        &self,
        author: Id,
        ids: &[Id],
    ) -> Result<Vec<AttachmentRecord>, ApiError> {
        let max = self.config.limits.max_attachments as usize;
        if ids.len() > max {
            return Err(ApiError::bad_request(format!(
                "at most {max} attachments per message"
            )));
        }
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return Err(ApiError::bad_request("an attachment is listed twice"));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.stores.media.attachments(ids).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(a) = found.iter().find(|a| a.id == *id && a.owner_id == author) else {
                return Err(ApiError::bad_request(format!(
                    "attachment {id} does not exist or is not yours"
                )));
            };
            match self.blobs.stat(&a.key).await? {
                None => {
                    return Err(ApiError::bad_request(format!(
                        "attachment {id} has not been uploaded yet"
                    )));
                }
                Some(meta) if meta.size != a.size || meta.content_type != a.content_type => {
                    return Err(ApiError::bad_request(format!(
                        "attachment {id} was uploaded as {} bytes of {}, not the declared {} bytes of {}",
                        meta.size, meta.content_type, a.size, a.content_type
                    )));
                }
                Some(_) => out.push(a.clone()),
            }
        }
        Ok(out)
    }

    /// Sends a message: validated and moderated here, then sequenced (deduplicated, given
    /// its ID and seq, made durable and published) by the channel's owner.
    pub async fn send(
        self: &Arc<Self>,
        author: Id,
        channel: Id,
        input: SendInput,
    ) -> Result<Message, ApiError> {
        let started = Instant::now();
        self.check_send_rate(author)?;
        if let Some(c) = &input.client_msg_id
            && (c.is_empty() || c.len() > CLIENT_MSG_ID_MAX)
        {
            return Err(ApiError::bad_request(format!(
                "client_msg_id is 1 to {CLIENT_MSG_ID_MAX} bytes"
            )));
        }
        let text = clean_text(&input.text, self.config.limits.max_text_chars as usize)?;
        self.require_member(channel, author).await?;
        let (text, moderated) = match self.moderator.check(text) {
            Verdict::Clean => (text.to_owned(), false),
            Verdict::Masked(masked) => (masked, true),
            Verdict::Rejected => {
                return Err(ApiError::new(
                    ErrorCode::ContentRejected,
                    "the message contains words this chat does not allow",
                ));
            }
        };
        if let Some(target) = input.reply_to {
            self.require_message_in(channel, target, "reply_to").await?;
        }
        let attachments = self.resolve_attachments(author, &input.attachments).await?;
        let prepared = Prepared {
            author,
            channel,
            text,
            moderated,
            client_msg_id: input.client_msg_id,
            attachments,
            reply_to: input.reply_to,
        };
        let message = self.sequence_anywhere(prepared).await?;
        self.metrics
            .send_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(message)
    }

    /// Sequences `p` on the channel's owner, here or forwarded. When the owner changed
    /// while it was tried (a node draining, a ring change), it is tried once more on the
    /// new owner: the refusal came before any append.
    async fn sequence_anywhere(self: &Arc<Self>, p: Prepared) -> Result<Message, ApiError> {
        let first = self.owners.owner_of(p.channel);
        let result = self.sequence_on(first.clone(), &p).await;
        match result {
            // Only a send with a client_msg_id is tried again: `unavailable` may come after
            // the first owner appended (a connection reset while reading its answer, a
            // delivery that timed out yet landed), and the new owner can then find it by
            // (author, client_msg_id) instead of storing it twice. Without one, the client
            // decides.
            Err(e) if e.code == ErrorCode::Unavailable && p.client_msg_id.is_some() => {
                self.owners.refresh().await;
                let now = self.owners.owner_of(p.channel);
                if now.name() == first.name() {
                    return Err(e);
                }
                tracing::debug!(channel = %p.channel, "the owner changed during a send: trying the new one");
                self.sequence_on(now, &p).await
            }
            other => other,
        }
    }

    async fn sequence_on(
        self: &Arc<Self>,
        owner: Owner,
        p: &Prepared,
    ) -> Result<Message, ApiError> {
        match owner {
            Owner::Me => self.sequence(p.clone()).await,
            Owner::Other(member) => self.owners.forward(&member, p, Hop::First).await,
        }
    }

    /// A send forwarded by another node, which takes this node for the owner. When this
    /// node's view disagrees, it reads the leases again; if the channel is still another
    /// node's (this node is draining, or the sender's view is behind), the send goes on to
    /// that owner once ([`Hop::Again`] marks such a second forward, which is never forwarded
    /// again).
    pub async fn sequence_forwarded(
        self: &Arc<Self>,
        p: Prepared,
        hop: Hop,
    ) -> Result<Message, ApiError> {
        if let Owner::Other(_) = self.owners.owner_of(p.channel) {
            self.owners.refresh().await;
        }
        match self.owners.owner_of(p.channel) {
            Owner::Other(member) if hop == Hop::First => {
                self.owners.forward(&member, &p, Hop::Again).await
            }
            _ => self.sequence(p).await,
        }
    }

    /// Makes sure this node may sequence `channels` in the current epoch: the persisters
    /// have stored what earlier owners wrote, and each state is loaded from the store.
    async fn acquire(&self, channels: &[Id]) -> Result<u64, ApiError> {
        let epoch = self.owners.claim(channels)?;
        if channels
            .iter()
            .all(|c| self.sequencer.channel(*c).loaded_in() == epoch)
        {
            return Ok(epoch);
        }
        let mut caught_up = self.caught_up.lock().await;
        if *caught_up < epoch {
            self.log
                .wait_consumed(crate::persister::GROUP, HANDOVER_TIMEOUT)
                .await?;
            *caught_up = epoch;
        }
        Ok(epoch)
    }

    /// The last seq of `channel`, loading it when the state is from another epoch. Called
    /// with the channel's `last_seq` locked.
    async fn current_seq(
        &self,
        state: &ChannelSeq,
        last_seq: &mut Option<u64>,
        channel: Id,
        epoch: u64,
    ) -> Result<u64, ApiError> {
        if state.loaded_in() != epoch || last_seq.is_none() {
            let stored = self
                .stores
                .messages
                .last_seqs(&[channel])
                .await?
                .first()
                .map_or(0, |(_, s)| *s);
            let was = state.loaded_in();
            state.reset(epoch);
            // The store holds what earlier owners wrote (the hand-over waited for the
            // persisters); this node's own last seq may be newer than the store (a send
            // that finished after the wait). Never go back: take the larger.
            let known = last_seq.unwrap_or(0);
            *last_seq = Some(stored.max(known));
            tracing::debug!(%channel, epoch, was, stored, known, "channel sequencing state loaded");
        }
        Ok(last_seq.unwrap_or(0))
    }

    /// Sequences a prepared send on the channel's owner. It runs as a task of its own: a
    /// caller that goes away (a client or a forwarding node disconnecting) must not cancel it
    /// between the durable append and recording the seq, or the next send would reuse it.
    pub async fn sequence(self: &Arc<Self>, p: Prepared) -> Result<Message, ApiError> {
        let this = self.clone();
        let result = tokio::spawn(async move { this.sequence_now(p).await })
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("sequencing failed: {e}")))?;
        if self.sequencer.wants_confirmation() && self.sequencer.start_confirmation() {
            let this = self.clone();
            tokio::spawn(async move {
                this.confirm_persisted().await;
                this.sequencer.end_confirmation();
            });
        }
        result
    }

    /// Asks the log whether the persisters have stored everything appended so far and, if
    /// they have (within [`CONFIRM_TIMEOUT`]), lets the sequencer evict every message it
    /// remembered before the question. Returns whether they had.
    pub async fn confirm_persisted(&self) -> bool {
        // Every message stamped up to here was appended before the question below.
        let upto = self.sequencer.stamped();
        match self
            .log
            .wait_consumed(crate::persister::GROUP, CONFIRM_TIMEOUT)
            .await
        {
            Ok(()) => {
                self.sequencer.persisted_through(upto);
                true
            }
            Err(e) => {
                tracing::debug!("recent messages stay in memory: {e}");
                false
            }
        }
    }

    async fn sequence_now(&self, p: Prepared) -> Result<Message, ApiError> {
        let channel = p.channel;
        // Held to the end: a node giving its channels up waits for this append.
        let _owner_work = self.owners.owner_work().await;
        let epoch = self.acquire(&[channel]).await?;
        let seq_state = self.sequencer.channel(channel);
        let mut last_seq = seq_state.last_seq.lock().await;
        let current = self
            .current_seq(&seq_state, &mut last_seq, channel, epoch)
            .await?;
        let since = Timestamp(self.now().unix_millis() - IDEMPOTENCY_WINDOW_MS);
        if let Some(cmid) = &p.client_msg_id {
            // Memory first; a key or message no longer there was evicted only once the store
            // had its message (sequencer.rs), so the store finds it.
            if let Some(m) = self
                .sequencer
                .by_client_id(p.author, cmid, since)
                .and_then(|hit| self.sequencer.recent_message(hit.channel, hit.message))
            {
                return self.to_wire(&m).await;
            }
            if let Some(m) = self
                .stores
                .messages
                .by_client_msg_id(p.author, cmid, since)
                .await?
            {
                return self.to_wire(&m).await;
            }
        }
        // Messages the store may lack stay in memory until it has them: refuse to take more
        // than the budget holds.
        self.sequencer
            .admit(Sequencer::bytes_of(&p.text, p.client_msg_id.as_deref()))?;
        let stored = StoredMessage {
            id: self.new_id().await?,
            channel_id: channel,
            seq: current + 1,
            author_id: p.author,
            text: p.text,
            client_msg_id: p.client_msg_id,
            attachments: p.attachments,
            reply_to: p.reply_to,
            created_at: self.now(),
            moderated: p.moderated,
        };
        let payload = serde_json::to_vec(&stored)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        // Durable first: the sender's ok and every delivery come after this.
        self.log
            .append(&[LogRecord {
                key: channel,
                payload: Bytes::from(payload),
            }])
            .await?;
        *last_seq = Some(stored.seq);
        let stored = Arc::new(stored);
        self.sequencer.remember(&seq_state, stored.clone());
        let message = self.to_wire(&stored).await?;
        let header = Header {
            m: Some((channel, message.id)),
            ..Default::default()
        };
        // Published under the channel's lock, so events leave in seq order. A failed publish
        // loses no message: it is durable, and clients catch up with resume/history.
        self.publish_best_effort(Topic::Channel(channel), &header, ev::MESSAGE, &message)
            .await;
        drop(last_seq);
        self.metrics.messages_in.inc();
        if let Some(notifier) = &self.notifier {
            notifier.message_sent(&stored).await;
        }
        Ok(message)
    }

    /// This owner's state of `channels`: last seq and recent messages (id > `after`).
    pub async fn local_state(
        &self,
        channels: &[Id],
        after: Option<Id>,
    ) -> Result<Vec<ChannelState>, ApiError> {
        let epoch = self.acquire(channels).await?;
        let mut out = Vec::with_capacity(channels.len());
        let mut unloaded = Vec::new();
        for c in channels {
            let state = self.sequencer.channel(*c);
            let last = state.last_seq.lock().await;
            if state.loaded_in() != epoch || last.is_none() {
                unloaded.push(*c);
            }
        }
        let stored: std::collections::HashMap<Id, u64> = if unloaded.is_empty() {
            Default::default()
        } else {
            self.stores
                .messages
                .last_seqs(&unloaded)
                .await?
                .into_iter()
                .collect()
        };
        for c in channels {
            let state = self.sequencer.channel(*c);
            let mut last = state.last_seq.lock().await;
            if state.loaded_in() != epoch || last.is_none() {
                state.reset(epoch);
                *last = Some(stored.get(c).copied().unwrap_or(0).max(last.unwrap_or(0)));
            }
            let recent = self
                .sequencer
                .recent(*c)
                .into_iter()
                .filter(|m| after.is_none_or(|a| m.id > a))
                .map(|m| (*m).clone())
                .collect();
            out.push(ChannelState {
                id: *c,
                last_seq: last.unwrap_or(0),
                recent,
            });
        }
        Ok(out)
    }

    /// The owners' state of `channels`, asking every owner once.
    async fn state_of(
        &self,
        channels: &[Id],
        after: Option<Id>,
    ) -> Result<Vec<ChannelState>, ApiError> {
        let mut mine = Vec::new();
        let mut theirs: std::collections::HashMap<String, (parley_crd::Member, Vec<Id>)> =
            Default::default();
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
            self.local_state(&mine, after).await?
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

    pub async fn history(
        &self,
        user: Id,
        channel: Id,
        q: &HistoryQuery,
    ) -> Result<MessagePage, ApiError> {
        let page = page_of(q)?;
        self.require_member(channel, user).await?;
        let stored = self
            .stores
            .messages
            .history(channel, page.with_limit(page.limit() + 1))
            .await?;
        let recent: Vec<Arc<StoredMessage>> = self
            .state_of(&[channel], None)
            .await?
            .into_iter()
            .flat_map(|s| s.recent)
            .map(Arc::new)
            .collect();
        let (messages, has_more) = merge_page(stored, &recent, page);
        Ok(MessagePage {
            messages: self.wire_all(&messages).await?,
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
        let stored = self
            .stores
            .messages
            .messages_after(channels, after, limit + 1)
            .await?;
        let recent: Vec<Arc<StoredMessage>> = self
            .state_of(channels, Some(after))
            .await?
            .into_iter()
            .flat_map(|s| s.recent)
            .map(Arc::new)
            .collect();
        let (messages, has_more) = merge_page(stored, &recent, Page::After { id: after, limit });
        Ok((self.wire_all(&messages).await?, has_more))
    }

    /// `GET /v1/sync`: every message in the caller's channels with id > `after`.
    pub async fn sync(
        &self,
        user: Id,
        after: Option<Id>,
        limit: Option<u32>,
    ) -> Result<MessagePage, ApiError> {
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::bad_request("limit must be 1..=1000"));
        }
        let channels: Vec<Id> = self.channels_of(user).await?.iter().map(|c| c.id).collect();
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
    pub(crate) async fn require_message_in(
        &self,
        channel: Id,
        message: Id,
        field: &str,
    ) -> Result<(), ApiError> {
        if self
            .stores
            .messages
            .message(channel, message)
            .await?
            .is_some()
        {
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
        Ok(channels
            .iter()
            .map(|c| ChannelCursor {
                id: *c,
                last_seq: states.iter().find(|s| s.id == *c).map_or(0, |s| s.last_seq),
            })
            .collect())
    }

    /// Moves `user`'s read marker of `channel` forward to `message`, which must be a message
    /// of `channel` ([`Chat::require_message_in`]): a marker at another channel's message, at
    /// no message, or beyond the newest one would park it for good.
    pub async fn mark_read(&self, user: Id, channel: Id, message: Id) -> Result<(), ApiError> {
        self.require_member(channel, user).await?;
        self.require_message_in(channel, message, "message_id")
            .await?;
        if self
            .stores
            .read_markers
            .mark_read(user, channel, message)
            .await?
        {
            let header = Header {
                x: Some(user),
                ..Default::default()
            };
            let event = ReadEvent {
                channel_id: channel,
                user_id: user,
                message_id: message,
            };
            self.publish_best_effort(Topic::Channel(channel), &header, ev::READ, &event)
                .await;
        }
        Ok(())
    }

    pub async fn typing(&self, user: Id, channel: Id) -> Result<(), ApiError> {
        self.require_member(channel, user).await?;
        let header = Header {
            x: Some(user),
            ..Default::default()
        };
        self.publish_best_effort(
            Topic::Channel(channel),
            &header,
            ev::TYPING,
            &TypingEvent {
                channel_id: channel,
                user_id: user,
            },
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_limits_count_scalar_values_after_trimming() {
        assert_eq!(clean_text("  hi  ", 10).unwrap(), "hi");
        assert_eq!(
            clean_text("   ", 10).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(clean_text(&"é".repeat(10), 10).unwrap().chars().count(), 10);
        assert_eq!(
            clean_text(&"é".repeat(11), 10).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn text_of_only_invisible_characters_is_blank() {
        for blank in [
            "\u{200b}",
            "\u{200b}\u{2060}\u{feff}",
            " \u{ad}\n\u{180e}\u{3164} ",
            "\u{200d}\u{fe0f}\u{e0001}",
        ] {
            assert_eq!(
                clean_text(blank, 10).unwrap_err().code,
                ErrorCode::BadRequest,
                "{blank:?}"
            );
        }
        assert_eq!(clean_text(" a\u{200b} ", 10).unwrap(), "a\u{200b}");
    }

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
