//! The sample a platform team applies (`examples/chatcluster.yaml`: Secrets, a ChatCluster,
//! two ChatShards), read as YAML documents and patched for a test run: backends, images,
//! scheduling, the ingress and the proxies the chat-nodes trust, a unique Kafka topic
//! prefix. Pure: no I/O besides parsing.
//!
//! Secrets are found by following the references of the ChatCluster and ChatShards
//! (`directory.secretRef`, `redis.secretRef`, `media.credentialsSecretRef`,
//! `jwtSecretRef`, each shard's `postgres.secretRef`), so the sample may name them freely.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail, ensure};
use serde::Deserialize as _;
use serde_json::{Map, Value, json};

use super::backends::Backends;

/// The sample's objects, patched.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Secrets (and any other plain objects of the sample), applied first.
    pub support: Vec<Value>,
    pub cluster: Value,
    /// The ChatShards in slot order.
    pub shards: Vec<Value>,
}

/// What a run changes in the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub namespace: String,
    pub backends: Backends,
    pub node_image: String,
    pub pull_policy: String,
    /// Pod `nodeSelector` for every pod the operator renders (none when empty).
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations, as Kubernetes JSON.
    pub tolerations: Vec<Value>,
    pub ingress_host: String,
    pub ingress_class: String,
    /// `exposure.trustedProxies`: the addresses the ingress controller connects to the pods
    /// from, so the chat-nodes' per-address limits count the run's clients one by one (they
    /// all come through the one controller). None when empty.
    pub trusted_proxies: Vec<String>,
    /// Kafka topic (and Redis key) prefix, unique per run.
    pub topic_prefix: String,
    /// Kafka partitions of the run's topics.
    pub partitions: i32,
    pub replicas: i32,
    pub persisters: i32,
    /// A JWT secret of at least 32 bytes.
    pub jwt_secret: String,
}

/// Splits a multi-document YAML text into JSON values (empty documents skipped).
pub fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).with_context(|| format!("YAML document {}", i + 1))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

/// The name of an object.
pub fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// A secret reference `{name, key?}`: the name and key (`default_key` when absent).
fn secret_ref(v: &Value, default_key: &str) -> Option<(String, String)> {
    let name = v["name"].as_str()?.to_owned();
    let key = v["key"].as_str().unwrap_or(default_key).to_owned();
    Some((name, key))
}

/// Sets `stringData[key]` of the Secret `name` among `support`, adding the Secret if the
/// sample lacks it; a `data[key]` of the same key is dropped.
pub fn set_secret(support: &mut Vec<Value>, namespace: &str, name: &str, key: &str, value: &str) {
    let pos = support
        .iter()
        .position(|o| kind(o) == "Secret" && name_of(o) == name);
    let secret = match pos {
        Some(i) => &mut support[i],
        None => {
            support.push(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "Opaque",
            }));
            support.last_mut().expect("just pushed")
        }
    };
    if let Some(data) = secret.get_mut("data").and_then(Value::as_object_mut) {
        data.remove(key);
    }
    let obj = secret.as_object_mut().expect("a Secret is an object");
    let string_data = obj
        .entry("stringData")
        .or_insert_with(|| Value::Object(Map::new()));
    if !string_data.is_object() {
        *string_data = Value::Object(Map::new());
    }
    string_data[key] = json!(value);
}

/// The first slot range of a shard (`"lo-hi"` or `"n"`).
pub fn slot_range(shard: &Value) -> Result<(u16, u16)> {
    let slots = shard["spec"]["slots"]
        .as_array()
        .with_context(|| format!("ChatShard {} has no spec.slots", name_of(shard)))?;
    ensure!(
        slots.len() == 1,
        "ChatShard {} has {} slot ranges; the scenario splits shards with one",
        name_of(shard),
        slots.len()
    );
    parse_range(slots[0].as_str().unwrap_or(""))
}

