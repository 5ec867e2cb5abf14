//! The `Ready` / `Progressing` / `Degraded` conditions, their reasons, and the Events a change
//! of `Degraded` calls for.

use parley_crd::resources::Condition;

/// The `type` of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// Whether the cluster (or shard) serves as its spec says.
    Ready,
    /// Whether the cluster's pods lag the spec.
    Progressing,
    /// Whether something in the spec is wrong.
    Degraded,
}

impl ConditionType {
    /// The string the API carries.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `reason` of a condition or Event, as `kubectl describe` shows it (and tests and users
/// match on): [`Reason::as_str`] is the string written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The ChatShards leave a gap, overlap, or name a malformed range (ChatCluster `Degraded`).
    InvalidShardMap,
    /// No free worker-ID range is left for the replicas (ChatCluster `Degraded`).
    WorkerIdsExhausted,
    /// A referenced Secret or key does not exist (ChatCluster and ChatShard `Degraded`).
    MissingSecret,
    /// The migration Job failed for good (ChatCluster `Degraded`).
    MigrationFailed,
    /// Nothing is wrong with the spec (`Degraded` False, and the Event when it mends).
    SpecValid,
    /// The databases are being migrated (`Progressing`; a ChatShard's `Ready` False).
    Migrating,
    /// Not every chat-node runs the current spec yet.
    RollingOut,
    /// Not every chat-node is ready yet.
    WaitingForNodes,
    /// Not every persister is ready yet.
    WaitingForPersisters,
    /// Not every shard of the map in force is ready yet.
    WaitingForShards,
    /// Every chat-node and persister is ready (`Progressing` False).
    Settled,
    /// The cluster is `Ready`.
    AllReady,
    /// A ChatShard's slots are no ranges within 0-4095.
    InvalidSlots,
    /// A ChatShard's schema is applied (`Ready`).
    Migrated,
}

impl Reason {
    /// The string the API carries.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidShardMap => "InvalidShardMap",
            Reason::WorkerIdsExhausted => "WorkerIdsExhausted",
            Reason::MissingSecret => "MissingSecret",
            Reason::MigrationFailed => "MigrationFailed",
            Reason::SpecValid => "SpecValid",
            Reason::Migrating => "Migrating",
            Reason::RollingOut => "RollingOut",
            Reason::WaitingForNodes => "WaitingForNodes",
            Reason::WaitingForPersisters => "WaitingForPersisters",
            Reason::WaitingForShards => "WaitingForShards",
            Reason::Settled => "Settled",
            Reason::AllReady => "AllReady",
            Reason::InvalidSlots => "InvalidSlots",
            Reason::Migrated => "Migrated",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a status was observed: the time conditions that change take as their
/// `lastTransitionTime` (RFC 3339), and the object's `metadata.generation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// RFC 3339.
    pub now: String,
    /// `metadata.generation` of the object observed.
    pub generation: Option<i64>,
}

impl Stamp {
    /// A stamp at `now` (RFC 3339) of `generation`.
    pub fn at(now: impl Into<String>, generation: Option<i64>) -> Self {
        Self {
            now: now.into(),
            generation,
        }
    }
}

/// One condition's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionState {
    /// Which condition.
    pub type_: ConditionType,
    /// `True` or `False`.
    pub status: bool,
    /// Why, as one CamelCase word.
    pub reason: Reason,
    /// Why, for a person.
    pub message: String,
}

/// Sets a condition, keeping its transition time when its status did not change; the list
/// stays sorted by type.
pub fn set_condition(conditions: &mut Vec<Condition>, state: ConditionState, stamp: &Stamp) {
    let type_ = state.type_.as_str();
    let status = if state.status { "True" } else { "False" };
    let since = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| stamp.now.clone(), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: state.reason.as_str().to_owned(),
        message: state.message,
        last_transition_time: since,
        observed_generation: stamp.generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// What went wrong with a cluster's spec, to show as `Degraded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The reason `Degraded` (and `Ready`) take when this is the first problem.
    pub reason: Reason,
    /// What is wrong and, where it can, how to mend it.
    pub message: String,
}

/// What the controller saw of the cluster's workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rollout {
    /// `spec.replicas`.
    pub desired: i32,
    /// Ready chat-nodes (at most `desired`).
    pub ready: i32,
    /// Chat-nodes on the current spec (at most `desired`).
    pub updated: i32,
    /// `spec.persister.replicas`.
    pub persisters_desired: i32,
    /// Ready persisters.
    pub persisters_ready: i32,
    /// Whether the newest shard map's migration succeeded.
    pub migrated: bool,
    /// Shards in the map in force, and how many of them are Ready.
    pub shards: i32,
    /// Of `shards`, those whose ChatShard is Ready.
    pub shards_ready: i32,
}

