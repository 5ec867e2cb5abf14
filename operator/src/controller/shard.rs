//! Reconciles a `ChatShard`: its Secret must exist and its slots parse; Ready once its
//! cluster's migration has run. The cluster controller watches shards too (the map).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use parley_crd::SlotRange;
use parley_crd::resources::{ChatShard, ChatShardStatus, SecretKeyRef};

use super::{Context, now};
use crate::error::{Error, Result};
use crate::status::{
    ConditionState, ConditionType, Reason, Stamp, job_succeeded, migrated_shards, set_condition,
};

const KIND: &str = "ChatShard";

pub async fn reconcile(shard: Arc<ChatShard>, ctx: Arc<Context>) -> Result<Action> {
    let key = super::key(&*shard);
    let action = reconcile_shard(shard, &ctx).await?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

async fn reconcile_shard(shard: Arc<ChatShard>, ctx: &Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled(KIND);
    let ns = shard.namespace().ok_or(Error::Missing("namespace"))?;
    let generation = shard.metadata.generation;
    let mut status: ChatShardStatus = shard.status.clone().unwrap_or_default();
    let bad_slots: Vec<String> = shard
        .spec
        .slots
        .iter()
        .filter(|s| s.0.parse::<SlotRange>().is_err())
        .map(|s| s.0.clone())
        .collect();
    let secret = &shard.spec.postgres.secret_ref;
    let has_secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&secret.name)
        .await?
        .and_then(|s| s.data)
        .is_some_and(|d| d.contains_key(&secret.key));
    let cluster = &shard.spec.cluster_ref.name;
    let migrated = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={cluster},app.kubernetes.io/component=migrate"
        )))
        .await?
        .items
        .iter()
        .any(|j| migrated_shard(j, &shard.name_any()));
    let verdict = verdict(&Observed {
        bad_slots: &bad_slots,
        has_secret,
        migrated,
        secret,
        cluster,
    });
    let stamp = Stamp::at(now(), generation);
    let ready = verdict.ready;
    for (type_, status_) in [
        (ConditionType::Degraded, verdict.degraded),
        (ConditionType::Ready, verdict.ready),
    ] {
        let state = ConditionState {
            type_,
            status: status_,
            reason: verdict.reason,
            message: verdict.message.clone(),
        };
        set_condition(&mut status.conditions, state, &stamp);
    }
    if ready {
        status.schema_version = Some(1);
    }
    status.observed_generation = generation;
    Api::<ChatShard>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &shard.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    Ok(Action::requeue(if ready {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(10)
    }))
}

/// What the shard controller read about a ChatShard.
#[derive(Debug)]
struct Observed<'a> {
    /// Its slot ranges that do not parse.
    bad_slots: &'a [String],
    /// Whether its Postgres Secret and key exist.
    has_secret: bool,
    /// Whether a succeeded migration Job of its cluster covered it.
    migrated: bool,
    secret: &'a SecretKeyRef,
    cluster: &'a str,
}

/// A ChatShard's conditions: `Degraded` while its spec is wrong, `Ready` once migrated.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    degraded: bool,
    ready: bool,
    reason: Reason,
    message: String,
}

fn verdict(seen: &Observed<'_>) -> Verdict {
    let (ready, reason, message) = if !seen.bad_slots.is_empty() {
        (
            false,
            Reason::InvalidSlots,
            format!(
                "not slot ranges within 0-4095: {}",
                seen.bad_slots.join(", ")
            ),
        )
    } else if !seen.has_secret {
        let secret = seen.secret;
        (
            false,
            Reason::MissingSecret,
            format!("Secret {}/{} not found", secret.name, secret.key),
        )
    } else if !seen.migrated {
        (
            false,
            Reason::Migrating,
            format!("waiting for ChatCluster {}'s migration", seen.cluster),
        )
    } else {
        (true, Reason::Migrated, "the shard schema is applied".into())
    };
    Verdict {
        degraded: !seen.bad_slots.is_empty() || !seen.has_secret,
        ready,
        reason,
        message,
    }
}

/// Whether `job` is a migration that succeeded and covered the shard `name` (an older
/// migration of the cluster, from before the shard joined, does not count).
fn migrated_shard(job: &Job, name: &str) -> bool {
    job_succeeded(job) && migrated_shards(job).any(|s| s == name)
}

// The signature kube-runtime's Controller calls.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(shard: Arc<ChatShard>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!("reconciling a ChatShard failed: {error}");
    ctx.metrics.failed(KIND, error.metric_label());
    let key = super::key(&*shard);
    Action::requeue(ctx.backoff.failed(&key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobStatus;

    fn job(shards: Option<&str>, succeeded: i32) -> Job {
        let mut j = Job::default();
        if let Some(list) = shards {
            j.metadata.annotations = Some(
                [(
                    crate::resources::SHARDS_ANNOTATION.to_owned(),
                    list.to_owned(),
                )]
                .into(),
            );
        }
        j.status = Some(JobStatus {
            succeeded: Some(succeeded),
            ..Default::default()
        });
        j
    }

    #[test]
    fn a_shard_is_migrated_by_a_succeeded_job_that_names_it() {
        assert!(migrated_shard(&job(Some("a,b"), 1), "b"));
        assert!(!migrated_shard(&job(Some("a,b"), 0), "b"), "not yet done");
        assert!(!migrated_shard(&job(Some("a"), 1), "b"), "before b joined");
        assert!(
            !migrated_shard(&job(Some("ab"), 1), "b"),
            "names, not substrings"
        );
        assert!(!migrated_shard(&job(None, 1), "a"));
    }
}
