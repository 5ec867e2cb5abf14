//! What every pod of a cluster shares: the Secrets it reads as files, scheduling, the
//! restricted security settings, probes and the ConfigMap its variables come from.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, ConfigMapVolumeSource, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, Probe,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parley_crd::resources::ChatCluster;

use super::names::Names;
use super::support::*;

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// The volume of the `<name>-shards` Secret (the migration remaps its key).
pub(super) const SHARDS_VOLUME: &str = "shards";

/// `envFrom` the cluster's ConfigMap ([`super::config`]).
pub(super) fn env_from_config(cluster: &ChatCluster) -> Vec<EnvFromSource> {
    vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: Names::of(cluster).config(),
            ..Default::default()
        }),
        ..Default::default()
    }]
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: s(name),
        secret: Some(SecretVolumeSource {
            secret_name: Some(s(secret)),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: String) -> VolumeMount {
    VolumeMount {
        name: s(name),
        mount_path: path,
        read_only: Some(true),
        ..Default::default()
    }
}

/// Which Secret files a pod mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecretFiles {
    /// What persisters and the migration read: the directory, S3, the shard map, Redis.
    Shared,
    /// The shared ones and the chat-nodes' own: the JWT and internal secrets, the word list.
    WithNodeSecrets,
}

/// Volumes and mounts of the Secrets a chat-node or persister reads, as files.
pub(super) fn secret_files(
    cluster: &ChatCluster,
    decided: &Decided,
    which: SecretFiles,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let spec = &cluster.spec;
    let names = Names::of(cluster);
    let mut volumes = vec![
        secret_volume("directory", &spec.directory.secret_ref.name),
        secret_volume("s3", &spec.media.credentials_secret_ref.name),
        secret_volume(SHARDS_VOLUME, &names.shards_secret()),
        Volume {
            name: s("tmp"),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount("directory", format!("{SECRETS_DIR}/directory")),
        mount("s3", format!("{SECRETS_DIR}/s3")),
        mount(SHARDS_VOLUME, s(SHARDS_DIR)),
        VolumeMount {
            name: s("tmp"),
            mount_path: s("/tmp"),
            ..Default::default()
        },
    ];
    if let Some(r) = &spec.redis.secret_ref {
        volumes.push(secret_volume("redis", &r.name));
        mounts.push(mount("redis", format!("{SECRETS_DIR}/redis")));
    }
    if which == SecretFiles::WithNodeSecrets {
        volumes.push(secret_volume("jwt", &decided.jwt_secret.0));
        mounts.push(mount("jwt", format!("{SECRETS_DIR}/jwt")));
        volumes.push(secret_volume("internal", &names.internal_secret()));
        mounts.push(mount("internal", format!("{SECRETS_DIR}/internal")));
        if let Some(w) = &spec.moderation.word_list_config_map_ref {
            volumes.push(Volume {
                name: s("words"),
                config_map: Some(ConfigMapVolumeSource {
                    name: w.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(mount("words", s(WORDS_DIR)));
        }
    }
    (volumes, mounts)
}

/// `pod` with the cluster's `spec.scheduling` (node selector and tolerations), which every
/// pod of the cluster gets.
pub(super) fn scheduled(cluster: &ChatCluster, mut pod: PodSpec) -> PodSpec {
    if let Some(sched) = &cluster.spec.scheduling {
        pod.node_selector = (!sched.node_selector.is_empty()).then(|| sched.node_selector.clone());
        pod.tolerations = (!sched.tolerations.is_empty()).then(|| sched.tolerations.clone());
    }
    pod
}

/// Pod-level security: user and group 65532, and `fsGroup` 65532, so the Secret files
/// (mode 0440, group `fsGroup`) are readable on a real kubelet.
pub(super) fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: s("RuntimeDefault"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec![s("ALL")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn http_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(s(path)),
            port: IntOrString::String(s(port)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

pub(super) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: s(name),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: s(path),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Where the words of the moderation list are mounted (chat-nodes only).
pub(super) const WORDS_DIR: &str = "/etc/parley/words";
