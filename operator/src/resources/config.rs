//! `<name>-config`: the settings chat-nodes, persisters and the migration share.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use parley_crd::env;
use parley_crd::resources::{ChatCluster, ModerationPolicy};

use super::names::{Component, Names};
use super::support::*;

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// `<name>-config`: every non-secret setting chat-nodes, persisters and the migration share,
/// as `PARLEY_*` variables; secrets are files. Files only chat-nodes mount (the session and
/// cluster secrets, the word list) are named in the StatefulSet's own env
/// ([`super::statefulset`]), so a persister or migration never points at a file it cannot
/// read.
pub fn config(cluster: &ChatCluster) -> ConfigMap {
    let spec = &cluster.spec;
    let names = Names::of(cluster);
    let mut data = BTreeMap::from([
        (s(env::MODE), s("distributed")),
        (s(env::LISTEN), format!("0.0.0.0:{HTTP_PORT}")),
        (s(env::INTERNAL_LISTEN), format!("0.0.0.0:{INTERNAL_PORT}")),
        (s(env::CLUSTER_NAME), s(names.cluster())),
        (
            s(env::KAFKA_BOOTSTRAP),
            spec.kafka.bootstrap_servers.clone(),
        ),
        (s(env::KAFKA_TOPIC_PREFIX), topic_prefix(cluster)),
        (s(env::KAFKA_PARTITIONS), spec.kafka.partitions.to_string()),
        (s(env::S3_REGION), spec.media.region.clone()),
        (s(env::S3_BUCKET), spec.media.bucket.clone()),
        (
            env::file(env::S3_ACCESS_KEY_ID),
            format!("{SECRETS_DIR}/s3/accessKeyId"),
        ),
        (
            env::file(env::S3_SECRET_ACCESS_KEY),
            format!("{SECRETS_DIR}/s3/secretAccessKey"),
        ),
        (
            env::file(env::DIRECTORY_URL),
            format!("{SECRETS_DIR}/directory/{}", spec.directory.secret_ref.key),
        ),
        (s(env::DB_POOL_SIZE), spec.directory.pool_size.to_string()),
        // The shard map with URLs (`name:slots:url;...`), kept by the operator in the
        // `<name>-shards` Secret; nodes and persisters re-read it when it changes.
        (env::file(env::SHARDS), format!("{SHARDS_DIR}/shards")),
        (
            s(env::HEARTBEAT_INTERVAL_MS),
            spec.heartbeat_interval_ms.to_string(),
        ),
        (
            s(env::MODERATION_POLICY),
            s(match spec.moderation.policy {
                ModerationPolicy::Mask => "mask",
                ModerationPolicy::Reject => "reject",
            }),
        ),
        (
            s(env::PERSISTER_BATCH),
            spec.persister.batch_size.to_string(),
        ),
        (
            s(env::PERSISTER_LINGER_MS),
            spec.persister.linger_ms.to_string(),
        ),
    ]);
    optional_settings(cluster, &mut data);
    ConfigMap {
        metadata: meta(cluster, names.config(), Component::Node),
        data: Some(data),
        ..Default::default()
    }
}

/// The settings only some clusters have: a Redis URL given inline or in a Secret, an S3
/// endpoint, a Snowflake epoch.
fn optional_settings(cluster: &ChatCluster, data: &mut BTreeMap<String, String>) {
    let spec = &cluster.spec;
    if let Some(url) = &spec.redis.url {
        data.insert(s(env::REDIS_URL), url.clone());
    }
    if let Some(r) = &spec.redis.secret_ref {
        data.insert(
            env::file(env::REDIS_URL),
            format!("{SECRETS_DIR}/redis/{}", r.key),
        );
    }
    if let Some(e) = &spec.media.endpoint {
        data.insert(s(env::S3_ENDPOINT), e.clone());
    }
    if let Some(epoch) = spec.snowflake_epoch_ms {
        data.insert(s(env::SNOWFLAKE_EPOCH_MS), epoch.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::cluster;
    use super::*;

    #[test]
    fn config_holds_settings_and_points_at_secret_files() {
        let cm = config(&cluster());
        let d = cm.data.unwrap();
        assert_eq!(d["PARLEY_MODE"], "distributed");
        assert_eq!(d["PARLEY_KAFKA_TOPIC_PREFIX"], "alpha");
        assert_eq!(d["PARLEY_REDIS_URL"], "redis://redis:6379");
        assert_eq!(
            d["PARLEY_DIRECTORY_URL_FILE"],
            "/var/run/parley/secrets/directory/url"
        );
        assert!(
            !d.contains_key("PARLEY_MODERATION_WORDS_FILE"),
            "only chat-nodes mount the word list: it is in their own env"
        );
        assert!(
            d.values().all(|v| !v.contains("password")),
            "no secret value inlined"
        );
        assert_eq!(cm.metadata.owner_references.unwrap()[0].kind, "ChatCluster");
    }
}