/// `"lo-hi"` or `"n"`.
pub fn parse_range(s: &str) -> Result<(u16, u16)> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo
        .trim()
        .parse()
        .with_context(|| format!("bad slots {s}"))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .with_context(|| format!("bad slots {s}"))?;
    ensure!(lo <= hi, "bad slots {s}");
    Ok((lo, hi))
}

/// A field of an object, `Null` when absent (indexing a `Map` panics instead).
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a Value {
    obj.get(key).unwrap_or(&Value::Null)
}

/// Reads and patches the sample: the namespace on every object, the ChatCluster's spec, the
/// Secrets its references name (added when the sample lacks them), the ChatShards in slot
/// order each with its database.
pub fn patch(documents: Vec<Value>, p: &Patch) -> Result<Sample> {
    let (mut support, mut cluster, shards) = sort_documents(documents, p)?;
    let cluster_name = name_of(&cluster).to_owned();
    ensure!(
        !cluster_name.is_empty(),
        "the sample's ChatCluster has no name"
    );
    let spec = cluster
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .context("the sample's ChatCluster has no spec")?;
    patch_spec(spec, p);
    patch_backends(spec, &mut support, &cluster_name, p)?;
    let shards = patch_shards(shards, &mut support, &cluster_name, p)?;
    Ok(Sample {
        support,
        cluster,
        shards,
    })
}

/// The documents in the run's namespace, sorted by kind: (Secrets and ConfigMaps, the one
/// ChatCluster, the two ChatShards); any other kind or count is an error.
fn sort_documents(documents: Vec<Value>, p: &Patch) -> Result<(Vec<Value>, Value, Vec<Value>)> {
    let mut support = Vec::new();
    let mut clusters = Vec::new();
    let mut shards = Vec::new();
    for mut doc in documents {
        ensure!(
            doc.is_object(),
            "a document of the sample is not an object: {doc}"
        );
        doc["metadata"]["namespace"] = json!(p.namespace);
        match kind(&doc) {
            "ChatCluster" => clusters.push(doc),
            "ChatShard" => shards.push(doc),
            "Secret" | "ConfigMap" => support.push(doc),
            other => bail!(
                "the sample holds a {other} ({}); the scenario knows Secrets, ConfigMaps, ChatClusters and ChatShards",
                name_of(&doc)
            ),
        }
    }
    ensure!(
        clusters.len() == 1,
        "the sample must hold one ChatCluster, holds {}",
        clusters.len()
    );
    ensure!(
        shards.len() == 2,
        "the sample must hold two ChatShards, holds {}",
        shards.len()
    );
    Ok((support, clusters.remove(0), shards))
}

