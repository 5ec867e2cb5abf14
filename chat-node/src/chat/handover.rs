//! Ownership hand-over ([`Handover`]): a node sequences a channel only in an owner term it
//! took the channel over in, in the ring epoch it holds it in now, with the channel's last
//! seq loaded from the store after the persisters stored what earlier owners wrote. The
//! term and why it keeps seqs unique are in [`super::fencing`].
//!
//! ```text
//!   claim(channel) ─► epoch (a fast refusal: lease, ring view)
//!   hold(state, epoch) ─ term of this epoch held? ─ yes ─► go
//!                          └─ no ─► take over: reserve ─► append fence ─► establish
//!                                   ─► wait for the persisters (shared) ─► load last seq
//!   acquire(channels) (reads) ─► every state loaded in the epoch? ─ no ─► wait (shared)
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_protocol::{ErrorCode, Id};

use super::fencing::{Fencing, OwnerTerm, superseded};
use super::owners::ChannelOwners;
use super::sequencer::{ChannelSeq, HeldTerm, OwnerState, Sequencer};
use crate::backend::{HighWater, Log, LogEntry, LogRecord, MessageStore, PubSub, Topic};
use crate::error::ApiError;

/// How long a new owner waits for the persisters to store what earlier owners wrote.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a term is used before the channel is taken over again: well within the 24 h
/// after which the ring's fencing forgets a channel nobody took over (its `confirm` would
/// then fail once).
const TERM_RENEWAL: Duration = Duration::from_secs(12 * 3600);

/// Takes channels over for sequencing.
#[derive(Debug)]
pub struct Handover {
    owners: Arc<dyn ChannelOwners>,
    fencing: Arc<dyn Fencing>,
    log: Arc<dyn Log>,
    messages: Arc<dyn MessageStore>,
    sequencer: Arc<Sequencer>,
    waits: PersisterWaits,
}

/// Waits for the persisters, shared: one wait at a time, and a wait that started after a
/// caller's ticket was issued covers that caller (it waits for everything appended before
/// it started). Many channels taken over at once (after a ring change) share a few waits.
#[derive(Debug, Default)]
struct PersisterWaits {
    /// The last ticket issued.
    issued: AtomicU64,
    /// The highest ticket a finished wait covered; locked by the one wait under way.
    covered: tokio::sync::Mutex<u64>,
}

impl PersisterWaits {
    /// Returns once the persisters consumed everything appended to `log` before this call.
    /// Errors: `unavailable` when that takes longer than [`HANDOVER_TIMEOUT`].
    async fn wait(&self, log: &dyn Log) -> Result<(), ApiError> {
        let mine = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.covered.lock().await;
        if *covered >= mine {
            return Ok(());
        }
        // Every ticket issued up to here was issued before this wait starts.
        let upto = self.issued.load(Ordering::SeqCst);
        log.wait_consumed(crate::persister::GROUP, HANDOVER_TIMEOUT)
            .await?;
        *covered = (*covered).max(upto);
        Ok(())
    }
}

impl Handover {
    /// Hand-over of the channels `owners` gives this node: terms from `fencing`, fences
    /// appended to `log` whose persisters it waits on, last seqs loaded from `messages`
    /// into `sequencer`'s states.
    pub fn new(
        owners: Arc<dyn ChannelOwners>,
        fencing: Arc<dyn Fencing>,
        log: Arc<dyn Log>,
        messages: Arc<dyn MessageStore>,
        sequencer: Arc<Sequencer>,
    ) -> Self {
        Self {
            owners,
            fencing,
            log,
            messages,
            sequencer,
            waits: PersisterWaits::default(),
        }
    }

    /// The current ownership epoch, if this node owns `channels` now and its lease is fresh:
    /// a fast refusal, not what keeps seqs unique (the term is). Errors: `unavailable`.
    pub fn claim(&self, channels: &[Id]) -> Result<u64, ApiError> {
        Ok(self.owners.claim(channels)?)
    }

    /// The owner term this node sequences `channel` in during `epoch`, taking the channel
    /// over first when `owner` (the channel's state, locked) holds no term of that epoch.
    /// Errors: `unavailable` when the take-over fails (fencing or log unreachable, another
    /// node took the channel over meanwhile, the persisters lag past [`HANDOVER_TIMEOUT`]);
    /// the state then holds no term.
    pub async fn hold(
        &self,
        state: &ChannelSeq,
        owner: &mut OwnerState,
        channel: Id,
        epoch: u64,
    ) -> Result<OwnerTerm, ApiError> {
        if let Some(held) = owner
            .held
            .filter(|h| h.epoch == epoch && h.since.elapsed() < TERM_RENEWAL)
        {
            return Ok(held.term);
        }
        owner.held = None;
        let term = self.take_over(state, owner, channel, epoch).await?;
        owner.held = Some(HeldTerm {
            term,
            epoch,
            since: Instant::now(),
        });
        Ok(term)
    }

