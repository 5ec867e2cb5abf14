//! The chat-nodes: their settings, Services, StatefulSet, disruption budget and RBAC.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetOrdinals, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parley_crd::resources::{ChatCluster, ModerationPolicy};

use super::support::*;

pub(super) const NODE: &str = "chat-node";

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// `<name>-config`: every non-secret setting chat-nodes, persisters and the migration share,
/// as `PARLEY_*` variables; secrets are files. Files only chat-nodes mount (the session and
/// cluster secrets, the word list) are named in the StatefulSet's own env ([`node_env`]), so
/// a persister or migration never points at a file it cannot read.
pub fn config(cluster: &ChatCluster) -> ConfigMap {
    let spec = &cluster.spec;
    let mut data = BTreeMap::from([
        (s("PARLEY_MODE"), s("distributed")),
        (s("PARLEY_LISTEN"), format!("0.0.0.0:{HTTP_PORT}")),
        (
            s("PARLEY_INTERNAL_LISTEN"),
            format!("0.0.0.0:{INTERNAL_PORT}"),
        ),
        (s("PARLEY_CLUSTER_NAME"), name(cluster)),
        (
            s("PARLEY_KAFKA_BOOTSTRAP"),
            spec.kafka.bootstrap_servers.clone(),
        ),
        (s("PARLEY_KAFKA_TOPIC_PREFIX"), topic_prefix(cluster)),
        (
            s("PARLEY_KAFKA_PARTITIONS"),
            spec.kafka.partitions.to_string(),
        ),
        (s("PARLEY_S3_REGION"), spec.media.region.clone()),
        (s("PARLEY_S3_BUCKET"), spec.media.bucket.clone()),
        (
            s("PARLEY_S3_ACCESS_KEY_ID_FILE"),
            format!("{SECRETS_DIR}/s3/accessKeyId"),
        ),
        (
            s("PARLEY_S3_SECRET_ACCESS_KEY_FILE"),
            format!("{SECRETS_DIR}/s3/secretAccessKey"),
        ),
        (
            s("PARLEY_DIRECTORY_URL_FILE"),
            format!("{SECRETS_DIR}/directory/{}", spec.directory.secret_ref.key),
        ),
        (
            s("PARLEY_DB_POOL_SIZE"),
            spec.directory.pool_size.to_string(),
        ),
        // The shard map with URLs (`name:slots:url;...`), kept by the operator in the
        // `<name>-shards` Secret; nodes and persisters re-read it when it changes.
        (s("PARLEY_SHARDS_FILE"), format!("{SHARDS_DIR}/shards")),
        (
            s("PARLEY_HEARTBEAT_INTERVAL_MS"),
            spec.heartbeat_interval_ms.to_string(),
        ),
        (
            s("PARLEY_MODERATION_POLICY"),
            s(match spec.moderation.policy {
                ModerationPolicy::Mask => "mask",
                ModerationPolicy::Reject => "reject",
            }),
        ),
        (
            s("PARLEY_PERSISTER_BATCH"),
            spec.persister.batch_size.to_string(),
        ),
        (
            s("PARLEY_PERSISTER_LINGER_MS"),
            spec.persister.linger_ms.to_string(),
        ),
    ]);
    if let Some(url) = &spec.redis.url {
        data.insert(s("PARLEY_REDIS_URL"), url.clone());
    }
    if let Some(r) = &spec.redis.secret_ref {
        data.insert(
            s("PARLEY_REDIS_URL_FILE"),
            format!("{SECRETS_DIR}/redis/{}", r.key),
        );
    }
    if let Some(e) = &spec.media.endpoint {
        data.insert(s("PARLEY_S3_ENDPOINT"), e.clone());
    }
    if let Some(epoch) = spec.snowflake_epoch_ms {
        data.insert(s("PARLEY_SNOWFLAKE_EPOCH_MS"), epoch.to_string());
    }
    ConfigMap {
        metadata: meta(cluster, format!("{}-config", name(cluster)), NODE),
        data: Some(data),
        ..Default::default()
    }
}

