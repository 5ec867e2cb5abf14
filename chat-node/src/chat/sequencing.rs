//! Sequencing on a channel's owner ([`Sequencing`]): a prepared send is deduplicated, given
//! its ID and seq, appended to the durable log and published, in seq order per channel.
//! The owner also answers for the recent messages the store may not have yet
//! ([`Sequencing::local_state`]).
//!
//! ```text
//!   sequence(prepared) ─ task ─► owner_work ─► Handover::claim ─► lock the channel's state
//!     ─► Handover::hold (the owner term; a take-over when there is none for this epoch)
//!     ─► known (author, client_msg_id)? ─ yes ─► the earlier message
//!     ─► Sequencer::admit ─► Log::append (durable, with the term)
//!     ─► Fencing::publish_confirmed (confirm + publish, one step) ─► remember ─► unlock
//!     ─► notify offline members
//!
//!   confirm fails (fenced) or the append fails ─► unavailable; last seq not advanced,
//!   nothing remembered or published (unless only the script's answer was lost), the term
//!   dropped (the next send takes over again)
//! ```
//!
//! Fencing (the term, the confirm, and why together they keep seqs unique) is in
//! [`super::fencing`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parley_protocol::{ErrorCode, Id, Message, Timestamp};

use super::events::Events;
use super::fencing::OwnerTerm;
use super::handover::Handover;
use super::media::Media;
use super::notify::OfflineNotifier;
use super::owners::{ChannelOwners, Owner};
use super::sequencer::Sequencer;
use super::{Ids, ev};
use crate::backend::{Log, LogEntry, LogRecord, MessageStore, StoredMessage, Topic};
use crate::error::ApiError;
use crate::hub::Header;
use crate::internal::{ChannelState, Hop, Prepared};
use crate::metrics::Metrics;

/// Idempotency window of `client_msg_id`.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// How long the sequencer waits to learn that the persisters stored what it remembered.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything [`Sequencing::new`] needs.
#[derive(Debug)]
pub struct SequencingParts {
    pub owners: Arc<dyn ChannelOwners>,
    pub handover: Handover,
    pub sequencer: Arc<Sequencer>,
    pub log: Arc<dyn Log>,
    pub messages: Arc<dyn MessageStore>,
    pub ids: Ids,
    pub media: Arc<Media>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// Notification records for offline members (distributed mode).
    pub notifier: Option<OfflineNotifier>,
}

/// The owner's side of sending.
#[derive(Debug)]
pub struct Sequencing {
    owners: Arc<dyn ChannelOwners>,
    handover: Handover,
    sequencer: Arc<Sequencer>,
    log: Arc<dyn Log>,
    messages: Arc<dyn MessageStore>,
    ids: Ids,
    media: Arc<Media>,
    events: Events,
    metrics: Arc<Metrics>,
    notifier: Option<OfflineNotifier>,
}

impl Sequencing {
    /// Sequencing over the log, stores and services in `p`.
    pub fn new(p: SequencingParts) -> Self {
        Self {
            owners: p.owners,
            handover: p.handover,
            sequencer: p.sequencer,
            log: p.log,
            messages: p.messages,
            ids: p.ids,
            media: p.media,
            events: p.events,
            metrics: p.metrics,
            notifier: p.notifier,
        }
    }

    /// Recent messages and idempotency keys in memory.
    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// The durable log sends are appended to.
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// A send forwarded by another node, which takes this node for the owner. When this
    /// node's view disagrees, it reads the ownership again; if the channel is still another
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

