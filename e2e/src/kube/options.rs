//! The scenario's inputs ([`Options`], flags with environment fallbacks, and how far to go,
//! [`Until`]) and what follows from them alone: the operator chart's values, the pods'
//! scheduling, the trusted proxies, a run's unique suffix. Pure: no I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

/// How far the scenario goes (`--until`): shorter runs shake out a cluster's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Until {
    /// Operator installed and leading.
    Install,
    /// The sample applied and Ready, every pod checked.
    Ready,
    /// Two users chatted through the edge.
    Chat,
    /// Everything.
    All,
}

/// The scenario's inputs; flags with environment fallbacks.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "parley-e2e-kube",
    about = "Parley end to end on a Kubernetes cluster: helm install the operator, apply the sample, chat through the ingress, churn the cluster under traffic, verify nothing acknowledged was lost"
)]
pub struct Options {
    /// The cluster's kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Base URL of the ingress controller (dev: `dev/edge status`'s url).
    #[arg(long, env = "PARLEY_EDGE_URL")]
    pub edge_url: String,
    /// The Host the Ingress routes (requests carry it). Empty: `chat-<run>.parley.localhost`,
    /// a host of the run's own, so an earlier run's Ingress still being deleted never gets
    /// this run's clients (browsers resolve *.localhost to loopback).
    #[arg(long, env = "PARLEY_EDGE_HOST", default_value = "")]
    pub host: String,
    /// IngressClass of the ChatCluster's Ingress (`traefik` here, `nginx` on kind).
    #[arg(long, env = "PARLEY_INGRESS_CLASS", default_value = "traefik")]
    pub ingress_class: String,
    /// The helm binary.
    #[arg(long, env = "PARLEY_HELM", default_value = "helm")]
    pub helm: PathBuf,
    /// The operator chart's directory.
    #[arg(long, env = "PARLEY_CHART", default_value = "charts/parley-operator")]
    pub chart: PathBuf,
    /// The sample to apply.
    #[arg(
        long,
        env = "PARLEY_SAMPLE",
        default_value = "examples/chatcluster.yaml"
    )]
    pub sample: PathBuf,
    #[arg(
        long,
        env = "PARLEY_OPERATOR_IMAGE",
        default_value = "parley/operator:dev"
    )]
    pub operator_image: String,
    #[arg(
        long,
        env = "PARLEY_NODE_IMAGE",
        default_value = "parley/chat-node:dev"
    )]
    pub node_image: String,
    /// Pull policy of both images (IfNotPresent for images loaded into the nodes).
    #[arg(long, env = "PARLEY_PULL_POLICY", default_value = "IfNotPresent")]
    pub pull_policy: String,
    /// JSON file of the backends as pods see them: {directory_url, shard_urls: [three
    /// databases: two shards and the added one], redis_url, kafka_bootstrap,
    /// kafka_replication_factor (default 1), s3: {endpoint, bucket, region, access_key_id,
    /// secret_access_key}}.
    #[arg(long, env = "PARLEY_E2E_BACKENDS")]
    pub backends: PathBuf,
    /// A nodeSelector entry for every pod (operator and cluster), repeatable.
    #[arg(long = "node-selector", value_name = "KEY=VALUE")]
    pub node_selector: Vec<String>,
    /// A toleration for every pod, repeatable.
    #[arg(long = "toleration", value_name = "KEY=VALUE:EFFECT")]
    pub tolerations: Vec<String>,
    /// Schedule on dev/k8s's real node: select `parley.dev/real-node=true` and tolerate its
    /// taint.
    #[arg(long, env = "PARLEY_E2E_REAL_NODE")]
    pub real_node: bool,
    /// Prefix of the run's namespace (a unique suffix follows).
    #[arg(long, default_value = "parley-e2e")]
    pub namespace_prefix: String,
    /// Leave the namespace and release behind (for a person to look at).
    #[arg(long)]
    pub keep: bool,
    /// The longest wait for any one thing (Ready, a rollout, ...), seconds.
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
    /// Listening WebSocket clients besides the two senders.
    #[arg(long, default_value_t = 8)]
    pub listeners: usize,
    /// Interval between each sender's messages, ms.
    #[arg(long, default_value_t = 100)]
    pub send_every_ms: u64,
    /// Operator replicas (leader election picks one).
    #[arg(long, default_value_t = 2)]
    pub operator_replicas: u32,
    /// Stop after this step.
    #[arg(long, value_enum, default_value_t = Until::All)]
    pub until: Until,
}

/// `repository:tag` → (repository, tag); no tag is `latest`.
pub fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// `KEY=VALUE:EFFECT` (or `KEY:EFFECT`, `KEY=VALUE`) as a Kubernetes toleration.
pub fn parse_toleration(s: &str) -> Result<Value> {
    let (kv, effect) = match s.rsplit_once(':') {
        Some((kv, e)) => (kv, Some(e)),
        None => (s, None),
    };
    let mut t = json!({});
    match kv.split_once('=') {
        Some((k, v)) => {
            t["key"] = json!(k);
            t["operator"] = json!("Equal");
            t["value"] = json!(v);
        }
        None => {
            t["key"] = json!(kv);
            t["operator"] = json!("Exists");
        }
    }
    ensure!(!kv.is_empty(), "bad toleration {s:?}: no key");
    if let Some(e) = effect {
        ensure!(
            ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e),
            "bad toleration {s:?}: effect {e}"
        );
        t["effect"] = json!(e);
    }
    Ok(t)
}