/// The headless Service (stable pod names for the ring) and the client Service.
pub fn services(cluster: &ChatCluster) -> [Service; 2] {
    let ports = |internal: bool| {
        let mut p = vec![ServicePort {
            name: Some(s("http")),
            port: if internal { HTTP_PORT } else { 80 },
            target_port: Some(IntOrString::String(s("http"))),
            ..Default::default()
        }];
        if internal {
            p.push(ServicePort {
                name: Some(s("internal")),
                port: INTERNAL_PORT,
                target_port: Some(IntOrString::String(s("internal"))),
                ..Default::default()
            });
        }
        p
    };
    let headless = Service {
        metadata: meta(cluster, format!("{}-nodes", name(cluster)), NODE),
        spec: Some(ServiceSpec {
            cluster_ip: Some(s("None")),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(cluster, NODE)),
            ports: Some(ports(true)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let client = Service {
        metadata: meta(cluster, name(cluster), NODE),
        spec: Some(ServiceSpec {
            selector: Some(selector(cluster, NODE)),
            ports: Some(ports(false)),
            ..Default::default()
        }),
        ..Default::default()
    };
    [headless, client]
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

/// Volumes and mounts of the Secrets a chat-node or persister reads, as files.
pub(super) fn secret_files(
    cluster: &ChatCluster,
    decided: &Decided,
    with_node_secrets: bool,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let spec = &cluster.spec;
    let mut volumes = vec![
        secret_volume("directory", &spec.directory.secret_ref.name),
        secret_volume("s3", &spec.media.credentials_secret_ref.name),
        secret_volume("shards", &format!("{}-shards", name(cluster))),
        Volume {
            name: s("tmp"),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount("directory", format!("{SECRETS_DIR}/directory")),
        mount("s3", format!("{SECRETS_DIR}/s3")),
        mount("shards", s(SHARDS_DIR)),
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
    if with_node_secrets {
        volumes.push(secret_volume("jwt", &decided.jwt_secret.0));
        mounts.push(mount("jwt", format!("{SECRETS_DIR}/jwt")));
        volumes.push(secret_volume(
            "internal",
            &format!("{}-internal", name(cluster)),
        ));
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

fn field_env(name: &str, path: &str) -> EnvVar {
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
const WORDS_DIR: &str = "/etc/parley/words";

/// The chat-node container's own variables: its identity from the pod, the files only
/// chat-nodes mount ([`secret_files`] with `with_node_secrets`), and the trusted proxies
/// (`PARLEY_TRUSTED_PROXIES`, comma-separated ranges, only when `exposure.trustedProxies`
/// names a valid one).
fn node_env(cluster: &ChatCluster, decided: &Decided) -> Vec<EnvVar> {
    let value = |k: &str, v: String| EnvVar {
        name: s(k),
        value: Some(v),
        ..Default::default()
    };
    let mut env = vec![
        field_env("PARLEY_NODE_NAME", "metadata.name"),
        field_env("PARLEY_NAMESPACE", "metadata.namespace"),
        // The ordinal, which starts at the cluster's worker-ID base (Kubernetes >= 1.28).
        field_env(
            "PARLEY_WORKER_ID",
            "metadata.labels['apps.kubernetes.io/pod-index']",
        ),
        value(
            "PARLEY_JWT_SECRET_FILE",
            format!("{SECRETS_DIR}/jwt/{}", decided.jwt_secret.1),
        ),
        value(
            "PARLEY_CLUSTER_SECRET_FILE",
            format!("{SECRETS_DIR}/internal/secret"),
        ),
    ];
    if let Some(w) = &cluster.spec.moderation.word_list_config_map_ref {
        env.push(value(
            "PARLEY_MODERATION_WORDS_FILE",
            format!("{WORDS_DIR}/{}", w.key),
        ));
    }
    // The proxies whose X-Forwarded-For the node believes, so its per-address limits count
    // clients, not the ingress controller. Entries that are no address or range are left
    // out: chat-node refuses to start on one, and every node would.
    let (ranges, _invalid) = cluster.spec.exposure.trusted_proxy_ranges();
    if !ranges.is_empty() {
        env.push(value("PARLEY_TRUSTED_PROXIES", ranges.join(",")));
    }
    env
}

/// The chat-node StatefulSet. Ordinals start at the cluster's worker-ID base, so a pod's
/// ordinal (its `apps.kubernetes.io/pod-index`) is its Snowflake worker ID.
pub fn statefulset(cluster: &ChatCluster, decided: &Decided, config_hash: &str) -> StatefulSet {
    let spec = &cluster.spec;
    let (volumes, mounts) = secret_files(cluster, decided, true);
    let mut pod_labels = labels(cluster, NODE);
    pod_labels.extend(selector(cluster, NODE));
    let container = Container {
        name: s(NODE),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: format!("{}-config", name(cluster)),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        env: Some(node_env(cluster, decided)),
        ports: Some(vec![
            ContainerPort {
                name: Some(s("http")),
                container_port: HTTP_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some(s("internal")),
                container_port: INTERNAL_PORT,
                ..Default::default()
            },
        ]),
        liveness_probe: Some(http_probe("/healthz", "http", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", "http", 5, 2)),
        startup_probe: Some(http_probe("/healthz", "http", 2, 30)),
        // The operator takes a member out of the ring before it scales down; the pause lets
        // every node see that before this one stops taking sends.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 5 }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        resources: spec.resources.clone(),
        security_context: Some(restricted_container()),
        ..Default::default()
    };
    let mut template_meta = ObjectMeta {
        labels: Some(pod_labels),
        ..Default::default()
    };
    template_meta.annotations = Some(BTreeMap::from([(
        s("parley.dev/config-hash"),
        s(config_hash),
    )]));
    StatefulSet {
        metadata: meta(cluster, format!("{}-node", name(cluster)), NODE),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(format!("{}-nodes", name(cluster))),
            ordinals: Some(StatefulSetOrdinals {
                start: Some(decided.workers.base),
            }),
            pod_management_policy: Some(s("Parallel")),
            selector: LabelSelector {
                match_labels: Some(selector(cluster, NODE)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(scheduled(
                    cluster,
                    PodSpec {
                        service_account_name: Some(format!("{}-node", name(cluster))),
                        automount_service_account_token: Some(true),
                        termination_grace_period_seconds: Some(45),
                        security_context: Some(restricted_pod()),
                        containers: vec![container],
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

/// At most one chat-node down at a time for voluntary disruptions.
pub fn pdb(cluster: &ChatCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(cluster, format!("{}-node", name(cluster)), NODE),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(cluster, NODE)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The chat-nodes' identity and the right to read (and watch) their own ChatCluster.
pub fn rbac(cluster: &ChatCluster) -> (ServiceAccount, Role, RoleBinding) {
    let n = format!("{}-node", name(cluster));
    let sa = ServiceAccount {
        metadata: meta(cluster, n.clone(), NODE),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(cluster, n.clone(), NODE),
        // Only their own ChatCluster (its status comes with it): the API server authorizes
        // a list or watch with the field selector `metadata.name=<name>` by that name.
        // Nothing more, or the operator could not grant it (RBAC refuses escalation).
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![s(parley_crd::resources::GROUP)]),
            resources: Some(vec![s("chatclusters")]),
            resource_names: Some(vec![name(cluster)]),
            verbs: vec![s("get"), s("list"), s("watch")],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(cluster, n.clone(), NODE),
        role_ref: RoleRef {
            api_group: s("rbac.authorization.k8s.io"),
            kind: s("Role"),
            name: n.clone(),
        },
        subjects: Some(vec![Subject {
            kind: s("ServiceAccount"),
            name: n,
            namespace: Some(namespace(cluster)),
            ..Default::default()
        }]),
    };
    (sa, role, binding)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{cluster, decided};
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

    #[test]
    fn statefulset_runs_restricted_chat_nodes_with_worker_ids_as_ordinals() {
        let sts = statefulset(&cluster(), &decided(), "abc");
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.ordinals.unwrap().start,
            Some(8),
            "ordinals start at the worker-ID base"
        );
        assert_eq!(spec.service_name.as_deref(), Some("alpha-nodes"));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            c.liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
        let env: Vec<&str> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env.contains(&"PARLEY_WORKER_ID"));
        let mounts: Vec<&str> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/var/run/parley/secrets/jwt"));
        assert!(mounts.contains(&"/var/run/parley/shards"));
        let annotations = spec.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations["parley.dev/config-hash"], "abc");
    }

    /// `cluster()` with `spec.exposure.trustedProxies` set to `proxies`.
    fn trusting(proxies: serde_json::Value) -> ChatCluster {
        let mut c = cluster();
        let mut spec = serde_json::to_value(&c.spec).unwrap();
        spec["exposure"]["trustedProxies"] = proxies;
        c.spec = serde_json::from_value(spec).unwrap();
        c
    }

    /// The chat-node container's own `env` value of `name`, if it has one.
    fn node_var(c: &ChatCluster, name: &str) -> Option<String> {
        let sts = statefulset(c, &decided(), "h");
        let pod = sts.spec.unwrap().template.spec.unwrap();
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .map(|e| e.value.clone().unwrap_or_default())
    }

    #[test]
    fn trusted_proxies_reach_the_chat_nodes_normalised() {
        // Without the field the node trusts no proxy (its default): no variable at all.
        assert_eq!(node_var(&cluster(), "PARLEY_TRUSTED_PROXIES"), None);
        assert!(
            !config(&cluster())
                .data
                .unwrap()
                .contains_key("PARLEY_TRUSTED_PROXIES")
        );
        // CIDRs as given, bare addresses as one-host ranges, IPv6 in canonical form.
        let c = trusting(serde_json::json!([
            "10.42.0.0/16",
            "192.0.2.7",
            "2001:DB8:0::/64",
            "fd00::1"
        ]));
        assert_eq!(
            node_var(&c, "PARLEY_TRUSTED_PROXIES").as_deref(),
            Some("10.42.0.0/16,192.0.2.7/32,2001:db8::/64,fd00::1/128")
        );
        // An entry that is no address or range (past the CRD's pattern) is left out rather
        // than stopping every chat-node at start; the valid ones still apply.
        let c = trusting(serde_json::json!(["10.0.0.0/33", "1:::2", "10.1.0.0/16"]));
        assert_eq!(
            node_var(&c, "PARLEY_TRUSTED_PROXIES").as_deref(),
            Some("10.1.0.0/16")
        );
        let c = trusting(serde_json::json!(["300.0.0.1"]));
        assert_eq!(node_var(&c, "PARLEY_TRUSTED_PROXIES"), None);
    }

    #[test]
    fn services_pdb_and_rbac() {
        let [headless, client] = services(&cluster());
        assert_eq!(
            headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(headless.metadata.name.as_deref(), Some("alpha-nodes"));
        assert_eq!(client.spec.unwrap().ports.unwrap()[0].port, 80);
        assert_eq!(
            pdb(&cluster()).spec.unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
        let (sa, role, binding) = rbac(&cluster());
        assert_eq!(sa.metadata.name.as_deref(), Some("alpha-node"));
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].resource_names.as_ref().unwrap(), &["alpha"]);
        assert_eq!(rules[0].resources.as_ref().unwrap(), &["chatclusters"]);
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        assert!(
            !rules
                .iter()
                .any(|r| r.resources.as_ref().unwrap().iter().any(|x| x == "secrets")),
            "no secrets"
        );
        assert_eq!(binding.subjects.unwrap()[0].name, "alpha-node");
    }
}
