//! Reconciles a `ChatShard`: its Secret must exist and its slots parse; Ready once its
//! cluster's migration has run. The cluster controller watches shards too (the map).
//!
//! ```text
//!   observe: the Postgres Secret (GET), the cluster's migration Jobs (LIST)
//!     └► verdict (pure): Degraded while the spec is wrong, Ready once migrated
//!          └► status patch ──► Action (requeue in 2 min when Ready, else 10 s)
//! ```

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use parley_crd::SlotRange;
use parley_crd::resources::{ChatShard, SecretKeyRef};

use super::{Context, now};
use crate::error::{Error, Result};
use crate::resources::{Component, Names, selector_string};
use crate::status::{
    ConditionState, ConditionType, Reason, Stamp, job_succeeded, migrated_shards, set_condition,
};

const KIND: &str = "ChatShard";

/// Reconciles one ChatShard (kube-runtime's Controller calls it); a success resets its
/// back-off.
pub async fn reconcile(shard: Arc<ChatShard>, ctx: Arc<Context>) -> Result<Action> {
    let key = super::key(&*shard);
    let action = reconcile_shard(&shard, &ctx).await?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

async fn reconcile_shard(shard: &ChatShard, ctx: &Context) -> Result<Action> {
    ctx.metrics.reconciled(KIND);
    let ns = shard.namespace().ok_or(Error::Missing("namespace"))?;
    let seen = observe(shard, ctx, &ns).await?;
    let verdict = verdict(shard, &seen);
    let mut status = shard.status.clone().unwrap_or_default();
    let stamp = Stamp::at(now(), shard.metadata.generation);
    for (type_, on) in [
        (ConditionType::Degraded, verdict.degraded),
        (ConditionType::Ready, verdict.ready),
    ] {
        let state = ConditionState {
            type_,
            status: on,
            reason: verdict.reason,
            message: verdict.message.clone(),
        };
        set_condition(&mut status.conditions, state, &stamp);
    }
    if verdict.ready {
        status.schema_version = Some(1);
    }
    status.observed_generation = shard.metadata.generation;
    Api::<ChatShard>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &shard.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    Ok(Action::requeue(if verdict.ready {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(10)
    }))
}

/// What the shard controller read about a ChatShard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    /// Whether its Postgres Secret and key exist.
    has_secret: bool,
    /// Whether a succeeded migration Job of its cluster covered it.
    migrated: bool,
}

/// Reads the shard's Postgres Secret and lists its cluster's migration Jobs.
async fn observe(shard: &ChatShard, ctx: &Context, ns: &str) -> Result<Observed> {
    let secret = &shard.spec.postgres.secret_ref;
    let has_secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&secret.name)
        .await?
        .and_then(|s| s.data)
        .is_some_and(|d| d.contains_key(&secret.key));
    let names = Names::new(shard.spec.cluster_ref.name.clone());
    let migrations = selector_string(&names.selector(Component::Migrate));
    let migrated = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&migrations))
        .await?
        .items
        .iter()
        .any(|j| migrated_shard(j, &shard.name_any()));
    Ok(Observed {
        has_secret,
        migrated,
    })
}

/// A ChatShard's conditions: `Degraded` while its spec is wrong, `Ready` once migrated.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    degraded: bool,
    ready: bool,
    reason: Reason,
    message: String,
}

fn verdict(shard: &ChatShard, seen: &Observed) -> Verdict {
    let bad_slots: Vec<&str> = shard
        .spec
        .slots
        .iter()
        .filter(|s| s.0.parse::<SlotRange>().is_err())
        .map(|s| s.0.as_str())
        .collect();
    let secret: &SecretKeyRef = &shard.spec.postgres.secret_ref;
    let (ready, reason, message) = if !bad_slots.is_empty() {
        (
            false,
            Reason::InvalidSlots,
            format!("not slot ranges within 0-4095: {}", bad_slots.join(", ")),
        )
    } else if !seen.has_secret {
        (
            false,
            Reason::MissingSecret,
            format!("Secret {}/{} not found", secret.name, secret.key),
        )
    } else if !seen.migrated {
        (
            false,
            Reason::Migrating,
            format!(
                "waiting for ChatCluster {}'s migration",
                shard.spec.cluster_ref.name
            ),
        )
    } else {
        (true, Reason::Migrated, "the shard schema is applied".into())
    };
    Verdict {
        degraded: !bad_slots.is_empty() || !seen.has_secret,
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

/// On failure: count it and try again with back-off.
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
    use crate::controller::fixtures::{self, Exchange, Reply};
    use k8s_openapi::api::batch::v1::JobStatus;
    use parley_crd::resources::SlotString;

    fn job(shards: Option<&str>, succeeded: i32) -> Job {
        let mut j = Job::default();
        j.metadata.name = Some("alpha-migrate-0".into());
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

    fn observed(has_secret: bool, migrated: bool) -> Observed {
        Observed {
            has_secret,
            migrated,
        }
    }

    #[test]
    fn the_verdict_names_the_first_thing_wrong() {
        let ok = fixtures::shard("alpha-a", &["0-4095"]);
        let v = verdict(&ok, &observed(true, true));
        assert_eq!(
            (v.degraded, v.ready, v.reason),
            (false, true, Reason::Migrated)
        );
        let v = verdict(&ok, &observed(true, false));
        assert_eq!(
            (v.degraded, v.ready, v.reason),
            (false, false, Reason::Migrating)
        );
        assert_eq!(v.message, "waiting for ChatCluster alpha's migration");
        let v = verdict(&ok, &observed(false, true));
        assert_eq!((v.degraded, v.reason), (true, Reason::MissingSecret));
        assert_eq!(v.message, "Secret alpha-a-db/url not found");
        let mut bad = ok;
        bad.spec.slots = vec![SlotString("9000".into()), SlotString("0-10".into())];
        let v = verdict(&bad, &observed(false, false));
        assert_eq!((v.degraded, v.reason), (true, Reason::InvalidSlots));
        assert_eq!(v.message, "not slot ranges within 0-4095: 9000");
    }

    #[tokio::test]
    async fn a_migrated_shard_with_its_secret_becomes_ready() {
        let shard = fixtures::shard("alpha-a", &["0-4095"]);
        let db = fixtures::secret("alpha-a-db", &[("url", "postgres://a")]);
        let status_path = format!(
            "{}/status",
            fixtures::path::<ChatShard>(Some("chat"), Some("alpha-a"))
        );
        let script = vec![
            Exchange::get(
                fixtures::path::<Secret>(Some("chat"), Some("alpha-a-db")),
                Reply::object(&db),
            ),
            Exchange::get(
                fixtures::path::<Job>(Some("chat"), None),
                Reply::list(&[job(Some("alpha-a"), 1)]),
            ),
            Exchange::patch(status_path.clone(), Reply::object(&shard)),
        ];
        let (client, server) = fixtures::client();
        let ctx = Arc::new(Context::new(client, Arc::default(), "test"));
        let (result, seen) = server.replay(script, reconcile(Arc::new(shard), ctx)).await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(120)));
        assert_eq!(
            seen[1].query,
            "&labelSelector=app.kubernetes.io%2Fcomponent%3Dmigrate%2Capp.kubernetes.io%2Finstance%3Dalpha",
            "the cluster's migrations"
        );
        let status = &seen[2].body["status"];
        assert_eq!(status["schemaVersion"], 1);
        let conditions = status["conditions"].as_array().unwrap();
        let types: Vec<(&str, &str)> = conditions
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(types, [("Degraded", "False"), ("Ready", "True")]);
    }
}
