//! The sequencer's memory budgets ([`crate::chat::sequencer`] keeps to them).

use parley_crd::env;

/// How much memory the sequencer may hold.
#[derive(Debug, Clone, clap::Args)]
pub struct SequencerMemory {
    /// Bytes of recent messages (those not yet stored, and a cache of the newest stored ones)
    /// and per-channel state kept in memory over all channels. Idle channels are evicted
    /// first; when messages the store does not have yet fill it, sends are refused with
    /// `unavailable` until the persisters catch up.
    #[arg(long, env = env::RECENT_MESSAGES_BYTES, value_name = env::RECENT_MESSAGES_BYTES,
          default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(65_536..=68_719_476_736))]
    pub recent_messages_bytes: u64,

    /// Bytes of idempotency keys (`client_msg_id`s of recent sends, IDs only) kept in
    /// memory; older keys are looked up in the store.
    #[arg(long, env = env::IDEMPOTENCY_KEYS_BYTES, value_name = env::IDEMPOTENCY_KEYS_BYTES,
          default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(65_536..=68_719_476_736))]
    pub idempotency_keys_bytes: u64,
}
