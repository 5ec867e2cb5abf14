//! The shard map from a cluster's ChatShards, and what a migration Job says.

use k8s_openapi::api::batch::v1::Job;
use parley_crd::resources::{ChatShard, ShardStatus};
use parley_crd::{ShardMap, SlotRange};

use crate::resources::SHARDS_ANNOTATION;

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
        .and_then(|a| a.get(SHARDS_ANNOTATION))
        .into_iter()
        .flat_map(|list| list.split(','))
        .filter(|s| !s.is_empty())
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
}
