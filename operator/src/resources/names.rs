//! Every name the operator gives: objects, Secret keys, labels, annotations and components.
//! The renderers and the controller that reads the objects back both take them from here, so
//! they cannot disagree.
//!
//! ```text
//!   ChatCluster <name>
//!     <name>                 Service (clients), Ingress or HTTPRoute (edge)
//!     <name>-nodes           Service (headless: the ring's pod DNS names)
//!     <name>-node            StatefulSet, PodDisruptionBudget, ServiceAccount, Role, RoleBinding
//!     <name>-persister       Deployment
//!     <name>-config          ConfigMap
//!     <name>-internal        Secret, generated: the node-to-node secret
//!     <name>-jwt             Secret, generated unless spec.jwtSecretRef names one
//!     <name>-shards          Secret: the shard map in force (`shards`) and the newest (`pending`)
//!     <name>-migrate-<hash>  Job
//! ```

use std::collections::BTreeMap;

use parley_crd::resources::ChatCluster;

use super::INTERNAL_PORT;

/// The names of one ChatCluster's objects. Built from the cluster's own name; every method
/// returns the name of one object (the table in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    cluster: String,
}

impl Names {
    /// The names of the ChatCluster called `cluster`.
    pub fn new(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
        }
    }

    /// The names of `cluster` (an empty name when it has none, as a builder's input may).
    pub fn of(cluster: &ChatCluster) -> Self {
        Self::new(cluster.metadata.name.clone().unwrap_or_default())
    }

    /// The ChatCluster's own name: also its client Service's, its edge's and the
    /// `app.kubernetes.io/instance` label of everything it owns.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The Service clients reach the chat-nodes through (port 80).
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }

    /// The Ingress or HTTPRoute.
    pub fn edge(&self) -> String {
        self.cluster.clone()
    }

    /// The headless Service that gives each chat-node pod its DNS name.
    pub fn headless_service(&self) -> String {
        format!("{}-nodes", self.cluster)
    }

    /// The chat-nodes' StatefulSet, and their PodDisruptionBudget, ServiceAccount, Role and
    /// RoleBinding.
    pub fn node(&self) -> String {
        format!("{}-node", self.cluster)
    }

    /// The persisters' Deployment.
    pub fn persister(&self) -> String {
        format!("{}-persister", self.cluster)
    }

    /// The ConfigMap of shared, non-secret settings.
    pub fn config(&self) -> String {
        format!("{}-config", self.cluster)
    }

    /// The generated Secret the chat-nodes authenticate each other with.
    pub fn internal_secret(&self) -> String {
        format!("{}-internal", self.cluster)
    }

    /// The generated JWT Secret, used when `spec.jwtSecretRef` names none.
    pub fn generated_jwt_secret(&self) -> String {
        format!("{}-jwt", self.cluster)
    }

    /// The Secret holding the shard map with URLs ([`SHARDS_KEY`], [`PENDING_SHARDS_KEY`]).
    pub fn shards_secret(&self) -> String {
        format!("{}-shards", self.cluster)
    }

    /// The migration Job for the inputs that hash to `hash`.
    pub fn migration(&self, hash: &str) -> String {
        format!("{}-migrate-{hash}", self.cluster)
    }

    /// The labels that select the cluster's pods of `component` (stable across operator
    /// versions).
    pub fn selector(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (INSTANCE_LABEL.into(), self.cluster.clone()),
            (COMPONENT_LABEL.into(), component.as_str().into()),
        ])
    }

    /// The internal endpoint of the chat-node pod `pod` in `namespace`, through the headless
    /// Service: `http://<pod>.<name>-nodes.<namespace>.svc:9180`.
    pub fn pod_endpoint(&self, pod: &str, namespace: &str) -> String {
        format!(
            "http://{pod}.{}.{namespace}.svc:{INTERNAL_PORT}",
            self.headless_service()
        )
    }
}

/// The part of a cluster an object belongs to: its `app.kubernetes.io/component` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The chat-nodes and what serves them (config, Services, RBAC, PDB).
    Node,
    /// The persisters' Deployment.
    Persister,
    /// The migration Job.
    Migrate,
    /// The Ingress or HTTPRoute.
    Edge,
    /// The Secrets the operator writes.
    Secret,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Node => "chat-node",
            Component::Persister => "persister",
            Component::Migrate => "migrate",
            Component::Edge => "edge",
            Component::Secret => "secret",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key of a generated Secret ([`Names::internal_secret`], [`Names::generated_jwt_secret`])
/// holding its 32 random bytes, hex-encoded.
pub const GENERATED_SECRET_KEY: &str = "secret";

/// The key of the `<cluster>-shards` Secret holding the map in force (`name:slots:url;...`),
/// the one chat-nodes and persisters read.
pub const SHARDS_KEY: &str = "shards";

/// The key of the `<cluster>-shards` Secret holding the newest map, before it is migrated.
pub const PENDING_SHARDS_KEY: &str = "pending";

/// The annotation of a migration Job listing the ChatShards it migrates (`a,b`).
pub const SHARDS_ANNOTATION: &str = "parley.dev/shards";

/// The pod-template annotation carrying the hash of the ConfigMap, so a changed setting rolls
/// the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "parley.dev/config-hash";

/// The label the StatefulSet controller gives each pod: its ordinal (= its worker ID).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// `app.kubernetes.io/instance`: the ChatCluster an object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// `app.kubernetes.io/component`: a [`Component`].
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// `app.kubernetes.io/managed-by`: always [`super::MANAGER`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_cluster() {
        let n = Names::new("alpha");
        assert_eq!(n.cluster(), "alpha");
        assert_eq!(n.client_service(), "alpha");
        assert_eq!(n.edge(), "alpha");
        assert_eq!(n.headless_service(), "alpha-nodes");
        assert_eq!(n.node(), "alpha-node");
        assert_eq!(n.persister(), "alpha-persister");
        assert_eq!(n.config(), "alpha-config");
        assert_eq!(n.internal_secret(), "alpha-internal");
        assert_eq!(n.generated_jwt_secret(), "alpha-jwt");
        assert_eq!(n.shards_secret(), "alpha-shards");
        assert_eq!(n.migration("1a2b"), "alpha-migrate-1a2b");
        assert_eq!(
            n.pod_endpoint("alpha-node-8", "chat"),
            "http://alpha-node-8.alpha-nodes.chat.svc:9180"
        );
        assert_eq!(Component::Node.to_string(), "chat-node");
    }
}
