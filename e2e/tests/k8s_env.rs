//! `dev/k8s` itself: a second control plane, in a state directory and on ports of its own,
//! with **one** fake node becomes ready and goes down without leftovers. With
//! `PARLEY_K8S_NODES=1` it never did: the readiness check asked `kubectl get lease NAME`,
//! which for a single name answers an object, not a list, so it counted no held Lease.
//! Needs the binaries `dev/k8s up` builds (dev/test runs it first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `dev/k8s ARGS` with this test's state directory, ports and one fake node.
fn dev_k8s(state: &Path, args: &[&str]) -> Output {
    Command::new(repo().join("dev/k8s"))
        .args(args)
        .env("PARLEY_STATE_DIR", state)
        .env("PARLEY_K8S_NODES", "1")
        .env("PARLEY_K8S_ETCD_PORT", "23890")
        .env("PARLEY_K8S_ETCD_PEER_PORT", "23900")
        .env("PARLEY_K8S_API_PORT", "16543")
        .env("PARLEY_K8S_CONTROLLER_MANAGER_PORT", "16357")
        .env("PARLEY_K8S_SCHEDULER_PORT", "16359")
        .env_remove("PARLEY_K8S_REAL_NODE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run dev/k8s: {e}"))
}

/// Takes the control plane down (and its state away) however the test ends.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let out = dev_k8s(&self.0, &["down", "--purge"]);
        if !out.status.success() {
            eprintln!("dev/k8s down: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_control_plane_with_one_fake_node_becomes_ready() {
    let state = std::env::temp_dir().join(format!("parley-k8s-one-node-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let _down = Down(state.clone());

    let up = dev_k8s(&state, &["up"]);
    assert!(
        up.status.success(),
        "dev/k8s up with PARLEY_K8S_NODES=1 failed:\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = dev_k8s(&state, &["status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("dev/k8s status printed no JSON: {e}"));
    assert_eq!(status["fake_nodes_ready"], 1, "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["server"], "https://127.0.0.1:16543", "{status}");
}
