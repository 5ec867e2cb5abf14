//! Parley operator: reconciles `ChatCluster` and `ChatShard` resources into chat-node
//! StatefulSets, Services, the edge, migrations and Kafka topics.
//!
//! The controllers arrive with the operator issue; this crate pins the Kubernetes client
//! stack (kube, kube-runtime, k8s-openapi, schemars) the workspace builds against.
#![forbid(unsafe_code)]

pub mod crds;

/// Kubernetes API version the typed client is generated for.
pub const KUBERNETES_API: &str = "1.35";
