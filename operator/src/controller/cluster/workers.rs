//! Phase 2, worker IDs: a range of Snowflake worker IDs disjoint from every other
//! ChatCluster's, in any namespace, recorded in the status before anything uses it.

use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams};
use parley_crd::resources::{ChatCluster, WorkerIdRange};
use parley_crd::workers::allocate;

use crate::controller::target::Target;
use crate::error::Result;
use crate::status::{Problem, Reason};

/// What phase 2 decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerIds {
    /// The cluster's range: the one allocated, or (when none is free) the one it had, if any.
    /// Without one nothing is rendered: the pods' ordinals are their worker IDs.
    pub range: Option<WorkerIdRange>,
    /// Whether `range` is new and must be recorded in the status.
    pub record: bool,
    /// [`Reason::WorkerIdsExhausted`] when no range of the replicas' size is free.
    pub problem: Option<Problem>,
}

/// Phase 2 from every ChatCluster as listed: `previous` is the range in the status of the
/// cached object, used when the listed one has none.
pub fn decide(
    cluster: &ChatCluster,
    all: Vec<ChatCluster>,
    previous: Option<WorkerIdRange>,
) -> WorkerIds {
    let uid = cluster.uid();
    let own = all
        .iter()
        .find(|c| c.uid() == uid)
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.worker_id_range)
        .or(previous);
    let others: Vec<_> = all
        .into_iter()
        .filter(|c| c.uid() != uid)
        .filter_map(|c| c.status.and_then(|s| s.worker_id_range))
        .collect();
    match allocate(cluster.spec.replicas, own, &others) {
        Ok(range) => WorkerIds {
            range: Some(range),
            record: own != Some(range),
            problem: None,
        },
        Err(e) => WorkerIds {
            range: own,
            record: false,
            problem: Some(Problem {
                reason: Reason::WorkerIdsExhausted,
                message: e.to_string(),
            }),
        },
    }
}

/// Phase 2: lists every ChatCluster (fresh, not from the cache) and records a new range at
/// once, both under `lock`, so two clusters reconciled at once cannot take the same range.
pub async fn allocate_range(
    t: &Target<'_>,
    lock: &tokio::sync::Mutex<()>,
    previous: Option<WorkerIdRange>,
) -> Result<WorkerIds> {
    let _held = lock.lock().await;
    let all = Api::<ChatCluster>::all(t.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let ids = decide(t.cluster, all, previous);
    if let (true, Some(range)) = (ids.record, ids.range) {
        t.api::<ChatCluster>()
            .patch_status(
                t.names.cluster(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"workerIdRange": range}})),
            )
            .await?;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::cluster;

    fn with_range(name: &str, base: i32, size: i32) -> ChatCluster {
        let mut c = cluster();
        c.metadata.name = Some(name.into());
        c.metadata.uid = Some(format!("uid-{name}"));
        c.status = Some(parley_crd::resources::ChatClusterStatus {
            worker_id_range: Some(WorkerIdRange { base, size }),
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_new_cluster_takes_a_free_range_and_records_it() {
        let me = cluster();
        let ids = decide(&me, vec![with_range("beta", 0, 8), me.clone()], None);
        let range = ids.range.unwrap();
        assert!(range.base >= 8, "disjoint from beta's 0-7: {range:?}");
        assert!(ids.record);
        assert_eq!(ids.problem, None);
        // Reconciled again with the range recorded: nothing to write.
        let mine = with_range("alpha", range.base, range.size);
        let again = decide(&me, vec![with_range("beta", 0, 8), mine], None);
        assert_eq!(again.range, Some(range));
        assert!(!again.record);
    }

    #[test]
    fn no_free_range_is_a_problem_and_keeps_the_old_one() {
        let mut me = cluster();
        me.spec.replicas = 1000;
        let others = vec![with_range("beta", 0, 512)];
        let old = Some(WorkerIdRange { base: 600, size: 8 });
        let ids = decide(&me, others, old);
        assert_eq!(ids.range, old);
        assert!(!ids.record);
        assert_eq!(ids.problem.unwrap().reason, Reason::WorkerIdsExhausted);
    }
}
