//! Labels, owner references and the settings every builder shares (names: [`super::names`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource as _;
use parley_crd::resources::{ChatCluster, ShardStatus, WorkerIdRange};

use super::names::{COMPONENT_LABEL, Component, INSTANCE_LABEL, MANAGED_BY_LABEL, Names};

/// The field manager of every server-side apply.
pub const MANAGER: &str = "parley-operator";

/// Ports of a chat-node.
pub const HTTP_PORT: i32 = 8080;
/// The chat-nodes' node-to-node port (the ring's endpoints).
pub const INTERNAL_PORT: i32 = 9180;
/// The persisters' health port.
pub const PERSISTER_PORT: i32 = 8090;

/// Where pods find the Secrets they mount.
pub const SECRETS_DIR: &str = "/var/run/parley/secrets";
/// Where pods find the `<name>-shards` Secret's map.
pub const SHARDS_DIR: &str = "/var/run/parley/shards";

/// What the controller decided that the builders need besides the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The cluster's worker-ID range: the StatefulSet's first ordinal.
    pub workers: WorkerIdRange,
    /// The shard map in force (names and slots; URLs are in the `<name>-shards` Secret).
    pub shards: Vec<ShardStatus>,
    /// Name of the Secret holding the JWT secret (`key`), given or generated.
    pub jwt_secret: (String, String),
}

/// The cluster's namespace (`default` when it has none, as a builder's input may).
pub fn namespace(cluster: &ChatCluster) -> String {
    cluster
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// `app.kubernetes.io/*` labels of a component.
pub fn labels(cluster: &ChatCluster, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "parley".into()),
        (INSTANCE_LABEL.into(), Names::of(cluster).cluster().into()),
        (COMPONENT_LABEL.into(), component.as_str().into()),
        (MANAGED_BY_LABEL.into(), MANAGER.into()),
    ])
}

/// Labels that select a component's pods (stable across operator versions).
pub fn selector(cluster: &ChatCluster, component: Component) -> BTreeMap<String, String> {
    Names::of(cluster).selector(component)
}

/// A label selector as the API's `labelSelector` query parameter spells it (`k=v,k=v`).
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The owner reference that makes the cluster's children go away with it.
pub fn owner(cluster: &ChatCluster) -> OwnerReference {
    cluster
        .controller_owner_ref(&())
        .expect("a ChatCluster read from the API has a name and uid")
}

/// Metadata of a child object.
pub fn meta(cluster: &ChatCluster, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace(cluster)),
        labels: Some(labels(cluster, component)),
        owner_references: Some(vec![owner(cluster)]),
        ..Default::default()
    }
}

/// `<prefix>` of the cluster's Kafka topics and Redis keys.
pub fn topic_prefix(cluster: &ChatCluster) -> String {
    cluster
        .spec
        .kafka
        .topic_prefix
        .clone()
        .unwrap_or_else(|| Names::of(cluster).cluster().to_owned())
}

#[cfg(test)]
pub mod fixtures {
    //! A ChatCluster as the API server would hand it over, with chainable changes.
    use super::*;

    pub fn cluster() -> ChatCluster {
        let spec: parley_crd::resources::ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": 3,
            "image": "parley/chat-node:0.1.0",
            "redis": {"url": "redis://redis:6379"},
            "kafka": {"bootstrapServers": "kafka:9092", "topicPrefix": "alpha", "partitions": 12},
            "directory": {"secretRef": {"name": "alpha-directory", "key": "url"}},
            "media": {"bucket": "alpha-media", "endpoint": "http://minio:9000", "credentialsSecretRef": {"name": "alpha-s3"}},
            "moderation": {"wordListConfigMapRef": {"name": "words", "key": "words.txt"}, "policy": "mask"},
            "exposure": {"ingress": {"host": "chat.example.com", "className": "nginx"}},
            "persister": {"replicas": 2}
        }))
        .unwrap();
        let mut c = ChatCluster::new("alpha", spec);
        c.metadata.namespace = Some("chat".into());
        c.metadata.uid = Some("uid-alpha".into());
        c.metadata.generation = Some(1);
        c
    }

    /// `cluster()` with every optional setting on: the Redis URL from a Secret, a JWT
    /// secret of the user's, a word list, a Snowflake epoch, scheduling, resources.
    pub fn everything() -> ChatCluster {
        let mut c = cluster();
        let extra: parley_crd::resources::ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": 2,
            "image": "parley/chat-node:0.1.0",
            "imagePullPolicy": "IfNotPresent",
            "redis": {"secretRef": {"name": "alpha-redis", "key": "url"}},
            "kafka": {"bootstrapServers": "kafka:9092", "topicPrefix": "alpha", "partitions": 12, "replicationFactor": 1},
            "directory": {"secretRef": {"name": "alpha-directory", "key": "url"}, "poolSize": 5},
            "media": {"bucket": "alpha-media", "endpoint": "http://minio:9000", "region": "eu-west-1", "credentialsSecretRef": {"name": "alpha-s3"}},
            "jwtSecretRef": {"name": "alpha-jwt-given", "key": "token-secret"},
            "moderation": {"wordListConfigMapRef": {"name": "words", "key": "words.txt"}, "policy": "reject"},
            "exposure": {"ingress": {"host": "chat.example.com", "className": "traefik", "tlsSecretName": "chat-tls"}},
            "persister": {"replicas": 1, "batchSize": 100, "lingerMs": 5, "resources": {"requests": {"cpu": "50m"}}},
            "snowflakeEpochMs": 1_704_067_200_000_i64,
            "heartbeatIntervalMs": 10000,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "scheduling": {
                "nodeSelector": {"parley.dev/real-node": "true"},
                "tolerations": [{"key": "parley.dev/real-node", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
            }
        }))
        .unwrap();
        c.spec = extra;
        c
    }

    /// What the operator decides for [`everything`]: the user's JWT Secret.
    pub fn everything_decided() -> Decided {
        Decided {
            jwt_secret: ("alpha-jwt-given".into(), "token-secret".into()),
            ..decided()
        }
    }

    pub fn decided() -> Decided {
        Decided {
            workers: WorkerIdRange { base: 8, size: 8 },
            shards: vec![
                ShardStatus {
                    name: "alpha-a".into(),
                    slots: vec!["0-2047".into()],
                    ready: true,
                },
                ShardStatus {
                    name: "alpha-b".into(),
                    slots: vec!["2048-4095".into()],
                    ready: true,
                },
            ],
            jwt_secret: ("alpha-jwt".into(), "secret".into()),
        }
    }
}
