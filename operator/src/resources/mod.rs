//! Pure builders: from a `ChatCluster` (and what the operator decided about it) to the
//! Kubernetes objects it implies. No I/O here; the controller applies what these return with
//! server-side apply. Every object's name comes from [`names::Names`].
//!
//! ```text
//!   ChatCluster ──► config()       ConfigMap   <name>-config    (non-secret settings)
//!               ├─► services()     Service     <name>-nodes     (headless, for the ring)
//!               │                  Service     <name>           (clients)
//!               ├─► statefulset()  StatefulSet <name>-node      (chat-nodes, ordinals = worker IDs)
//!               ├─► persister()    Deployment  <name>-persister
//!               ├─► pdb()          PodDisruptionBudget <name>-node
//!               ├─► rbac()         ServiceAccount/Role/RoleBinding <name>-node
//!               ├─► migration()    Job         <name>-migrate-<hash>
//!               └─► edge()         Ingress or HTTPRoute <name>
//! ```

mod access;
mod config;
mod edge;
pub mod names;
mod nodes;
mod persister;
mod pod;
mod support;

pub use access::{rbac, services};
pub use config::config;
pub use edge::{Edge, edge, http_route_resource};
pub use names::{Component, Names, PENDING_SHARDS_KEY, SHARDS_ANNOTATION};
pub use nodes::{pdb, statefulset};
pub use persister::{migration, persister};
pub use support::*;

#[cfg(test)]
mod tests {
    //! What a real kubelet checks and kwok does not: every workload's pods can start.
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use parley_crd::resources::ChatCluster;

    use super::fixtures::{cluster, decided, everything, everything_decided};
    use super::*;

    /// Every pod the operator renders for `cluster`, by workload.
    fn pods(c: &ChatCluster, d: &Decided) -> Vec<(&'static str, PodSpec)> {
        vec![
            (
                "StatefulSet",
                statefulset(c, d, "h").spec.unwrap().template.spec.unwrap(),
            ),
            (
                "persister Deployment",
                persister(c, d, "h").spec.unwrap().template.spec.unwrap(),
            ),
            (
                "migration Job",
                migration(c, d, "h").spec.unwrap().template.spec.unwrap(),
            ),
        ]
    }

    /// The variables `container` sees: the ConfigMap's through `envFrom`, then its own `env`
    /// (which wins, as on a kubelet).
    fn environment(c: &ChatCluster, container: &Container) -> BTreeMap<String, String> {
        let cm = config(c);
        let mut env = BTreeMap::new();
        for from in container.env_from.iter().flatten() {
            let r = from.config_map_ref.as_ref().expect("envFrom a ConfigMap");
            assert_eq!(
                Some(&r.name),
                cm.metadata.name.as_ref(),
                "envFrom the cluster's ConfigMap"
            );
            env.extend(cm.data.clone().unwrap());
        }
        for e in container.env.iter().flatten() {
            env.insert(e.name.clone(), e.value.clone().unwrap_or_default());
        }
        env
    }

    /// Every `PARLEY_*_FILE` a container sees names a file under one of its mounts, of a
    /// volume its pod has, holding that key; `Err` says which does not.
    fn files_resolve(c: &ChatCluster, d: &Decided) -> Result<usize, String> {
        let mut checked = 0;
        for (what, pod) in pods(c, d) {
            let volumes = pod.volumes.clone().unwrap_or_default();
            for container in &pod.containers {
                for (key, path) in environment(c, container) {
                    if !key.ends_with("_FILE") {
                        continue;
                    }
                    let mount = container
                        .volume_mounts
                        .iter()
                        .flatten()
                        .find(|m| path.starts_with(&format!("{}/", m.mount_path)))
                        .ok_or_else(|| format!("{what}: {key}={path} is under no volumeMount"))?;
                    let volume = volumes
                        .iter()
                        .find(|v| v.name == mount.name)
                        .ok_or_else(|| format!("{what}: {key}: no volume {}", mount.name))?;
                    let file = &path[mount.mount_path.len() + 1..];
                    let items = volume
                        .secret
                        .as_ref()
                        .and_then(|s| s.items.clone())
                        .or_else(|| volume.config_map.as_ref().and_then(|m| m.items.clone()));
                    if let Some(items) = items
                        && !items.iter().any(|i| i.path == file)
                    {
                        return Err(format!(
                            "{what}: {key}: volume {} has no {file}",
                            mount.name
                        ));
                    }
                    checked += 1;
                }
            }
        }
        Ok(checked)
    }

