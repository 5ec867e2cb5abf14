//! The ring: which chat-node pods are members, its epoch, and how far the StatefulSet may
//! shrink while members leave it.

use k8s_openapi::api::core::v1::Pod;
use parley_crd::resources::{RingMember, RingStatus, WorkerIdRange};

use crate::resources::names::{Names, POD_INDEX_LABEL};

/// Which chat-node pods may be ring members: those of the cluster `names` in `namespace`
/// whose ordinal is among the first `desired` of `workers`.
#[derive(Debug, Clone, Copy)]
pub struct RingScope<'a> {
    /// The cluster's names (its headless Service gives the endpoints).
    pub names: &'a Names,
    /// The cluster's namespace.
    pub namespace: &'a str,
    /// The cluster's worker-ID range.
    pub workers: WorkerIdRange,
    /// `spec.replicas`.
    pub desired: i32,
}

/// The ring members among a cluster's chat-node `pods`: Ready, not being deleted, with an
/// ordinal (= worker ID) among the `desired` ones of the cluster's range; by ordinal.
///
/// A pod leaves the list the moment it is being deleted (a rollout, a scale-down, a delete),
/// while its preStop hook still runs. That is safe and is what makes a drain quick: a node
/// that finds itself off the list gives its channels up (its sends in progress finish, its
/// lease goes, the others are told at once), and the others keep a member that left the
/// list in their ring until its lease is gone, so a channel never has two owners.
pub fn ring_members(pods: &[Pod], scope: &RingScope<'_>) -> Vec<RingMember> {
    let workers = scope.workers;
    let wanted = workers.base..workers.base + scope.desired.min(workers.size);
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
                .get(POD_INDEX_LABEL)?
                .parse()
                .ok()?;
            wanted.contains(&ordinal).then(|| RingMember {
                endpoint: scope.names.pod_endpoint(&pod, scope.namespace),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let names = Names::new("chat");
        let scope = RingScope {
            names: &names,
            namespace: "ns",
            workers,
            desired: 4,
        };
        let members = ring_members(&pods, &scope);
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
}
