//! The end-to-end scenario on a real Kubernetes cluster, shared by the real-node test
//! (`e2e/tests/real_node.rs`, against `dev/k8s up --real-node`, `dev/images`, `dev/edge`)
//! and the `parley-e2e-kube` binary (`e2e/kind/run`, against a kind cluster).
//!
//! ```text
//!   1 install   namespace, the chart's CRDs (server-side apply), `helm install` of the
//!               operator chart (its image, a pod with leader election): Deployment
//!               available, Lease held
//!   2 apply     examples/chatcluster.yaml, patched (backends, images, scheduling, ingress,
//!               the trusted proxies on the real node, a unique topic prefix)
//!   3 ready     the ChatCluster Ready; the migration Job's pod exited 0; chat-node and
//!               persister pods Running with every container started and ready
//!   4 chat      through the edge only: two users on different chat-node pods chat, page
//!               history, resume after a reconnect
//!   5 churn     with traffic flowing (senders every ~100 ms, listeners): delete a chat-node
//!               pod, scale 2→3→2, add a ChatShard taking half a shard's slots, restart the
//!               StatefulSet (peak reconnects per second measured)
//!   6 verify    every acknowledged message in history exactly once, seqs gapless,
//!               received by the other clients; one summary line
//!   cleanup     ChatCluster, helm uninstall, namespace (also on failure; `--keep` skips it)
//! ```
//! Every wait is bounded and says what it saw when it gives up.
//!
//! Where each part lives (`run` calls the steps in order; each step is an `impl Run` block in
//! its own module; the pure parts are unit-tested):
//!
//! ```text
//!   run.rs      run(), Summary, Run: the state the steps share, apply, wait_ready, wait_pods
//!   options.rs  Options (flags), Until, chart values, scheduling, trusted proxies   (pure)
//!   install.rs  step 1
//!   ready.rs    steps 2 and 3
//!   chat.rs     step 4; fetch_history for step 6
//!   churn.rs    step 5: Traffic, the pod deletion, scaling, the rollout
//!   shard.rs    step 5's third ChatShard; choose_split, third_shard             (pure)
//!   verify.rs   step 6: settle, history check, figures
//!   cleanup.rs  cleanup
//!   sample.rs   the sample patched for a run                                    (pure)
//!   backends.rs the backends file                                               (pure)
//!   traffic.rs  the traffic clients, Ledger, verify()
//!   edge.rs     the protocol client through the ingress
//!   k8s.rs      API helpers, wait_for, reports, helm
//! ```

pub mod backends;
pub mod edge;
pub mod k8s;
pub mod sample;
pub mod traffic;

mod chat;
mod churn;
mod cleanup;
mod install;
mod options;
mod ready;
mod run;
mod shard;
mod verify;

use std::time::Duration;

pub use self::chat::{Chat, chat};
pub use self::options::{
    Options, REAL_NODE_PROXIES, Until, parse_toleration, split_image, unique_suffix,
};
pub use self::run::{Summary, run};

/// Field manager of the scenario's server-side applies.
const MANAGER: &str = "parley-e2e";
/// The ChatCluster CRD's name.
const CLUSTER_CRD: &str = "chatclusters.parley.dev";
/// How long one WebSocket step may wait for a frame.
const FRAME_WAIT: Duration = Duration::from_secs(15);

/// One line of the scenario's log, on stdout.
fn log(msg: impl std::fmt::Display) {
    println!("[parley-e2e-kube] {msg}");
}