    #[test]
    fn every_file_a_container_is_told_of_is_mounted() {
        for (c, d) in [(cluster(), decided()), (everything(), everything_decided())] {
            let checked = files_resolve(&c, &d).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                checked >= 15,
                "the shared files and the nodes' own: {checked}"
            );
        }
    }

    #[test]
    fn node_only_secrets_stay_out_of_persisters_and_the_migration() {
        let c = everything();
        let d = everything_decided();
        let cm = config(&c).data.unwrap();
        for key in [
            "PARLEY_JWT_SECRET_FILE",
            "PARLEY_CLUSTER_SECRET_FILE",
            "PARLEY_MODERATION_WORDS_FILE",
        ] {
            assert!(!cm.contains_key(key), "{key} is not shared");
        }
        for (what, pod) in pods(&c, &d) {
            let names: Vec<String> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
            let node = what == "StatefulSet";
            for v in ["jwt", "internal", "words"] {
                assert_eq!(names.contains(&v.to_owned()), node, "{what}: volume {v}");
            }
        }
        let sts = statefulset(&c, &d, "h");
        let env = environment(&c, &sts.spec.unwrap().template.spec.unwrap().containers[0]);
        assert_eq!(
            env["PARLEY_JWT_SECRET_FILE"],
            "/var/run/parley/secrets/jwt/token-secret"
        );
        assert_eq!(
            env["PARLEY_MODERATION_WORDS_FILE"],
            "/etc/parley/words/words.txt"
        );
        assert_eq!(
            env["PARLEY_REDIS_URL_FILE"],
            "/var/run/parley/secrets/redis/url"
        );
    }

    #[test]
    fn pods_run_on_a_read_only_root_as_65532_and_can_read_their_files() {
        let c = everything();
        for (what, pod) in pods(&c, &everything_decided()) {
            let psc = pod.security_context.clone().unwrap();
            assert_eq!(
                (psc.run_as_user, psc.run_as_group),
                (Some(65532), Some(65532))
            );
            assert_eq!(
                psc.fs_group,
                Some(65532),
                "{what}: Secret files belong to the pod's group"
            );
            for v in pod.volumes.iter().flatten() {
                if let Some(secret) = &v.secret {
                    let mode = secret.default_mode.unwrap_or(0o644);
                    assert_eq!(mode & 0o040, 0o040, "{what}: {} is group-readable", v.name);
                    assert_eq!(mode & 0o007, 0, "{what}: {} is not world-readable", v.name);
                }
            }
            for container in &pod.containers {
                let sc = container.security_context.clone().unwrap();
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
                // The only writable place: an emptyDir at /tmp.
                let tmp = container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| m.mount_path == "/tmp")
                    .unwrap_or_else(|| panic!("{what}: /tmp is mounted"));
                let vol = pod
                    .volumes
                    .iter()
                    .flatten()
                    .find(|v| v.name == tmp.name)
                    .unwrap();
                assert!(vol.empty_dir.is_some(), "{what}: /tmp is an emptyDir");
                assert!(
                    environment(&c, container)
                        .keys()
                        .all(|k| k != "PARLEY_DATA_DIR"),
                    "distributed mode writes no data directory"
                );
                // Probes name ports the container declares.
                let ports: Vec<String> = container
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.name.clone())
                    .collect();
                for probe in [
                    &container.liveness_probe,
                    &container.readiness_probe,
                    &container.startup_probe,
                ]
                .into_iter()
                .flatten()
                {
                    match &probe.http_get.as_ref().unwrap().port {
                        IntOrString::String(p) => {
                            assert!(ports.contains(p), "{what}: probe port {p} is declared")
                        }
                        IntOrString::Int(_) => panic!("{what}: probes use named ports"),
                    }
                }
            }
        }
    }

    #[test]
    fn scheduling_reaches_every_pod() {
        let c = everything();
        for (what, pod) in pods(&c, &everything_decided()) {
            assert_eq!(
                pod.node_selector.unwrap()["parley.dev/real-node"],
                "true",
                "{what}"
            );
            let t = &pod.tolerations.unwrap()[0];
            assert_eq!(t.key.as_deref(), Some("parley.dev/real-node"), "{what}");
            assert_eq!(t.effect.as_deref(), Some("NoSchedule"), "{what}");
        }
        for (what, pod) in pods(&cluster(), &decided()) {
            assert!(
                pod.node_selector.is_none() && pod.tolerations.is_none(),
                "{what}"
            );
        }
    }
}
