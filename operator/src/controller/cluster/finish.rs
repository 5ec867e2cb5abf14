//! The last step: the status (conditions from the problems and the rollout, summaries) and
//! an Event when the cluster becomes, or stops being, Degraded.

use std::time::Duration;

use kube::Resource as _;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use parley_crd::resources::{ChatCluster, ChatClusterStatus, ShardStatus};

use crate::controller::target::Target;
use crate::controller::{Context, now, publish_event};
use crate::error::Result;
use crate::status::{Problem, Rollout, Stamp, cluster_conditions, degraded_event};

/// Everything a reconcile concluded.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// In the order found; the first names the `Degraded` reason.
    pub problems: Vec<Problem>,
    /// The status so far (worker IDs, ring, replicas, selector); conditions and summaries
    /// are filled in here.
    pub status: ChatClusterStatus,
    /// When to reconcile again if nothing is wrong (else in a minute).
    pub requeue: Option<Duration>,
    /// The shard map in force.
    pub shards: Vec<ShardStatus>,
    /// What the workloads showed (all zero when nothing was rendered).
    pub rollout: Rollout,
}

impl Outcome {
    /// When to reconcile again: in 30 s while anything is wrong.
    pub fn action(&self) -> Action {
        match (self.problems.is_empty(), self.requeue) {
            (false, _) => Action::requeue(Duration::from_secs(30)),
            (true, Some(d)) => Action::requeue(d),
            (true, None) => Action::requeue(Duration::from_secs(60)),
        }
    }
}

/// The status `outcome` makes of `cluster`'s, stamped `stamp`.
pub fn status(cluster: &ChatCluster, outcome: Outcome, stamp: &Stamp) -> ChatClusterStatus {
    let Outcome {
        problems,
        mut status,
        shards,
        rollout,
        ..
    } = outcome;
    status.conditions = cluster_conditions(&status.conditions, &problems, rollout, stamp);
    status.observed_generation = cluster.metadata.generation;
    status.ready_replicas = rollout.ready;
    status.replicas_summary = Some(format!("{}/{}", rollout.ready, rollout.desired));
    status.shards_summary = Some(format!(
        "{}/{}",
        shards.iter().filter(|s| s.ready).count(),
        shards.len()
    ));
    status.shards = shards;
    status
}

/// Writes the status (a merge patch) and, when `Degraded` changed, an Event; when to
/// reconcile again. A failed Event is only logged.
pub async fn finish(t: &Target<'_>, ctx: &Context, outcome: Outcome) -> Result<Action> {
    let action = outcome.action();
    let previous = outcome.status.conditions.clone();
    let stamp = Stamp::at(now(), t.cluster.metadata.generation);
    let status = status(t.cluster, outcome, &stamp);
    t.api::<ChatCluster>()
        .patch_status(
            t.names.cluster(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    if let Some(e) = degraded_event(&previous, &status.conditions) {
        let mut reference = t.cluster.object_ref(&());
        reference.resource_version = None;
        if let Err(err) = publish_event(ctx, reference, &e).await {
            tracing::warn!("publishing an event: {err}");
        }
    }
    Ok(action)
}