impl Rollout {
    /// Whether everything has caught up with the spec.
    pub fn settled(&self) -> bool {
        self.migrated
            && self.ready == self.desired
            && self.updated == self.desired
            && self.persisters_ready == self.persisters_desired
            && self.shards_ready == self.shards
    }

    /// What the rollout waits for first, or [`Reason::Settled`].
    fn progress(&self) -> (Reason, String) {
        if !self.migrated {
            (Reason::Migrating, "the databases are being migrated".into())
        } else if self.updated < self.desired {
            let (n, of) = (self.updated, self.desired);
            (
                Reason::RollingOut,
                format!("{n} of {of} chat-nodes run the current spec"),
            )
        } else if self.ready < self.desired {
            let (n, of) = (self.ready, self.desired);
            (
                Reason::WaitingForNodes,
                format!("{n} of {of} chat-nodes are ready"),
            )
        } else if self.persisters_ready < self.persisters_desired {
            let (n, of) = (self.persisters_ready, self.persisters_desired);
            (
                Reason::WaitingForPersisters,
                format!("{n} of {of} persisters are ready"),
            )
        } else if self.shards_ready < self.shards {
            let (n, of) = (self.shards_ready, self.shards);
            (
                Reason::WaitingForShards,
                format!("{n} of {of} shards are ready"),
            )
        } else {
            (
                Reason::Settled,
                "every chat-node and persister is ready".into(),
            )
        }
    }
}

/// `Degraded`: True with the first problem's reason and every problem's message.
fn degraded(problems: &[Problem]) -> ConditionState {
    let (status, reason, message) = match problems.first() {
        Some(p) => {
            let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            (true, p.reason, messages.join("; "))
        }
        None => (false, Reason::SpecValid, "the spec is valid".into()),
    };
    ConditionState {
        type_: ConditionType::Degraded,
        status,
        reason,
        message,
    }
}

/// The three conditions of a ChatCluster.
pub fn cluster_conditions(
    previous: &[Condition],
    problems: &[Problem],
    rollout: Rollout,
    stamp: &Stamp,
) -> Vec<Condition> {
    let mut c = previous.to_vec();
    set_condition(&mut c, degraded(problems), stamp);
    let settled = rollout.settled();
    let (reason, message) = rollout.progress();
    let progressing = ConditionState {
        type_: ConditionType::Progressing,
        status: !settled,
        reason,
        message: message.clone(),
    };
    set_condition(&mut c, progressing, stamp);
    let (reason, message) = match (problems.first(), settled) {
        (Some(p), _) => (p.reason, format!("degraded: {}", p.message)),
        (None, false) => (reason, message),
        (None, true) => (
            Reason::AllReady,
            format!("{} chat-nodes ready", rollout.ready),
        ),
    };
    let ready = ConditionState {
        type_: ConditionType::Ready,
        status: settled && problems.is_empty(),
        reason,
        message,
    };
    set_condition(&mut c, ready, stamp);
    c
}

/// An Event to record about a change of the `Degraded` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionEvent {
    /// A Warning (the cluster became Degraded) or a Normal Event (it mended).
    pub warning: bool,
    /// The condition's reason (as read back from the API, so a string).
    pub reason: String,
    /// The condition's message.
    pub note: String,
}