    /// reserve ─► fence ─► establish ─► wait ─► last seq (see [`super::fencing`]).
    async fn take_over(
        &self,
        state: &ChannelSeq,
        owner: &mut OwnerState,
        channel: Id,
        epoch: u64,
    ) -> Result<OwnerTerm, ApiError> {
        let fences = self.fencing.fences();
        // The floor: where the fencing's state of the channel expired or was lost, its
        // generations still rise above every fence the persisters put in force.
        let floor = if fences {
            self.stored_term(channel).await?.generation
        } else {
            0
        };
        let generation = self.fencing.reserve(channel, floor).await?;
        let fence = if fences {
            self.append_fence(channel, generation).await?
        } else {
            0
        };
        let term = OwnerTerm {
            generation,
            term: fence,
        };
        self.fencing.establish(channel, term).await?;
        if fences {
            self.waits.wait(self.log.as_ref()).await?;
            self.check_stored_term(channel, term).await?;
        }
        let stored = self
            .messages
            .high_water(&[channel])
            .await?
            .first()
            .map(|(_, h)| *h);
        // The store holds what earlier owners wrote (the wait above); this node's own last
        // seq and ID may be newer than the store (an embedded node waits for nothing). Never
        // go back: take the larger.
        let loaded = owner.load(stored);
        state.reset(epoch);
        tracing::debug!(%channel, epoch, generation, term = fence, ?stored, ?loaded, "channel taken over");
        Ok(term)
    }

    /// Appends a fence record of `channel` by the owner of reserve `generation`; returns
    /// the term it starts (its offset + 1).
    async fn append_fence(&self, channel: Id, generation: u64) -> Result<u64, ApiError> {
        let payload = LogEntry::encode_fence(channel, generation)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let offsets = self
            .log
            .append(&[LogRecord {
                key: channel,
                payload: Bytes::from(payload),
            }])
            .await?;
        let offset = offsets.first().copied().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                "the log returned no offset for a fence",
            )
        })?;
        Ok(offset + 1)
    }

    /// The store's owner term of `channel` (`{0, 0}` if none).
    async fn stored_term(&self, channel: Id) -> Result<OwnerTerm, ApiError> {
        Ok(self
            .messages
            .channel_terms(&[channel])
            .await?
            .first()
            .map_or_else(OwnerTerm::default, |(_, t)| *t))
    }

    /// After the wait, the store's term of `channel` must be exactly the one this node's
    /// fence put in force: the persisters keep only messages of the term in force. Another
    /// one of a generation not below mine means a later fence was persisted (superseded),
    /// or mine was passed over (the fencing's state was lost and my generation repeats one
    /// already in force; the next take-over's floor is above it). One of a lower
    /// generation means a persister that keeps no generations (an older version during a
    /// rollout): it keeps my messages unless its term is above mine (the log's offsets went
    /// back). Errors: `unavailable` in every case of refusal.
    async fn check_stored_term(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        let stored = self.stored_term(channel).await?;
        if stored == term {
            return Ok(());
        }
        if stored.generation >= term.generation {
            tracing::debug!(
                %channel,
                generation = term.generation,
                term = term.term,
                stored_generation = stored.generation,
                stored = stored.term,
                "superseded during the take-over"
            );
            return Err(superseded(channel));
        }
        if stored.term <= term.term {
            return Ok(());
        }
        tracing::error!(
            %channel,
            term = term.term,
            stored = stored.term,
            "the store's owner term of the channel, written by a persister that keeps no \
             generations, is above the one this node just put in force: the log's offsets \
             went back (its topic was created anew?); sends of the channel are refused until \
             every persister runs this version"
        );
        Err(ApiError::unavailable(format!(
            "channel {channel} cannot be taken over now; try again"
        )))
    }

    /// After a send's record of `term` is durable: publishes its event `payload` on `topic`
    /// if the term is still in force, as one step ([`Fencing::publish_confirmed`]).
    /// Errors: `unavailable` (fenced, or it cannot be told).
    pub async fn publish_confirmed(
        &self,
        channel: Id,
        term: OwnerTerm,
        topic: Topic,
        payload: Bytes,
        pubsub: &dyn PubSub,
    ) -> Result<(), ApiError> {
        self.fencing
            .publish_confirmed(channel, term, topic, payload, pubsub)
            .await
    }

    /// For reads of channel state: makes sure this node owns `channels` now and, unless
    /// every state is loaded in the current epoch, that the persisters have stored what
    /// earlier owners wrote. Returns the epoch. Errors: `unavailable` when this node does
    /// not own them now or the persisters lag past [`HANDOVER_TIMEOUT`].
    pub async fn acquire(&self, channels: &[Id]) -> Result<u64, ApiError> {
        let epoch = self.claim(channels)?;
        if !self.fencing.fences()
            || channels
                .iter()
                .all(|c| self.sequencer.channel(*c).loaded_in() == epoch)
        {
            return Ok(epoch);
        }
        self.waits.wait(self.log.as_ref()).await?;
        Ok(epoch)
    }

    /// The last seqs and highest IDs the store has for those of `channels` whose state is
    /// not loaded in `epoch` (the others are absent, and so are channels without messages).
    pub async fn stored_seqs(
        &self,
        channels: &[Id],
        epoch: u64,
    ) -> Result<HashMap<Id, HighWater>, ApiError> {
        let mut unloaded = Vec::new();
        for c in channels {
            let state = self.sequencer.channel(*c);
            let owner = state.owner.lock().await;
            if state.loaded_in() != epoch || owner.last_seq.is_none() {
                unloaded.push(*c);
            }
        }
        if unloaded.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .messages
            .high_water(&unloaded)
            .await?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests;
