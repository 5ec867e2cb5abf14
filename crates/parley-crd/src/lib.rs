//! `ChatCluster` / `ChatShard` custom resource types and the pure cluster logic that both
//! chat-node and the operator use: the consistent-hash ring, the slot map and worker-ID
//! ranges.
//!
//! Nothing here depends on tokio, a Kubernetes client or kube-runtime.
#![forbid(unsafe_code)]

pub mod env;
mod hash;
pub mod resources;
mod ring;
mod slots;
pub mod workers;

pub use hash::{hash_bytes, hash_id};
pub use ring::{Member, Ring};
pub use slots::{ShardMap, ShardMapError, SlotRange, slot_of};

/// Number of slots messages are spread over: `slot = hash(channel_id) mod SLOT_COUNT`.
pub const SLOT_COUNT: u16 = 4096;

/// Number of distinct Snowflake worker IDs (10 bits).
pub const MAX_WORKERS: u16 = 1024;
