//! Parley operator: reconciles `ChatCluster` and `ChatShard` resources into chat-node
//! StatefulSets, Services, the edge, migrations and Kafka topics.
//!
//! ```text
//!   run ── metrics, leader (Lease) ──► controller::{cluster, shard}   (I/O: kube::Client)
//!                                         │ phases read and apply through a Target
//!                                         ├──► resources   pure: ChatCluster ─► objects
//!                                         │      names     every object/key/label name
//!                                         └──► status      pure: shard map, ring,
//!                                                          conditions (Reason enum)
//!   crds (+ the crdgen binary): the CRDs generated from parley-crd's types
//! ```
//!
//! `resources` and `status` do no I/O and are tested by calling them; the controllers are
//! tested against a scripted API server (`controller::fixtures`), and end to end against a
//! real kube-apiserver in `e2e/tests/operator.rs`.
#![forbid(unsafe_code)]

pub mod controller;
pub mod crds;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod run;
pub mod status;
