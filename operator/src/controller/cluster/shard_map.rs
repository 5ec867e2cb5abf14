//! Phase 1, the shard map: the ChatShards naming this cluster, and the map in force.

use kube::api::ListParams;
use parley_crd::resources::{ChatShard, ShardStatus};

use crate::controller::target::Target;
use crate::error::Result;
use crate::status::{Problem, Reason, shard_map};

/// What phase 1 found.
#[derive(Debug, Clone, PartialEq)]
pub struct Shards {
    /// The ChatShards whose `clusterRef` names this cluster, as listed.
    pub shards: Vec<ChatShard>,
    /// The map in force: the one the shards describe, or, when that is invalid, the last
    /// good one (from the status), so a typo never takes slots away from running nodes.
    pub in_force: Vec<ShardStatus>,
    /// [`Reason::InvalidShardMap`] when the shards leave a gap, overlap or do not parse.
    pub problem: Option<Problem>,
}

/// Phase 1 from the shards already read: `previous` is the map in the status.
pub fn decide(shards: Vec<ChatShard>, previous: &[ShardStatus]) -> Shards {
    match shard_map(&shards) {
        Ok(in_force) => Shards {
            shards,
            in_force,
            problem: None,
        },
        Err(message) => Shards {
            shards,
            in_force: previous.to_vec(),
            problem: Some(Problem {
                reason: Reason::InvalidShardMap,
                message,
            }),
        },
    }
}

/// Phase 1: lists the namespace's ChatShards (one request) and decides the map.
pub async fn read(t: &Target<'_>, previous: &[ShardStatus]) -> Result<Shards> {
    let shards: Vec<ChatShard> = t
        .api::<ChatShard>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.spec.cluster_ref.name == t.names.cluster())
        .collect();
    Ok(decide(shards, previous))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::shard;

    #[test]
    fn an_invalid_map_keeps_the_last_good_one_in_force() {
        let good = decide(
            vec![
                shard("alpha-b", &["2048-4095"]),
                shard("alpha-a", &["0-2047"]),
            ],
            &[],
        );
        assert_eq!(good.problem, None);
        let names: Vec<&str> = good.in_force.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["alpha-a", "alpha-b"]);

        let gap = decide(vec![shard("alpha-a", &["0-2000"])], &good.in_force);
        assert_eq!(gap.in_force, good.in_force, "the last good map stays");
        let problem = gap.problem.unwrap();
        assert_eq!(problem.reason, Reason::InvalidShardMap);
        assert_eq!(problem.message, "slots 2001-4095 belong to no shard");
        assert_eq!(
            gap.shards.len(),
            1,
            "the shards as listed, for their Secrets"
        );
    }
}
