//! Faults injected into a running cluster, in Jepsen's vocabulary: a nemesis starts a fault
//! and heals it; a [`Schedule`] says when, during a scenario; the [`FAULTS`] registry lists
//! every kind the soak (`parley-chaos`) may draw from.
//!
//! Each start and heal goes into the history as an `info` operation of the `nemesis`
//! process: `{"f":"nemesis","value":{"fault":"pause","phase":"start","target":"pause n1"}}`.

pub mod clock;
pub mod partition;
pub mod persister;
pub mod process;
pub mod services;

use std::time::Duration;

use crate::cluster::{Cluster, Options};

/// A fault that can be started and healed against a running cluster.
#[async_trait::async_trait]
pub trait Nemesis: Send {
    /// `<kind> <target>`, e.g. `pause n1`: the first word is the fault's kind (as in
    /// [`Fault::kind`]), which the history's `fault` field carries.
    fn name(&self) -> String;
    /// Injects the fault. Errors when it could not be injected (the scenario fails).
    async fn start(&mut self, cluster: &mut Cluster) -> anyhow::Result<()>;
    /// Heals it (the cluster may still be recovering when this returns).
    async fn heal(&mut self, cluster: &mut Cluster) -> anyhow::Result<()>;
}

/// The kind of a nemesis: the first word of its name.
pub fn kind_of(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or(name)
}

/// When a scenario's nemesis acts: `repeat` times, wait `start_after`, start the fault,
/// wait `heal_after`, heal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// From the workload's start (or the previous heal) to the fault's start.
    pub start_after: Duration,
    /// How long the fault lasts.
    pub heal_after: Duration,
    /// How many times the fault is injected.
    pub repeat: u32,
}

impl Schedule {
    /// The (start, heal) times of every injection, from the workload's start (ignoring the
    /// time the nemesis itself takes).
    pub fn windows(&self) -> Vec<(Duration, Duration)> {
        let mut at = Duration::ZERO;
        (0..self.repeat)
            .map(|_| {
                let start = at + self.start_after;
                at = start + self.heal_after;
                (start, at)
            })
            .collect()
    }

    /// From the workload's start to the last heal.
    pub fn total(&self) -> Duration {
        (self.start_after + self.heal_after) * self.repeat
    }
}

/// A kind of fault the soak may inject: one line per kind in [`FAULTS`].
#[derive(Clone, Copy)]
pub struct Fault {
    /// The kind, e.g. `pause` (the first word of its nemeses' names).
    pub kind: &'static str,
    /// Adjusts the cluster's options before it starts (for instance a node launched in a
    /// network namespace); most kinds need nothing ([`no_preparation`]).
    pub prepare: fn(&mut Options),
    /// A nemesis of this kind against a target drawn with `rng` (node indexes are
    /// `0..cluster.nodes.len()`). Errors when the kind cannot run here (a missing tool).
    pub build: fn(&Cluster, &mut dyn rand::RngCore) -> anyhow::Result<Box<dyn Nemesis>>,
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fault").field("kind", &self.kind).finish()
    }
}

/// [`Fault::prepare`] of a kind that needs nothing.
pub fn no_preparation(_: &mut Options) {}

/// Every kind of fault the soak draws from (add one line per new kind).
pub const FAULTS: &[Fault] = &[
    process::PAUSE,
    process::KILL,
    services::RESTART_REDIS,
    services::RESTART_KAFKA,
    services::CRASH_SHARD,
    clock::CLOCK_STEP,
    persister::PERSISTER_CRASH,
    partition::PARTITION_REDIS,
    partition::PARTITION_KAFKA,
    partition::PARTITION_PEERS,
];

/// The registered kind named `kind`.
pub fn fault(kind: &str) -> Option<&'static Fault> {
    FAULTS.iter().find(|f| f.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_alternates_waits_and_faults() {
        let s = Schedule {
            start_after: Duration::from_secs(3),
            heal_after: Duration::from_secs(6),
            repeat: 2,
        };
        let secs = |d: Duration| d.as_secs();
        let w: Vec<(u64, u64)> = s
            .windows()
            .into_iter()
            .map(|(a, b)| (secs(a), secs(b)))
            .collect();
        assert_eq!(w, [(3, 9), (12, 18)]);
        assert_eq!(s.total(), Duration::from_secs(18));
    }

    #[test]
    fn kinds_are_unique_and_name_their_nemeses() {
        let mut kinds: Vec<&str> = FAULTS.iter().map(|f| f.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), FAULTS.len());
        assert_eq!(kind_of("pause n1"), "pause");
        assert!(fault("kill").is_some());
    }
}
