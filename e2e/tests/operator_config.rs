//! What the operator renders for a ChatCluster parses through chat-node's own `Config`: for
//! each workload (the chat-node StatefulSet, the persisters, the migration Job), the
//! variables its container sees (the `<name>-config` ConfigMap through `envFrom`, then its
//! own `env`, with `PARLEY_X_FILE` followed into the Secret or ConfigMap mounted there) are
//! keys chat-node reads, with values it accepts, and together a complete distributed
//! configuration for the command the container runs.
//!
//! ```text
//!   examples/chatcluster.yaml ──operator::resources──► ConfigMap + pod specs
//!       │ Secrets, ConfigMaps                              │ envFrom, env, volumeMounts
//!       └──────────────► files the kubelet would mount ◄───┘
//!                                   │
//!                chat_node::config::Config::from_vars(args, vars)?.distributed()?
//! ```
//!
//! Pure: no API server, no services, and the process environment is not read.

use std::collections::BTreeMap;

use chat_node::config::{Command, Config, Mode, StartError};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use operator::controller::cluster::publication::map_value;
use operator::resources::{self as r, Names, names::SHARDS_KEY};
use parley_crd::env;
use parley_crd::resources::{ChatCluster, ChatShard, ShardStatus, WorkerIdRange};
use serde::Deserialize as _;

/// The objects a cluster's pods can mount, by name: the sample's and those the operator
/// generates.
#[derive(Default)]
struct Objects {
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// `examples/chatcluster.yaml`: its ChatCluster, ChatShards, Secrets and ConfigMaps.
fn sample() -> (ChatCluster, Vec<ChatShard>, Objects) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/chatcluster.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut clusters, mut shards, mut objects) = (Vec::new(), Vec::new(), Objects::default());
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value).unwrap();
        match value["kind"].as_str().unwrap() {
            "Secret" => {
                let s: Secret = serde_json::from_value(json).unwrap();
                let data = s.string_data.clone().unwrap_or_default();
                objects.secrets.insert(s.metadata.name.unwrap(), data);
            }
            "ConfigMap" => {
                let m: ConfigMap = serde_json::from_value(json).unwrap();
                let data = m.data.clone().unwrap_or_default();
                objects.config_maps.insert(m.metadata.name.unwrap(), data);
            }
            "ChatCluster" => clusters.push(serde_json::from_value(json).unwrap()),
            "ChatShard" => shards.push(serde_json::from_value(json).unwrap()),
            other => panic!("unexpected kind {other} in the sample"),
        }
    }
    let mut cluster: ChatCluster = clusters.remove(0);
    cluster.metadata.namespace = Some("chat".into());
    cluster.metadata.uid = Some("uid-chat".into());
    (cluster, shards, objects)
}

/// What the controller would have decided and generated for `cluster`: the shard map in
/// force, worker IDs, the JWT Secret (given or generated), the node-to-node secret and the
/// `<name>-shards` Secret with URLs.
fn decide(cluster: &ChatCluster, shards: &[ChatShard], objects: &mut Objects) -> r::Decided {
    let names = Names::of(cluster);
    let statuses: Vec<ShardStatus> = shards
        .iter()
        .map(|sh| ShardStatus {
            name: sh.metadata.name.clone().unwrap(),
            slots: sh.spec.slots.iter().map(|x| x.0.clone()).collect(),
            ready: true,
        })
        .collect();
    let urls: BTreeMap<String, String> = shards
        .iter()
        .map(|sh| {
            let r = &sh.spec.postgres.secret_ref;
            let url = objects.secrets[&r.name][&r.key].clone();
            (sh.metadata.name.clone().unwrap(), url)
        })
        .collect();
    let map = map_value(&statuses, &urls);
    objects.secrets.insert(
        names.shards_secret(),
        BTreeMap::from([
            (SHARDS_KEY.to_owned(), map.clone()),
            (r::PENDING_SHARDS_KEY.to_owned(), map),
        ]),
    );
    let generated = "0123456789abcdef".repeat(4);
    objects.secrets.insert(
        names.internal_secret(),
        BTreeMap::from([("secret".to_owned(), generated.clone())]),
    );
    let jwt_secret = match &cluster.spec.jwt_secret_ref {
        Some(j) => (j.name.clone(), j.key.clone()),
        None => {
            objects.secrets.insert(
                names.generated_jwt_secret(),
                BTreeMap::from([("secret".to_owned(), generated)]),
            );
            (names.generated_jwt_secret(), "secret".to_owned())
        }
    };
    r::Decided {
        workers: WorkerIdRange { base: 0, size: 8 },
        shards: statuses,
        jwt_secret,
    }
}

/// The value a `fieldRef` gives pod 0 of the StatefulSet.
fn field(path: &str) -> String {
    match path {
        "metadata.name" => "chat-node-0".into(),
        "metadata.namespace" => "chat".into(),
        p if p.starts_with("metadata.labels[") => "0".into(),
        other => panic!("a fieldRef this test does not know: {other}"),
    }
}