/// The ChatCluster's spec for the run: replicas, image, small resources, persisters,
/// scheduling, the Ingress and trusted proxies, Kafka.
fn patch_spec(spec: &mut Map<String, Value>, p: &Patch) {
    let b = &p.backends;
    spec.insert("replicas".into(), json!(p.replicas));
    spec.insert("image".into(), json!(p.node_image));
    spec.insert("imagePullPolicy".into(), json!(p.pull_policy));
    // Small requests: the whole cluster shares one node with everything else.
    let small = json!({"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}});
    spec.insert("resources".into(), small.clone());
    let persister = spec.entry("persister").or_insert_with(|| json!({}));
    persister["replicas"] = json!(p.persisters);
    persister["resources"] = small;
    if p.node_selector.is_empty() && p.tolerations.is_empty() {
        spec.remove("scheduling");
    } else {
        spec.insert(
            "scheduling".into(),
            json!({"nodeSelector": p.node_selector, "tolerations": p.tolerations}),
        );
    }
    let mut exposure = json!({"ingress": {"host": p.ingress_host, "className": p.ingress_class}});
    if !p.trusted_proxies.is_empty() {
        exposure["trustedProxies"] = json!(p.trusted_proxies);
    }
    spec.insert("exposure".into(), exposure);
    spec.insert(
        "kafka".into(),
        json!({
            "bootstrapServers": b.kafka_bootstrap,
            "topicPrefix": p.topic_prefix,
            "partitions": p.partitions,
            "replicationFactor": b.kafka_replication_factor,
        }),
    );
}

/// Redis, the directory, S3 and the JWT secret: each through the Secret the spec references
/// (Redis and S3 get one named after the cluster when the sample names none), holding the
/// run's backends.
fn patch_backends(
    spec: &mut Map<String, Value>,
    support: &mut Vec<Value>,
    cluster_name: &str,
    p: &Patch,
) -> Result<()> {
    let b = &p.backends;
    let ns = p.namespace.as_str();
    // Redis: always through a Secret (the URL carries a password).
    let (redis_secret, redis_key) = secret_ref(&field(spec, "redis")["secretRef"], "url")
        .unwrap_or_else(|| (format!("{cluster_name}-redis"), "url".into()));
    spec.insert(
        "redis".into(),
        json!({"secretRef": {"name": redis_secret, "key": redis_key}}),
    );
    set_secret(support, ns, &redis_secret, &redis_key, &b.redis_url);

    let (dir_secret, dir_key) = secret_ref(&field(spec, "directory")["secretRef"], "url")
        .context("the sample's ChatCluster has no spec.directory.secretRef")?;
    set_secret(support, ns, &dir_secret, &dir_key, &b.directory_url);

    let media = spec
        .entry("media")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .context("spec.media is not an object")?;
    media.insert("bucket".into(), json!(b.s3.bucket));
    media.insert("endpoint".into(), json!(b.s3.endpoint));
    media.insert("region".into(), json!(b.s3.region));
    let s3_secret = media
        .get("credentialsSecretRef")
        .and_then(|r| r["name"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{cluster_name}-s3"));
    media.insert(
        "credentialsSecretRef".into(),
        json!({"name": s3_secret.clone()}),
    );
    set_secret(support, ns, &s3_secret, "accessKeyId", &b.s3.access_key_id);
    set_secret(
        support,
        ns,
        &s3_secret,
        "secretAccessKey",
        &b.s3.secret_access_key,
    );

    if let Some((jwt_secret, jwt_key)) = secret_ref(field(spec, "jwtSecretRef"), "secret") {
        set_secret(support, ns, &jwt_secret, &jwt_key, &p.jwt_secret);
    }
    Ok(())
}

/// The ChatShards in slot order, each in the cluster and with the database of its place
/// (`shard_urls[i]`) in the Secret its spec references.
fn patch_shards(
    shards: Vec<Value>,
    support: &mut Vec<Value>,
    cluster_name: &str,
    p: &Patch,
) -> Result<Vec<Value>> {
    let b = &p.backends;
    let ns = p.namespace.as_str();
    // Shards: in slot order, each its database.
    let mut ordered = Vec::new();
    for shard in shards {
        let range = slot_range(&shard)?;
        ordered.push((range, shard));
    }
    ordered.sort_by_key(|(r, _)| *r);
    let mut shards = Vec::new();
    for (i, (_, mut shard)) in ordered.into_iter().enumerate() {
        shard["spec"]["clusterRef"] = json!({"name": cluster_name});
        let (secret, key) = secret_ref(&shard["spec"]["postgres"]["secretRef"], "url")
            .with_context(|| {
                format!(
                    "ChatShard {} has no spec.postgres.secretRef",
                    name_of(&shard)
                )
            })?;
        set_secret(support, ns, &secret, &key, &b.shard_urls[i]);
        shards.push(shard);
    }
    Ok(shards)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::kube::backends::S3Backend;

    pub(in crate::kube) const SAMPLE: &str = r#"
# A cluster
apiVersion: v1
kind: Secret
metadata: {name: chat-directory}
stringData: {url: "postgres://change-me"}
---
apiVersion: v1
kind: Secret
metadata: {name: chat-b-db}
data: {url: "cG9zdGdyZXM6Ly9i"}
---
apiVersion: v1
kind: Secret
metadata: {name: chat-jwt}
stringData: {secret: "replace-me"}
---
apiVersion: parley.dev/v1alpha1
kind: ChatCluster
metadata: {name: chat}
spec:
  replicas: 3
  image: ghcr.io/parley/chat-node:0.1.0
  redis: {url: "redis://redis:6379"}
  kafka: {bootstrapServers: "kafka:9092"}
  directory: {secretRef: {name: chat-directory}}
  media: {bucket: media, credentialsSecretRef: {name: chat-s3}}
  jwtSecretRef: {name: chat-jwt, key: secret}
  exposure: {ingress: {host: chat.example.com, className: nginx}}
---
apiVersion: parley.dev/v1alpha1
kind: ChatShard
metadata: {name: chat-b}
spec: {clusterRef: {name: chat}, slots: ["2048-4095"], postgres: {secretRef: {name: chat-b-db}}}
---
apiVersion: parley.dev/v1alpha1
kind: ChatShard
metadata: {name: chat-a}
spec: {clusterRef: {name: chat}, slots: ["0-2047"], postgres: {secretRef: {name: chat-a-db, key: dsn}}}
"#;

    pub(in crate::kube) fn patch_of() -> Patch {
        Patch {
            namespace: "e2e-1".into(),
            backends: Backends {
                directory_url: "postgres://dir".into(),
                shard_urls: vec![
                    "postgres://a".into(),
                    "postgres://b".into(),
                    "postgres://c".into(),
                ],
                redis_url: "redis://:pw@198.18.1.1:16379/0".into(),
                kafka_bootstrap: "198.18.1.1:19094".into(),
                kafka_replication_factor: 1,
                s3: S3Backend {
                    endpoint: "http://198.18.1.1:19000".into(),
                    bucket: "parley-media".into(),
                    region: "us-east-1".into(),
                    access_key_id: "k".into(),
                    secret_access_key: "s".into(),
                },
            },
            node_image: "parley/chat-node:dev".into(),
            pull_policy: "IfNotPresent".into(),
            node_selector: BTreeMap::from([("parley.dev/real-node".into(), "true".into())]),
            tolerations: vec![
                json!({"key": "parley.dev/real-node", "operator": "Equal", "value": "true", "effect": "NoSchedule"}),
            ],
            ingress_host: "chat.parley.test".into(),
            ingress_class: "traefik".into(),
            trusted_proxies: vec!["198.18.64.1/32".into(), "198.18.1.1/32".into()],
            topic_prefix: "e2e1".into(),
            partitions: 6,
            replicas: 2,
            persisters: 1,
            jwt_secret: "x".repeat(40),
        }
    }

    fn secret<'a>(s: &'a Sample, name: &str) -> &'a Value {
        s.support
            .iter()
            .find(|o| name_of(o) == name)
            .unwrap_or_else(|| panic!("no secret {name}"))
    }

    #[test]
    fn the_sample_is_patched_through_its_references() {
        let s = patch(parse_documents(SAMPLE).unwrap(), &patch_of()).unwrap();
        let spec = &s.cluster["spec"];
        assert_eq!(s.cluster["metadata"]["namespace"], "e2e-1");
        assert_eq!(spec["image"], "parley/chat-node:dev");
        assert_eq!(spec["replicas"], 2);
        assert_eq!(spec["exposure"]["ingress"]["className"], "traefik");
        assert_eq!(spec["exposure"]["ingress"]["host"], "chat.parley.test");
        assert_eq!(
            spec["exposure"]["trustedProxies"],
            json!(["198.18.64.1/32", "198.18.1.1/32"])
        );
        assert_eq!(spec["kafka"]["topicPrefix"], "e2e1");
        assert_eq!(spec["kafka"]["bootstrapServers"], "198.18.1.1:19094");
        assert_eq!(
            spec["scheduling"]["nodeSelector"]["parley.dev/real-node"],
            "true"
        );
        assert_eq!(spec["scheduling"]["tolerations"][0]["effect"], "NoSchedule");
        assert_eq!(spec["redis"]["secretRef"]["name"], "chat-redis");
        assert_eq!(
            secret(&s, "chat-redis")["stringData"]["url"],
            "redis://:pw@198.18.1.1:16379/0"
        );
        assert_eq!(
            secret(&s, "chat-directory")["stringData"]["url"],
            "postgres://dir"
        );
        assert_eq!(secret(&s, "chat-s3")["stringData"]["accessKeyId"], "k");
        assert_eq!(spec["media"]["endpoint"], "http://198.18.1.1:19000");
        assert_eq!(
            secret(&s, "chat-jwt")["stringData"]["secret"],
            "x".repeat(40)
        );
        // Shards in slot order get the databases in order; a data key is replaced.
        assert_eq!(name_of(&s.shards[0]), "chat-a");
        assert_eq!(secret(&s, "chat-a-db")["stringData"]["dsn"], "postgres://a");
        let b = secret(&s, "chat-b-db");
        assert_eq!(b["stringData"]["url"], "postgres://b");
        assert!(b["data"].get("url").is_none());
        assert!(
            s.support
                .iter()
                .all(|o| o["metadata"]["namespace"] == "e2e-1")
        );
    }

    /// The repository's own sample goes through the same patching (the scenario applies it).
    #[test]
    fn the_repository_sample_is_patched() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/chatcluster.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let s = patch(parse_documents(&text).unwrap(), &patch_of()).unwrap();
        assert_eq!(s.shards.len(), 2);
        assert_eq!(s.cluster["spec"]["kafka"]["topicPrefix"], "e2e1");
        let urls: Vec<&Value> = s
            .support
            .iter()
            .filter_map(|o| o["stringData"].get("url"))
            .collect();
        assert!(urls.contains(&&json!("postgres://a")), "{urls:?}");
        assert!(urls.contains(&&json!("postgres://b")), "{urls:?}");
        assert!(urls.contains(&&json!("postgres://dir")), "{urls:?}");
        let text = serde_json::to_string(&s.support).unwrap();
        assert!(
            !text.contains("example.svc"),
            "a placeholder is left: {text}"
        );
    }

    #[test]
    fn no_scheduling_when_none_is_asked() {
        let mut p = patch_of();
        p.node_selector.clear();
        p.tolerations.clear();
        let s = patch(parse_documents(SAMPLE).unwrap(), &p).unwrap();
        assert!(s.cluster["spec"].get("scheduling").is_none());
    }

    /// The sample's own trusted proxies (a placeholder pod CIDR) never reach a run: the run's
    /// replace them, or none are left.
    #[test]
    fn trusted_proxies_are_the_runs() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/chatcluster.yaml");
        let docs = parse_documents(&std::fs::read_to_string(path).unwrap()).unwrap();
        let s = patch(docs.clone(), &patch_of()).unwrap();
        assert_eq!(
            s.cluster["spec"]["exposure"]["trustedProxies"],
            json!(["198.18.64.1/32", "198.18.1.1/32"])
        );
        let mut p = patch_of();
        p.trusted_proxies.clear();
        let s = patch(docs, &p).unwrap();
        assert!(
            s.cluster["spec"]["exposure"]
                .get("trustedProxies")
                .is_none(),
            "{}",
            s.cluster["spec"]["exposure"]
        );
    }

    #[test]
    fn a_sample_without_two_shards_is_refused() {
        let one = SAMPLE.rsplit_once("---").unwrap().0;
        let err = patch(parse_documents(one).unwrap(), &patch_of()).unwrap_err();
        assert!(err.to_string().contains("two ChatShards"), "{err}");
    }
}
