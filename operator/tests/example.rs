//! `examples/chatcluster.yaml`, the sample a platform team applies, is what the operator
//! understands: every document deserializes into its Rust type, everything the ChatCluster
//! and ChatShards reference is in the file, the shards cover every slot once, and the
//! operator renders its workloads from it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use parley_crd::resources::{ChatCluster, ChatShard, ShardStatus, WorkerIdRange};
use serde::Deserialize as _;

/// The sample's documents, by kind.
#[derive(Default)]
struct Sample {
    secrets: BTreeMap<String, Secret>,
    config_maps: BTreeMap<String, ConfigMap>,
    clusters: Vec<ChatCluster>,
    shards: Vec<ChatShard>,
}

fn sample() -> Sample {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/chatcluster.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut s = Sample::default();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap().to_owned();
        let name = value["metadata"]["name"].as_str().unwrap().to_owned();
        let json = serde_json::to_value(&value).unwrap();
        match kind.as_str() {
            "Secret" => {
                s.secrets
                    .insert(name, serde_json::from_value(json).unwrap());
            }
            "ConfigMap" => {
                s.config_maps
                    .insert(name, serde_json::from_value(json).unwrap());
            }
            "ChatCluster" => {
                let c: ChatCluster = serde_json::from_value(json.clone()).unwrap();
                let back = serde_json::to_value(&c).unwrap();
                assert_no_unknown_fields(&json["spec"], &back["spec"], "spec");
                s.clusters.push(c);
            }
            "ChatShard" => {
                let sh: ChatShard = serde_json::from_value(json.clone()).unwrap();
                let back = serde_json::to_value(&sh).unwrap();
                assert_no_unknown_fields(&json["spec"], &back["spec"], "spec");
                s.shards.push(sh);
            }
            other => panic!("unexpected kind {other} in the sample"),
        }
    }
    s
}

/// Every field written in the sample survives a round trip through the types (serde drops
/// fields it does not know, which the API server's schema would prune).
fn assert_no_unknown_fields(written: &serde_json::Value, typed: &serde_json::Value, at: &str) {
    if let Some(obj) = written.as_object() {
        for (k, v) in obj {
            let t = typed
                .get(k)
                .unwrap_or_else(|| panic!("{at}.{k} is not a field of the type"));
            assert_no_unknown_fields(v, t, &format!("{at}.{k}"));
        }
    }
}

fn secret_has(s: &Sample, name: &str, key: &str) {
    let secret = s
        .secrets
        .get(name)
        .unwrap_or_else(|| panic!("the sample has no Secret {name}"));
    let data = secret.string_data.as_ref().unwrap();
    assert!(data.contains_key(key), "Secret {name} has no key {key}");
}

#[test]
fn the_sample_deserializes_and_holds_everything_it_references() {
    let s = sample();
    assert_eq!(s.clusters.len(), 1);
    assert_eq!(s.shards.len(), 2);
    let c = &s.clusters[0];
    let spec = &c.spec;
    assert_eq!(spec.replicas, 2);
    assert_eq!(spec.image, "parley/chat-node:0.1.0");
    assert!(spec.exposure.ingress.is_some(), "ingress exposure");
    assert!(spec.persister.replicas > 0, "persisters");

    // Every secretRef of the ChatCluster and the ChatShards, and the word list.
    secret_has(
        &s,
        &spec.directory.secret_ref.name,
        &spec.directory.secret_ref.key,
    );
    let redis = spec.redis.secret_ref.as_ref().expect("redis from a Secret");
    secret_has(&s, &redis.name, &redis.key);
    secret_has(&s, &spec.media.credentials_secret_ref.name, "accessKeyId");
    secret_has(
        &s,
        &spec.media.credentials_secret_ref.name,
        "secretAccessKey",
    );
    let jwt = spec.jwt_secret_ref.as_ref().expect("a JWT secret");
    secret_has(&s, &jwt.name, &jwt.key);
    let jwt_value = &s.secrets[&jwt.name].string_data.as_ref().unwrap()[&jwt.key];
    assert!(jwt_value.len() >= 32, "a JWT secret has at least 32 bytes");
    let words = spec.moderation.word_list_config_map_ref.as_ref().unwrap();
    assert!(
        s.config_maps[&words.name]
            .data
            .as_ref()
            .unwrap()
            .contains_key(&words.key)
    );
    for sh in &s.shards {
        assert_eq!(sh.spec.cluster_ref.name, c.metadata.name.clone().unwrap());
        secret_has(
            &s,
            &sh.spec.postgres.secret_ref.name,
            &sh.spec.postgres.secret_ref.key,
        );
    }

    // The two shards split 0-4095.
    let map = parley_crd::ShardMap::build(
        s.shards
            .iter()
            .map(|sh| {
                let ranges = sh.spec.slots.iter().map(|r| r.0.parse().unwrap()).collect();
                (sh.metadata.name.clone().unwrap(), ranges)
            })
            .collect(),
        Clone::clone,
    );
    assert!(map.is_ok(), "the shards cover 0-4095 once: {:?}", map.err());

    // Placeholders only: nothing that looks like a real address.
    for secret in s.secrets.values() {
        for v in secret.string_data.as_ref().unwrap().values() {
            assert!(
                !v.contains('@') || v.contains(".example.svc"),
                "placeholder hosts only: {v}"
            );
        }
    }
}

#[test]
fn the_operator_renders_the_samples_workloads() {
    use operator::resources as r;
    let s = sample();
    let mut c = s.clusters[0].clone();
    c.metadata.namespace = Some("chat".into());
    c.metadata.uid = Some("uid-chat".into());
    let decided = r::Decided {
        workers: WorkerIdRange { base: 0, size: 8 },
        shards: s
            .shards
            .iter()
            .map(|sh| ShardStatus {
                name: sh.metadata.name.clone().unwrap(),
                slots: sh.spec.slots.iter().map(|x| x.0.clone()).collect(),
                ready: true,
            })
            .collect(),
        jwt_secret: {
            let j = c.spec.jwt_secret_ref.clone().unwrap();
            (j.name, j.key)
        },
    };
    let sts = r::statefulset(&c, &decided, "h");
    assert_eq!(sts.spec.unwrap().replicas, Some(2));
    let d = r::persister(&c, &decided, "h");
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    let j = r::migration(&c, &decided, "h");
    assert_eq!(
        j.metadata.annotations.unwrap()[r::SHARDS_ANNOTATION],
        "chat-a,chat-b"
    );
    assert!(matches!(r::edge(&c), Some(r::Edge::Ingress(_))));
}