/// The Event the step from `previous` to `current` conditions calls for: a Warning when the
/// cluster becomes Degraded or its problem changes, a Normal one when it stops being so.
pub fn degraded_event(previous: &[Condition], current: &[Condition]) -> Option<ConditionEvent> {
    let degraded = |c: &[Condition]| {
        c.iter()
            .find(|c| c.type_ == ConditionType::Degraded.as_str() && c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    match (degraded(previous), degraded(current)) {
        (before, Some((reason, note)))
            if before.as_ref() != Some(&(reason.clone(), note.clone())) =>
        {
            Some(ConditionEvent {
                warning: true,
                reason,
                note,
            })
        }
        (Some(_), None) => Some(ConditionEvent {
            warning: false,
            reason: Reason::SpecValid.as_str().into(),
            note: "the spec is valid again".into(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_tell_what_is_going_on() {
        let settled = Rollout {
            desired: 3,
            ready: 3,
            updated: 3,
            persisters_desired: 2,
            persisters_ready: 2,
            migrated: true,
            shards: 2,
            shards_ready: 2,
        };
        let c = cluster_conditions(&[], &[], settled, &Stamp::at("t1", Some(4)));
        let get = |c: &[Condition], t: &str| c.iter().find(|x| x.type_ == t).unwrap().clone();
        assert_eq!(get(&c, "Ready").status, "True");
        assert_eq!(get(&c, "Progressing").status, "False");
        assert_eq!(get(&c, "Degraded").status, "False");
        assert_eq!(get(&c, "Ready").observed_generation, Some(4));

        let scaling = Rollout {
            ready: 2,
            ..settled
        };
        let c2 = cluster_conditions(&c, &[], scaling, &Stamp::at("t2", Some(5)));
        assert_eq!(get(&c2, "Ready").status, "False");
        assert_eq!(get(&c2, "Progressing").reason, "WaitingForNodes");
        assert_eq!(
            get(&c2, "Progressing").message,
            "2 of 3 chat-nodes are ready"
        );
        assert_eq!(
            get(&c2, "Degraded").last_transition_time,
            "t1",
            "unchanged status keeps its time"
        );

        let shard_behind = Rollout {
            shards_ready: 1,
            ..settled
        };
        let c4 = cluster_conditions(&c, &[], shard_behind, &Stamp::at("t4", Some(5)));
        assert_eq!(get(&c4, "Ready").status, "False", "a shard is not ready");
        assert_eq!(get(&c4, "Ready").reason, "WaitingForShards");
        assert_eq!(get(&c4, "Progressing").message, "1 of 2 shards are ready");

        let problem = Problem {
            reason: Reason::InvalidShardMap,
            message: "slots 2048-4095 belong to no shard".into(),
        };
        let c3 = cluster_conditions(&c2, &[problem], settled, &Stamp::at("t3", Some(6)));
        assert_eq!(get(&c3, "Degraded").status, "True");
        assert_eq!(get(&c3, "Degraded").reason, "InvalidShardMap");
        assert_eq!(get(&c3, "Ready").status, "False");
        assert!(get(&c3, "Ready").message.contains("2048-4095"));
    }

    #[test]
    fn events_mark_changes_of_degraded_only() {
        let ok = Rollout {
            desired: 1,
            ready: 1,
            updated: 1,
            migrated: true,
            ..Rollout::default()
        };
        let problem = |m: &str| Problem {
            reason: Reason::InvalidShardMap,
            message: m.into(),
        };
        let fine = cluster_conditions(&[], &[], ok, &Stamp::at("t0", Some(1)));
        assert_eq!(degraded_event(&[], &fine), None);
        let gap = cluster_conditions(&fine, &[problem("gap 1-2")], ok, &Stamp::at("t1", Some(2)));
        let e = degraded_event(&fine, &gap).unwrap();
        assert!(e.warning);
        assert_eq!(
            (e.reason.as_str(), e.note.as_str()),
            ("InvalidShardMap", "gap 1-2")
        );
        let again = cluster_conditions(&gap, &[problem("gap 1-2")], ok, &Stamp::at("t2", Some(2)));
        assert_eq!(degraded_event(&gap, &again), None, "nothing new");
        let other =
            cluster_conditions(&again, &[problem("gap 3-4")], ok, &Stamp::at("t3", Some(3)));
        assert_eq!(
            degraded_event(&again, &other).unwrap().note,
            "gap 3-4",
            "a new problem"
        );
        let mended = cluster_conditions(&other, &[], ok, &Stamp::at("t4", Some(4)));
        let e = degraded_event(&other, &mended).unwrap();
        assert!(!e.warning);
        assert_eq!(e.reason, "SpecValid");
    }

    #[test]
    fn reasons_are_the_strings_the_api_carries() {
        // The e2e tests and users' alerts match these.
        assert_eq!(Reason::InvalidShardMap.to_string(), "InvalidShardMap");
        assert_eq!(Reason::WorkerIdsExhausted.as_str(), "WorkerIdsExhausted");
        assert_eq!(Reason::MissingSecret.as_str(), "MissingSecret");
        assert_eq!(Reason::MigrationFailed.as_str(), "MigrationFailed");
        assert_eq!(
            Reason::WaitingForPersisters.as_str(),
            "WaitingForPersisters"
        );
        assert_eq!(ConditionType::Progressing.to_string(), "Progressing");
    }
}
