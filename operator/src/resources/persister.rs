//! The persisters (a Deployment in the Kafka consumer group) and the migration Job.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, KeyToPath, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use parley_crd::env;
use parley_crd::resources::ChatCluster;

use super::names::{CONFIG_HASH_ANNOTATION, Component, Names, SHARDS_KEY};
use super::pod::{
    SHARDS_VOLUME, SecretFiles, env_from_config, http_probe, restricted_container, restricted_pod,
    scheduled, secret_files,
};
use super::support::*;

use super::names::{PENDING_SHARDS_KEY, SHARDS_ANNOTATION};

fn container(
    cluster: &ChatCluster,
    decided: &Decided,
    component: Component,
    arg: &str,
) -> (Container, Vec<k8s_openapi::api::core::v1::Volume>) {
    let (volumes, mounts) = secret_files(cluster, decided, SecretFiles::Shared);
    let c = Container {
        name: component.as_str().to_owned(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: cluster.spec.image_pull_policy.clone(),
        args: Some(vec![arg.to_owned()]),
        env_from: Some(env_from_config(cluster)),
        env: Some(vec![EnvVar {
            name: env::LISTEN.into(),
            value: Some(format!("0.0.0.0:{PERSISTER_PORT}")),
            ..Default::default()
        }]),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container()),
        ..Default::default()
    };
    (c, volumes)
}

/// The persisters: `chat-node persist`, health on port 8090.
pub fn persister(cluster: &ChatCluster, decided: &Decided, config_hash: &str) -> Deployment {
    let (mut c, volumes) = container(cluster, decided, Component::Persister, "persist");
    c.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: PERSISTER_PORT,
        ..Default::default()
    }]);
    c.liveness_probe = Some(http_probe("/healthz", "http", 10, 3));
    c.readiness_probe = Some(http_probe("/readyz", "http", 5, 2));
    c.resources = cluster.spec.persister.resources.clone();
    let mut pod_labels = labels(cluster, Component::Persister);
    pod_labels.extend(selector(cluster, Component::Persister));
    Deployment {
        metadata: meta(
            cluster,
            Names::of(cluster).persister(),
            Component::Persister,
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(cluster.spec.persister.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(cluster, Component::Persister)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(
                        [(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned())].into(),
                    ),
                    ..Default::default()
                }),
                spec: Some(scheduled(
                    cluster,
                    PodSpec {
                        automount_service_account_token: Some(false),
                        termination_grace_period_seconds: Some(30),
                        security_context: Some(restricted_pod()),
                        containers: vec![c],
                        volumes: Some(volumes),
                        ..Default::default()
                    },
                )),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `chat-node migrate`: the directory and every shard to the newest schema, and the topics.
/// The name carries a hash of what it migrates, so a new image or shard map runs it again.
pub fn migration(cluster: &ChatCluster, decided: &Decided, hash: &str) -> Job {
    let (mut c, mut volumes) = container(cluster, decided, Component::Migrate, "migrate");
    c.env = None;
    // The migration reads the newest map, `pending`, where the others read `shards`.
    for v in &mut volumes {
        if let Some(secret) = v.secret.as_mut().filter(|_| v.name == SHARDS_VOLUME) {
            secret.items = Some(vec![KeyToPath {
                key: PENDING_SHARDS_KEY.to_owned(),
                path: SHARDS_KEY.to_owned(),
                mode: None,
            }]);
        }
    }
    let mut metadata = meta(
        cluster,
        Names::of(cluster).migration(hash),
        Component::Migrate,
    );
    let shards: Vec<&str> = decided.shards.iter().map(|s| s.name.as_str()).collect();
    metadata.annotations = Some(BTreeMap::from([(
        SHARDS_ANNOTATION.to_owned(),
        shards.join(","),
    )]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(10),
            ttl_seconds_after_finished: Some(24 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cluster, Component::Migrate)),
                    ..Default::default()
                }),
                spec: Some(scheduled(
                    cluster,
                    PodSpec {
                        restart_policy: Some("OnFailure".into()),
                        automount_service_account_token: Some(false),
                        security_context: Some(restricted_pod()),
                        containers: vec![c],
                        volumes: Some(volumes),
                        ..Default::default()
                    },
                )),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{cluster, decided};
    use super::*;

    #[test]
    fn persisters_run_persist_without_node_secrets() {
        let d = persister(&cluster(), &decided(), "h");
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.containers[0].args.as_ref().unwrap(), &["persist"]);
        let vols: Vec<&str> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert!(vols.contains(&"directory") && vols.contains(&"shards"));
        assert!(
            !vols.contains(&"jwt"),
            "persisters never see the session secret"
        );
    }

    #[test]
    fn migration_job_is_named_by_what_it_migrates() {
        let j = migration(&cluster(), &decided(), "1a2b");
        assert_eq!(j.metadata.name.as_deref(), Some("alpha-migrate-1a2b"));
        let shards = &j.metadata.annotations.as_ref().unwrap()[SHARDS_ANNOTATION];
        let vols = j
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .clone();
        let map = vols
            .unwrap()
            .into_iter()
            .find(|v| v.name == "shards")
            .unwrap();
        let items = map.secret.unwrap().items.unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            (PENDING_SHARDS_KEY, "shards"),
            "the migration reads the map not yet in force"
        );
        assert_eq!(
            shards, "alpha-a,alpha-b",
            "the shards it migrates, for their Ready"
        );
        let pod = j.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        assert_eq!(pod.containers[0].args.as_ref().unwrap(), &["migrate"]);
    }
}
