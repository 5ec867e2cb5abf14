//! Status logic, pure: the shard map from the ChatShards, the ring from the chat-node pods,
//! what a migration Job says, and the `Ready` / `Progressing` / `Degraded` conditions from
//! what the controller observed.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use parley_crd::resources::{
    ChatShard, Condition, RingMember, RingStatus, ShardStatus, WorkerIdRange,
};
use parley_crd::{ShardMap, SlotRange};

/// The shard map the ChatShards of a cluster describe, or what is wrong with it (a gap, an
/// overlap, a malformed range), naming the shards.
pub fn shard_map(shards: &[ChatShard]) -> Result<Vec<ShardStatus>, String> {
    if shards.is_empty() {
        return Err("no ChatShard names this cluster; slots 0-4095 belong to no shard".into());
    }
    let mut parts = Vec::with_capacity(shards.len());
    for s in shards {
        let name = s.metadata.name.clone().unwrap_or_default();
        let ranges = s
            .spec
            .slots
            .iter()
            .map(|r| {
                r.0.parse::<SlotRange>()
                    .map_err(|e| format!("ChatShard {name}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        parts.push((name, ranges));
    }
    ShardMap::build(parts.clone(), Clone::clone).map_err(|e| e.to_string())?;
    let mut out: Vec<ShardStatus> = shards
        .iter()
        .map(|s| ShardStatus {
            name: s.metadata.name.clone().unwrap_or_default(),
            slots: s.spec.slots.iter().map(|r| r.0.clone()).collect(),
            ready: s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            }),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The ring members among a cluster's chat-node `pods`: Ready, not being deleted, with an
/// ordinal (= worker ID) among the `desired` ones of the cluster's range; by ordinal.
///
/// A pod leaves the list the moment it is being deleted (a rollout, a scale-down, a delete),
/// while its preStop hook still runs. That is safe and is what makes a drain quick: a node
/// that finds itself off the list gives its channels up (its sends in progress finish, its
/// lease goes, the others are told at once), and the others keep a member that left the
/// list in their ring until its lease is gone, so a channel never has two owners.
pub fn ring_members(
    pods: &[Pod],
    cluster: &str,
    namespace: &str,
    workers: WorkerIdRange,
    desired: i32,
) -> Vec<RingMember> {
    let wanted = workers.base..workers.base + desired.min(workers.size);
    let mut members: Vec<RingMember> = pods
        .iter()
        .filter(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            ready && p.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|p| {
            let pod = p.metadata.name.clone()?;
            let ordinal: i32 = p
                .metadata
                .labels
                .as_ref()?
                .get("apps.kubernetes.io/pod-index")?
                .parse()
                .ok()?;
            wanted.contains(&ordinal).then(|| RingMember {
                endpoint: format!(
                    "http://{pod}.{cluster}-nodes.{namespace}.svc:{}",
                    crate::resources::INTERNAL_PORT
                ),
                name: pod,
                ordinal,
                worker_id: ordinal,
            })
        })
        .collect();
    members.sort_by_key(|m| m.ordinal);
    members
}

/// The ring after observing `members`: the epoch moves on only when they changed.
pub fn next_ring(previous: Option<&RingStatus>, members: Vec<RingMember>) -> RingStatus {
    match previous {
        Some(ring) if ring.members == members => ring.clone(),
        Some(ring) => RingStatus {
            epoch: ring.epoch + 1,
            members,
        },
        None => RingStatus { epoch: 1, members },
    }
}

/// Whether a Job has succeeded.
pub fn job_succeeded(job: &Job) -> bool {
    job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0
}

/// Why a Job failed for good, if it did.
pub fn job_failure(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| {
            c.message
                .clone()
                .or_else(|| c.reason.clone())
                .unwrap_or_else(|| "failed".into())
        })
}

/// The ChatShards a migration Job covers (its `parley.dev/shards` annotation).
pub fn migrated_shards(job: &Job) -> impl Iterator<Item = &str> {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::resources::SHARDS_ANNOTATION))
        .into_iter()
        .flat_map(|list| list.split(','))
        .filter(|s| !s.is_empty())
}

/// How many chat-node pods the StatefulSet may have now. Scaling down waits until the ring
/// in the status no longer lists the pods that will go (`ordinal >= base + desired`), so
/// every node stops routing to them before they stop; `true` asks for a quick requeue.
pub fn statefulset_replicas(
    current: i32,
    desired: i32,
    ring_limit: i32,
    ring: Option<&RingStatus>,
) -> (i32, bool) {
    if current <= desired {
        return (desired, false);
    }
    let shrunk = ring.is_some_and(|r| r.members.iter().all(|m| m.ordinal < ring_limit));
    if shrunk {
        (desired, false)
    } else {
        (current, true)
    }
}

/// An Event to record about a change of the `Degraded` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionEvent {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// The Event the step from `previous` to `current` conditions calls for: a Warning when the
/// cluster becomes Degraded or its problem changes, a Normal one when it stops being so.
pub fn degraded_event(previous: &[Condition], current: &[Condition]) -> Option<ConditionEvent> {
    let degraded = |c: &[Condition]| {
        c.iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
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
            reason: "SpecValid".into(),
            note: "the spec is valid again".into(),
        }),
        _ => None,
    }
}

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" };
    let since = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: since,
        observed_generation: generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// What went wrong with a cluster's spec, to show as `Degraded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// What the controller saw of the cluster's workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rollout {
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    pub persisters_desired: i32,
    pub persisters_ready: i32,
    pub migrated: bool,
    /// Shards in the map in force, and how many of them are Ready.
    pub shards: i32,
    pub shards_ready: i32,
}