/// The addresses a host process (dev/edge's Traefik) reaches dev/k8s's real node's pods from:
/// the CNI bridge's gateway 198.18.64.1 (the pods' range 198.18.64.0/18 is on that bridge,
/// so the kernel picks it as the source) and the node address 198.18.1.1 (dev/k8s's
/// `REAL_NODE_IP`, on the node bridge). See docs/k8s-test-env.md and docs/edge.md.
pub const REAL_NODE_PROXIES: [&str; 2] = ["198.18.64.1/32", "198.18.1.1/32"];

impl Options {
    /// The ChatCluster's `exposure.trustedProxies`: the ingress controller's addresses as
    /// the pods see them. On the real node, [`REAL_NODE_PROXIES`]; elsewhere none (the
    /// chat-nodes then count every client as the controller's one address).
    pub fn trusted_proxies(&self) -> Vec<String> {
        if self.real_node {
            REAL_NODE_PROXIES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            Vec::new()
        }
    }

    /// The nodeSelector and tolerations every pod gets.
    pub fn scheduling(&self) -> Result<(BTreeMap<String, String>, Vec<Value>)> {
        let mut selector = BTreeMap::new();
        let mut tolerations = Vec::new();
        if self.real_node {
            selector.insert("parley.dev/real-node".to_owned(), "true".to_owned());
            tolerations.push(parse_toleration("parley.dev/real-node=true:NoSchedule")?);
        }
        for s in &self.node_selector {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("bad --node-selector {s:?}: KEY=VALUE"))?;
            selector.insert(k.to_owned(), v.to_owned());
        }
        for t in &self.tolerations {
            tolerations.push(parse_toleration(t)?);
        }
        Ok((selector, tolerations))
    }

    /// The operator chart's values for a run.
    pub fn chart_values(&self, namespace: &str) -> Result<Value> {
        let (repository, tag) = split_image(&self.operator_image);
        let (selector, tolerations) = self.scheduling()?;
        Ok(json!({
            "image": {"repository": repository, "tag": tag, "pullPolicy": self.pull_policy},
            "replicas": self.operator_replicas,
            "watchNamespace": namespace,
            "nodeSelector": selector,
            "tolerations": tolerations,
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
        }))
    }
}

/// A short name unique to this run: lowercase letters and digits.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut n = (nanos / 1000) as u64 ^ (u64::from(std::process::id()) << 40);
    let mut s = String::new();
    for _ in 0..8 {
        let d = (n % 36) as u8;
        s.push(char::from(if d < 10 { b'0' + d } else { b'a' + d - 10 }));
        n /= 36;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn images_split_into_repository_and_tag() {
        assert_eq!(
            split_image("parley/operator:dev"),
            ("parley/operator".into(), "dev".into())
        );
        assert_eq!(
            split_image("registry:5000/parley/op"),
            ("registry:5000/parley/op".into(), "latest".into())
        );
    }

    #[test]
    fn tolerations_parse() {
        assert_eq!(
            parse_toleration("parley.dev/real-node=true:NoSchedule").unwrap(),
            json!({"key": "parley.dev/real-node", "operator": "Equal", "value": "true", "effect": "NoSchedule"})
        );
        assert_eq!(
            parse_toleration("dedicated").unwrap(),
            json!({"key": "dedicated", "operator": "Exists"})
        );
        assert!(parse_toleration("k=v:Sometimes").is_err());
    }

    #[test]
    fn real_node_options_schedule_everything_there() {
        let o = Options::try_parse_from([
            "parley-e2e-kube",
            "--kubeconfig",
            "/k",
            "--edge-url",
            "http://127.0.0.1:18080",
            "--backends",
            "/b.json",
            "--real-node",
        ])
        .unwrap();
        let v = o.chart_values("ns1").unwrap();
        assert_eq!(v["image"]["repository"], "parley/operator");
        assert_eq!(v["image"]["tag"], "dev");
        assert_eq!(v["watchNamespace"], "ns1");
        assert_eq!(v["nodeSelector"]["parley.dev/real-node"], "true");
        assert_eq!(v["tolerations"][0]["effect"], "NoSchedule");
        assert_eq!(o.until, Until::All);
        assert_eq!(o.ingress_class, "traefik");
        assert_eq!(o.trusted_proxies(), ["198.18.64.1/32", "198.18.1.1/32"]);
        let elsewhere = Options {
            real_node: false,
            ..o
        };
        assert!(elsewhere.trusted_proxies().is_empty());
    }

    #[test]
    fn unique_suffixes_are_short_names() {
        let s = unique_suffix();
        assert_eq!(s.len(), 8);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
}
