//! Parley operator: reconciles `ChatCluster` and `ChatShard` resources into chat-node
//! StatefulSets, Services, the edge, migrations and Kafka topics.
//!
//! Done so far: the CRDs generated from `parley-crd` (`crds`, the `crdgen` binary) and the
//! pure builders from a ChatCluster to the objects it implies (`resources`). The controllers,
//! leader election and the chat-nodes' live view of their ChatCluster are still to come.
#![forbid(unsafe_code)]

pub mod controller;
pub mod crds;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod run;
pub mod status;