/// The content of the file at `path` in `container` of `pod`, as the kubelet would mount it.
fn mounted(pod: &PodSpec, container: &Container, path: &str, objects: &Objects) -> String {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path.starts_with(&format!("{}/", m.mount_path)))
        .unwrap_or_else(|| panic!("{path} is under no volumeMount"));
    let file = &path[mount.mount_path.len() + 1..];
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("{path}: no volume {}", mount.name));
    let (data, items) = if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap();
        let data = objects.secrets.get(&name);
        (data.unwrap_or_else(|| panic!("no Secret {name}")), &s.items)
    } else if let Some(m) = &volume.config_map {
        let data = objects.config_maps.get(&m.name);
        (
            data.unwrap_or_else(|| panic!("no ConfigMap {}", m.name)),
            &m.items,
        )
    } else {
        panic!("{path}: volume {} is no Secret or ConfigMap", mount.name)
    };
    let key = match items {
        Some(items) => items.iter().find(|i| i.path == file).unwrap().key.as_str(),
        None => file,
    };
    data.get(key)
        .unwrap_or_else(|| panic!("{path}: no key {key} in volume {}", mount.name))
        .clone()
}

/// The `PARLEY_*` variables the first container of `pod` starts with, every
/// `PARLEY_X_FILE` replaced by `PARLEY_X` and the file's content.
fn variables(pod: &PodSpec, config: &ConfigMap, objects: &Objects) -> BTreeMap<String, String> {
    let container = &pod.containers[0];
    let mut vars = BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        let r = from.config_map_ref.as_ref().expect("envFrom a ConfigMap");
        assert_eq!(Some(&r.name), config.metadata.name.as_ref());
        vars.extend(config.data.clone().unwrap());
    }
    for e in container.env.iter().flatten() {
        let value = match &e.value_from {
            Some(from) => field(&from.field_ref.as_ref().expect("a fieldRef").field_path),
            None => e.value.clone().unwrap_or_default(),
        };
        vars.insert(e.name.clone(), value);
    }
    let mut out = BTreeMap::new();
    for (key, value) in vars {
        match key.strip_suffix(env::FILE_SUFFIX) {
            Some(base) if !env::ALL.contains(&key.as_str()) => {
                let content = mounted(pod, container, &value, objects);
                out.insert(base.to_owned(), content.trim_end_matches('\n').to_owned());
            }
            _ => {
                out.insert(key, value);
            }
        }
    }
    out
}

/// Each workload of `cluster` parses into a complete distributed `Config` for its command.
fn parses(cluster: &ChatCluster, shards: &[ChatShard], mut objects: Objects) {
    let decided = decide(cluster, shards, &mut objects);
    let config = r::config(cluster);
    let workloads = [
        (
            "StatefulSet",
            r::statefulset(cluster, &decided, "h")
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
            Command::Serve,
        ),
        (
            "persister Deployment",
            r::persister(cluster, &decided, "h")
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
            Command::Persist,
        ),
        (
            "migration Job",
            r::migration(cluster, &decided, "h")
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
            Command::Migrate,
        ),
    ];
    for (what, pod, command) in workloads {
        let vars = variables(&pod, &config, &objects);
        let mut argv = vec!["chat-node".to_owned()];
        argv.extend(pod.containers[0].args.clone().unwrap_or_default());
        let c = Config::from_vars(&argv, &vars).unwrap_or_else(|e| match e {
            StartError::Config(e) => panic!("{what}: the operator renders {e}"),
            StartError::Arguments(e) => panic!("{what}: chat-node refuses a value: {e}"),
        });
        assert_eq!(c.command, command, "{what}");
        assert_eq!(c.mode, Mode::Distributed, "{what}");
        let d = c
            .distributed()
            .unwrap_or_else(|e| panic!("{what}: not a complete distributed config: {e}"));
        assert_eq!(d.shards.len(), shards.len(), "{what}");
    }
}

#[test]
fn the_samples_workloads_parse_as_chat_node_configs() {
    let (cluster, shards, objects) = sample();
    parses(&cluster, &shards, objects);
}

/// The settings the sample leaves out or gives another way: Redis inline, a generated JWT
/// secret, AWS S3, no word list, a Snowflake epoch, no trusted proxies.
#[test]
fn the_other_optional_settings_parse_too() {
    let (mut cluster, shards, objects) = sample();
    let spec = &mut cluster.spec;
    spec.redis.url = Some("redis://redis.example.svc:6379/0".into());
    spec.redis.secret_ref = None;
    spec.jwt_secret_ref = None;
    spec.media.endpoint = None;
    spec.moderation.word_list_config_map_ref = None;
    spec.snowflake_epoch_ms = Some(1_704_067_200_000);
    spec.exposure.trusted_proxies.clear();
    parses(&cluster, &shards, objects);
}

/// The check itself holds: a key chat-node does not read, or a value it refuses, fails it.
#[test]
fn an_unknown_key_or_a_bad_value_is_refused() {
    let (cluster, shards, mut objects) = sample();
    let decided = decide(&cluster, &shards, &mut objects);
    let pod = r::statefulset(&cluster, &decided, "h")
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let vars = variables(&pod, &r::config(&cluster), &objects);
    for (key, value, expect_unknown) in [
        ("PARLEY_HEARTBEAT_INTERVALL_MS", "15000", true),
        (env::HEARTBEAT_INTERVAL_MS, "15s", false),
        (env::S3_ENDPOINT, "minio:9000", false),
    ] {
        let mut bad = vars.clone();
        bad.insert(key.to_owned(), value.to_owned());
        match Config::from_vars(["chat-node"], &bad) {
            Err(StartError::Config(e)) if expect_unknown => assert_eq!(e.key, key),
            Err(StartError::Arguments(e)) if !expect_unknown => {
                assert!(e.to_string().contains(key), "{e}")
            }
            other => panic!("{key}={value}: {:?}", other.map(|_| "accepted")),
        }
    }
}