    /// Sequences a prepared send on this node, its channel's owner. It runs as a task of its
    /// own: a caller that goes away (a client or a forwarding node disconnecting) must not
    /// cancel it between the durable append and recording the seq, or the next send would
    /// reuse it.
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
        let epoch = self.handover.claim(&[channel])?;
        let seq_state = self.sequencer.channel(channel);
        let mut owner = seq_state.owner.lock().await;
        let term = self
            .handover
            .hold(&seq_state, &mut owner, channel, epoch)
            .await?;
        if let Some(earlier) = self.earlier_send(&p).await? {
            return self.media.message_wire(&earlier).await;
        }
        // Messages the store may lack stay in memory until it has them: refuse to take more
        // than the budget holds.
        self.sequencer
            .admit(Sequencer::bytes_of(&p.text, p.client_msg_id.as_deref()))?;
        let current = owner.last_seq.unwrap_or(0);
        let stored = self
            .stamp(p, current + 1, owner.last_id.unwrap_or(Id(0)))
            .await?;
        // The floor only goes up; a record whose append fails may be stored (before the next
        // owner's fence), and the next ID goes above it either way.
        owner.last_id = Some(stored.id);
        let message = self.media.message_wire(&stored).await?;
        if let Err(e) = self.append_published(&stored, &message, term).await {
            // The record may be in the log (an append whose answer was lost, or one fenced
            // out): the seq is not used again under this term. The next send takes the
            // channel over, after the persisters stored whatever of it is kept. Its key is
            // not remembered: a retry must ask the store.
            owner.held = None;
            self.sequencer.key_only_in_store(stored.created_at);
            return Err(e);
        }
        owner.last_seq = Some(stored.seq);
        let stored = Arc::new(stored);
        self.sequencer.remember(&seq_state, stored.clone());
        drop(owner);
        self.metrics.messages_in.inc();
        if let Some(notifier) = &self.notifier {
            notifier.message_sent(&stored).await;
        }
        Ok(message)
    }

    /// Appends `stored` in `term`, then publishes its event `message` if the term is still
    /// in force, as one step ([`super::fencing::Fencing::publish_confirmed`]): only then may
    /// the message be remembered or acknowledged. Published under the channel's lock, so
    /// events leave in seq order; a publish that fails after the confirm passed loses no
    /// message (it is durable, clients catch up with resume/history). Errors: `unavailable`
    /// when the append failed, or the confirmation did (the outcome is unknown: a record
    /// before the next owner's fence is stored, one after it dropped; a retry with the same
    /// `client_msg_id` finds out); `internal` when the event does not serialize (the record
    /// is already appended: the term is dropped as for a failed confirm).
    async fn append_published(
        &self,
        stored: &StoredMessage,
        message: &Message,
        term: OwnerTerm,
    ) -> Result<(), ApiError> {
        self.append(stored, term).await?;
        let header = Header {
            m: Some((message.channel_id, message.id)),
            ..Default::default()
        };
        let payload = Events::encode(&header, ev::MESSAGE, message)?;
        if let Err(e) = self
            .handover
            .publish_confirmed(
                stored.channel_id,
                term,
                Topic::Channel(stored.channel_id),
                payload,
                self.events.pubsub(),
            )
            .await
        {
            self.metrics.fenced_sends.inc();
            tracing::warn!(
                channel = %stored.channel_id,
                seq = stored.seq,
                generation = term.generation,
                term = term.term,
                "a send was fenced after its append: {}",
                e.message
            );
            return Err(e);
        }
        Ok(())
    }

    /// The message sent earlier with `p`'s `client_msg_id` within the idempotency window.
    /// Memory first; a key or message no longer there was evicted only once the store had
    /// its message (sequencer.rs), so the store finds it. A key memory does not hold is not
    /// looked up in the store when memory holds every key of the window
    /// ([`Sequencer::key_exists_only_in_memory`], the embedded node).
    async fn earlier_send(&self, p: &Prepared) -> Result<Option<StoredMessage>, ApiError> {
        let Some(cmid) = &p.client_msg_id else {
            return Ok(None);
        };
        let since = Timestamp(Timestamp::now().unix_millis() - IDEMPOTENCY_WINDOW_MS);
        match self.sequencer.by_client_id(p.author, cmid, since) {
            Some(hit) => {
                if let Some(m) = self.sequencer.recent_message(hit.channel, hit.message) {
                    return Ok(Some((*m).clone()));
                }
                // The key is remembered but its message left memory: the store has it.
            }
            // The embedded node made every message since `since` and still remembers every
            // key of them: no store round trip for a new message.
            None if self.sequencer.key_exists_only_in_memory(since) => return Ok(None),
            None => {}
        }
        Ok(self
            .messages
            .by_client_msg_id(p.author, cmid, since)
            .await?)
    }

    /// `p` as the message numbered `seq`, with a new ID above `floor` (the channel's last
    /// message ID).
    async fn stamp(&self, p: Prepared, seq: u64, floor: Id) -> Result<StoredMessage, ApiError> {
        Ok(StoredMessage {
            id: self.ids.next_after(floor).await?,
            channel_id: p.channel,
            seq,
            author_id: p.author,
            text: p.text,
            client_msg_id: p.client_msg_id,
            attachments: p.attachments,
            reply_to: p.reply_to,
            created_at: Timestamp::now(),
            moderated: p.moderated,
        })
    }

    /// Durable first: the sender's ok and every delivery come after this. The record
    /// carries the owner `term` (the persisters drop it if a later owner fenced it).
    async fn append(&self, stored: &StoredMessage, term: OwnerTerm) -> Result<(), ApiError> {
        let payload = LogEntry::encode_message(stored, term)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        self.log
            .append(&[LogRecord {
                key: stored.channel_id,
                payload: Bytes::from(payload),
            }])
            .await?;
        Ok(())
    }

    /// This owner's state of `channels`: last seq and recent messages (id > `after`).
    /// Errors: `unavailable` when this node does not own them now.
    pub async fn local_state(
        &self,
        channels: &[Id],
        after: Option<Id>,
    ) -> Result<Vec<ChannelState>, ApiError> {
        let epoch = self.handover.acquire(channels).await?;
        let stored = self.handover.stored_seqs(channels, epoch).await?;
        let mut out = Vec::with_capacity(channels.len());
        for c in channels {
            let state = self.sequencer.channel(*c);
            let mut owner = state.owner.lock().await;
            if state.loaded_in() != epoch || owner.last_seq.is_none() {
                state.reset(epoch);
                owner.load(stored.get(c).copied());
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
                last_seq: owner.last_seq.unwrap_or(0),
                last_id: Some(owner.last_id.unwrap_or(Id(0))),
                recent,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