/// The three conditions of a ChatCluster.
pub fn cluster_conditions(
    previous: &[Condition],
    problems: &[Problem],
    rollout: Rollout,
    now: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut c = previous.to_vec();
    match problems.first() {
        Some(p) => {
            let message = problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            set_condition(
                &mut c, "Degraded", true, p.reason, &message, now, generation,
            );
        }
        None => set_condition(
            &mut c,
            "Degraded",
            false,
            "SpecValid",
            "the spec is valid",
            now,
            generation,
        ),
    }
    let settled = rollout.migrated
        && rollout.ready == rollout.desired
        && rollout.updated == rollout.desired
        && rollout.persisters_ready == rollout.persisters_desired
        && rollout.shards_ready == rollout.shards;
    let (reason, message) = if !rollout.migrated {
        ("Migrating", "the databases are being migrated".to_owned())
    } else if rollout.updated < rollout.desired {
        (
            "RollingOut",
            format!(
                "{} of {} chat-nodes run the current spec",
                rollout.updated, rollout.desired
            ),
        )
    } else if rollout.ready < rollout.desired {
        (
            "WaitingForNodes",
            format!(
                "{} of {} chat-nodes are ready",
                rollout.ready, rollout.desired
            ),
        )
    } else if rollout.persisters_ready < rollout.persisters_desired {
        (
            "WaitingForPersisters",
            format!(
                "{} of {} persisters are ready",
                rollout.persisters_ready, rollout.persisters_desired
            ),
        )
    } else if rollout.shards_ready < rollout.shards {
        (
            "WaitingForShards",
            format!(
                "{} of {} shards are ready",
                rollout.shards_ready, rollout.shards
            ),
        )
    } else {
        (
            "Settled",
            "every chat-node and persister is ready".to_owned(),
        )
    };
    set_condition(
        &mut c,
        "Progressing",
        !settled,
        reason,
        &message,
        now,
        generation,
    );
    let ready = settled && problems.is_empty();
    let (reason, message) = match (problems.first(), settled) {
        (Some(p), _) => (p.reason, format!("degraded: {}", p.message)),
        (None, false) => (reason, message),
        (None, true) => ("AllReady", format!("{} chat-nodes ready", rollout.ready)),
    };
    set_condition(&mut c, "Ready", ready, reason, &message, now, generation);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_crd::resources::{ChatShardSpec, SlotString};

    fn shard(name: &str, slots: &[&str]) -> ChatShard {
        let spec: ChatShardSpec = serde_json::from_value(serde_json::json!({
            "clusterRef": {"name": "alpha"},
            "slots": slots,
            "postgres": {"secretRef": {"name": format!("{name}-db")}}
        }))
        .unwrap();
        ChatShard::new(name, spec)
    }

    #[test]
    fn the_shard_map_must_cover_every_slot_once() {
        let map = shard_map(&[shard("b", &["2048-4095"]), shard("a", &["0-2047"])]).unwrap();
        assert_eq!(
            map.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(!map[0].ready, "no Ready condition yet");
        let err = shard_map(&[shard("a", &["0-2000"]), shard("b", &["2048-4095"])]).unwrap_err();
        assert_eq!(err, "slots 2001-2047 belong to no shard");
        let err = shard_map(&[shard("a", &["0-2100"]), shard("b", &["2048-4095"])]).unwrap_err();
        assert_eq!(err, "slots 2048-2100 are claimed by both a and b");
        let mut bad = shard("a", &["0-4095"]);
        bad.spec.slots = vec![SlotString("9000".into())];
        assert!(shard_map(&[bad]).unwrap_err().starts_with("ChatShard a:"));
        assert!(shard_map(&[]).unwrap_err().contains("no ChatShard"));
    }

    #[test]
    fn scaling_down_takes_members_out_of_the_ring_first() {
        use parley_crd::resources::RingMember;
        let member = |o: i32| RingMember {
            name: format!("alpha-node-{o}"),
            ordinal: o,
            worker_id: o,
            endpoint: String::new(),
        };
        let ring = |ords: &[i32]| RingStatus {
            epoch: 1,
            members: ords.iter().map(|o| member(*o)).collect(),
        };
        // Base 8: desired 2 keeps ordinals 8 and 9.
        assert_eq!(
            statefulset_replicas(2, 3, 11, None),
            (3, false),
            "scaling up is immediate"
        );
        assert_eq!(
            statefulset_replicas(3, 2, 10, Some(&ring(&[8, 9, 10]))),
            (3, true),
            "10 is still in the ring"
        );
        assert_eq!(
            statefulset_replicas(3, 2, 10, Some(&ring(&[8, 9]))),
            (2, false),
            "out of the ring: shrink"
        );
    }

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
        let c = cluster_conditions(&[], &[], settled, "t1", Some(4));
        let get = |c: &[Condition], t: &str| c.iter().find(|x| x.type_ == t).unwrap().clone();
        assert_eq!(get(&c, "Ready").status, "True");
        assert_eq!(get(&c, "Progressing").status, "False");
        assert_eq!(get(&c, "Degraded").status, "False");
        assert_eq!(get(&c, "Ready").observed_generation, Some(4));

        let scaling = Rollout {
            ready: 2,
            ..settled
        };
        let c2 = cluster_conditions(&c, &[], scaling, "t2", Some(5));
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
        let c4 = cluster_conditions(&c, &[], shard_behind, "t4", Some(5));
        assert_eq!(get(&c4, "Ready").status, "False", "a shard is not ready");
        assert_eq!(get(&c4, "Ready").reason, "WaitingForShards");
        assert_eq!(get(&c4, "Progressing").message, "1 of 2 shards are ready");

        let problem = Problem {
            reason: "InvalidShardMap",
            message: "slots 2048-4095 belong to no shard".into(),
        };
        let c3 = cluster_conditions(&c2, &[problem], settled, "t3", Some(6));
        assert_eq!(get(&c3, "Degraded").status, "True");
        assert_eq!(get(&c3, "Degraded").reason, "InvalidShardMap");
        assert_eq!(get(&c3, "Ready").status, "False");
        assert!(get(&c3, "Ready").message.contains("2048-4095"));
    }

    fn pod(name: &str, ordinal: i32, ready: bool, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {"apps.kubernetes.io/pod-index": ordinal.to_string()},
                "deletionTimestamp": deleting.then_some("2026-11-22T00:00:00Z"),
            },
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_ring_is_the_ready_pods_of_the_wanted_ordinals() {
        let workers = WorkerIdRange { base: 8, size: 8 };
        let pods = [
            pod("chat-node-10", 10, true, false),
            pod("chat-node-8", 8, true, false),
            pod("chat-node-9", 9, false, false),  // not ready
            pod("chat-node-11", 11, true, true),  // stopping
            pod("chat-node-12", 12, true, false), // leaving: desired is 4
            pod("chat-node-3", 3, true, false),   // from an older range
        ];
        let members = ring_members(&pods, "chat", "ns", workers, 4);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["chat-node-8", "chat-node-10"]);
        assert_eq!(members[1].worker_id, 10);
        assert_eq!(
            members[1].endpoint,
            "http://chat-node-10.chat-nodes.ns.svc:9180"
        );

        let first = next_ring(None, members.clone());
        assert_eq!(first.epoch, 1);
        assert_eq!(
            next_ring(Some(&first), members.clone()).epoch,
            1,
            "same members"
        );
        let fewer = next_ring(Some(&first), members[..1].to_vec());
        assert_eq!(fewer.epoch, 2);
        assert_eq!(fewer.members.len(), 1);
    }

    fn job(status: serde_json::Value) -> Job {
        Job {
            status: Some(serde_json::from_value(status).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn a_migration_succeeds_or_fails_for_good_by_its_status() {
        let running = job(serde_json::json!({"active": 1, "failed": 2}));
        assert!(!job_succeeded(&running));
        assert_eq!(job_failure(&running), None, "retries are not failure");
        assert!(job_succeeded(&job(serde_json::json!({"succeeded": 1}))));
        let failed = job(serde_json::json!({"failed": 11, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}
        ]}));
        assert_eq!(
            job_failure(&failed).as_deref(),
            Some("Job has reached the specified backoff limit")
        );
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
            reason: "InvalidShardMap",
            message: m.into(),
        };
        let fine = cluster_conditions(&[], &[], ok, "t0", Some(1));
        assert_eq!(degraded_event(&[], &fine), None);
        let gap = cluster_conditions(&fine, &[problem("gap 1-2")], ok, "t1", Some(2));
        let e = degraded_event(&fine, &gap).unwrap();
        assert!(e.warning);
        assert_eq!(
            (e.reason.as_str(), e.note.as_str()),
            ("InvalidShardMap", "gap 1-2")
        );
        let again = cluster_conditions(&gap, &[problem("gap 1-2")], ok, "t2", Some(2));
        assert_eq!(degraded_event(&gap, &again), None, "nothing new");
        let other = cluster_conditions(&again, &[problem("gap 3-4")], ok, "t3", Some(3));
        assert_eq!(
            degraded_event(&again, &other).unwrap().note,
            "gap 3-4",
            "a new problem"
        );
        let mended = cluster_conditions(&other, &[], ok, "t4", Some(4));
        let e = degraded_event(&other, &mended).unwrap();
        assert!(!e.warning);
        assert_eq!(e.reason, "SpecValid");
    }
}
