//! Ownership hand-over ([`Handover`]): a node sequences a channel only in the ownership
//! epoch it currently holds it in, only once the persisters stored what earlier owners
//! wrote, and only with the channel's last seq loaded from the store in that epoch.
//!
//! ```text
//!   claim(channels) ─► epoch ─► every state loaded in it? ─ yes ─► go
//!                                         └─ no ─► wait for the persisters once per epoch
//!   current_seq(state) ─► loaded in another epoch? ─► max(store's last seq, this node's)
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::Id;

use super::owners::ChannelOwners;
use super::sequencer::{ChannelSeq, Sequencer};
use crate::backend::{Log, MessageStore};
use crate::error::ApiError;

/// How long a new owner waits for the persisters to store what earlier owners wrote.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes channels over for sequencing.
#[derive(Debug)]
pub struct Handover {
    owners: Arc<dyn ChannelOwners>,
    log: Arc<dyn Log>,
    messages: Arc<dyn MessageStore>,
    sequencer: Arc<Sequencer>,
    /// The last ownership epoch for which the persisters were seen caught up.
    caught_up: tokio::sync::Mutex<u64>,
}

impl Handover {
    /// Hand-over of the channels `owners` gives this node: waits on `log`'s persisters,
    /// loads last seqs from `messages` into `sequencer`'s states.
    pub fn new(
        owners: Arc<dyn ChannelOwners>,
        log: Arc<dyn Log>,
        messages: Arc<dyn MessageStore>,
        sequencer: Arc<Sequencer>,
    ) -> Self {
        Self {
            owners,
            log,
            messages,
            sequencer,
            caught_up: tokio::sync::Mutex::new(0),
        }
    }

    /// Makes sure this node may sequence `channels` in the current epoch: the persisters
    /// have stored what earlier owners wrote. Returns the epoch. Errors: `unavailable` when
    /// this node does not own them now or the persisters lag past [`HANDOVER_TIMEOUT`].
    pub async fn acquire(&self, channels: &[Id]) -> Result<u64, ApiError> {
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
    pub async fn current_seq(
        &self,
        state: &ChannelSeq,
        last_seq: &mut Option<u64>,
        channel: Id,
        epoch: u64,
    ) -> Result<u64, ApiError> {
        if state.loaded_in() != epoch || last_seq.is_none() {
            let stored = self
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

    /// The last seqs the store has for those of `channels` whose state is not loaded in
    /// `epoch` (the others are absent).
    pub async fn stored_seqs(
        &self,
        channels: &[Id],
        epoch: u64,
    ) -> Result<HashMap<Id, u64>, ApiError> {
        let mut unloaded = Vec::new();
        for c in channels {
            let state = self.sequencer.channel(*c);
            let last = state.last_seq.lock().await;
            if state.loaded_in() != epoch || last.is_none() {
                unloaded.push(*c);
            }
        }
        if unloaded.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .messages
            .last_seqs(&unloaded)
            .await?
            .into_iter()
            .collect())
    }
}
