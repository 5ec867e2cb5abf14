//! The chat-nodes: their StatefulSet (ordinals = worker IDs) and disruption budget.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetOrdinals, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec,
    SleepAction,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parley_crd::env;
use parley_crd::resources::ChatCluster;

use super::names::{CONFIG_HASH_ANNOTATION, Component, Names, POD_INDEX_LABEL};
use super::pod::{
    SecretFiles, WORDS_DIR, env_from_config, field_env, http_probe, restricted_container,
    restricted_pod, scheduled, secret_files,
};
use super::support::*;

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// The chat-node container's own variables: its identity from the pod, the files only
/// chat-nodes mount ([`secret_files`] with [`SecretFiles::WithNodeSecrets`]), and the trusted proxies
/// (`PARLEY_TRUSTED_PROXIES`, comma-separated ranges, only when `exposure.trustedProxies`
/// names a valid one).
fn node_env(cluster: &ChatCluster, decided: &Decided) -> Vec<EnvVar> {
    let value = |k: &str, v: String| EnvVar {
        name: s(k),
        value: Some(v),
        ..Default::default()
    };
    let mut env = vec![
        field_env(env::NODE_NAME, "metadata.name"),
        field_env(env::NAMESPACE, "metadata.namespace"),
        // The ordinal, which starts at the cluster's worker-ID base (Kubernetes >= 1.28).
        field_env(
            env::WORKER_ID,
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ),
        value(
            &env::file(env::JWT_SECRET),
            format!("{SECRETS_DIR}/jwt/{}", decided.jwt_secret.1),
        ),
        value(
            &env::file(env::CLUSTER_SECRET),
            format!("{SECRETS_DIR}/internal/secret"),
        ),
    ];
    if let Some(w) = &cluster.spec.moderation.word_list_config_map_ref {
        env.push(value(
            env::MODERATION_WORDS_FILE,
            format!("{WORDS_DIR}/{}", w.key),
        ));
    }
    // The proxies whose X-Forwarded-For the node believes, so its per-address limits count
    // clients, not the ingress controller. Entries that are no address or range are left
    // out: chat-node refuses to start on one, and every node would.
    let (ranges, _invalid) = cluster.spec.exposure.trusted_proxy_ranges();
    if !ranges.is_empty() {
        env.push(value(env::TRUSTED_PROXIES, ranges.join(",")));
    }
    env
}

/// The chat-node container: its settings (the ConfigMap's and [`node_env`]), ports, probes,
/// the pause before it stops, and the Secret files it reads.
fn node_container(
    cluster: &ChatCluster,
    decided: &Decided,
    mounts: Vec<k8s_openapi::api::core::v1::VolumeMount>,
) -> Container {
    let spec = &cluster.spec;
    Container {
        name: s(Component::Node.as_str()),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        env_from: Some(env_from_config(cluster)),
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
    }
}

/// The chat-node StatefulSet. Ordinals start at the cluster's worker-ID base, so a pod's
/// ordinal (its `apps.kubernetes.io/pod-index`) is its Snowflake worker ID.
pub fn statefulset(cluster: &ChatCluster, decided: &Decided, config_hash: &str) -> StatefulSet {
    let names = Names::of(cluster);
    let (volumes, mounts) = secret_files(cluster, decided, SecretFiles::WithNodeSecrets);
    let mut pod_labels = labels(cluster, Component::Node);
    pod_labels.extend(selector(cluster, Component::Node));
    let template_meta = ObjectMeta {
        labels: Some(pod_labels),
        annotations: Some(BTreeMap::from([(
            s(CONFIG_HASH_ANNOTATION),
            s(config_hash),
        )])),
        ..Default::default()
    };
    let pod = PodSpec {
        service_account_name: Some(names.node()),
        automount_service_account_token: Some(true),
        termination_grace_period_seconds: Some(45),
        security_context: Some(restricted_pod()),
        containers: vec![node_container(cluster, decided, mounts)],
        volumes: Some(volumes),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta(cluster, names.node(), Component::Node),
        spec: Some(StatefulSetSpec {
            replicas: Some(cluster.spec.replicas),
            service_name: Some(names.headless_service()),
            ordinals: Some(StatefulSetOrdinals {
                start: Some(decided.workers.base),
            }),
            pod_management_policy: Some(s("Parallel")),
            selector: LabelSelector {
                match_labels: Some(selector(cluster, Component::Node)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(scheduled(cluster, pod)),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one chat-node down at a time for voluntary disruptions.
pub fn pdb(cluster: &ChatCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(cluster, Names::of(cluster).node(), Component::Node),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(cluster, Component::Node)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::config;
    use super::super::fixtures::{cluster, decided};
    use super::*;

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
}
