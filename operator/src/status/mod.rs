//! Status logic, pure: the shard map from the ChatShards, the ring from the chat-node pods,
//! what a migration Job says, and the `Ready` / `Progressing` / `Degraded` conditions from
//! what the controller observed.
//!
//! ```text
//!   ChatShards ──► shards::shard_map ──► Vec<ShardStatus> (or the problem)
//!   Job        ──► shards::job_succeeded / job_failure / migrated_shards
//!   Pods       ──► ring::ring_members ──► ring::next_ring ──► RingStatus (epoch moves on change)
//!   problems + Rollout ──► conditions::cluster_conditions ──► Ready, Progressing, Degraded
//!                                                      └──► degraded_event (Warning / Normal)
//! ```

mod conditions;
mod ring;
mod shards;

pub use conditions::{
    ConditionEvent, ConditionState, ConditionType, Problem, Reason, Rollout, Stamp,
    cluster_conditions, degraded_event, set_condition,
};
pub use ring::{RingScope, next_ring, ring_members, statefulset_replicas};
pub use shards::{job_failure, job_succeeded, migrated_shards, shard_map};
