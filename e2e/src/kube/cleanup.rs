//! Cleanup, also after a failure (`--keep` skips it): the ChatCluster, `helm uninstall`, the
//! release's cluster-scoped RBAC, the namespace, and the CRDs when this run created them and
//! no other ChatCluster uses them.

use std::time::Duration;

use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams};

use super::run::Run;
use super::{CLUSTER_CRD, k8s, log};

impl Run<'_> {
    pub(super) async fn cleanup(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        log(format_args!("cleaning up {}", self.ns));
        if !self.cluster_name.is_empty() {
            let _ = self
                .clusters()
                .delete(&self.cluster_name, &DeleteParams::default())
                .await;
        }
        if self.installed
            && let Err(e) = k8s::helm(
                &self.o.helm,
                &self.o.kubeconfig,
                &[
                    "uninstall",
                    &self.release,
                    "-n",
                    &self.ns,
                    "--wait",
                    "--timeout",
                    "120s",
                ],
                Duration::from_secs(150),
            )
            .await
        {
            problems.push(format!("{e:#}"));
        }
        // Cluster-scoped objects of the release go with it; make sure.
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        let bindings: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        let _ = bindings
            .delete(&self.release, &DeleteParams::default())
            .await;
        let _ = roles.delete(&self.release, &DeleteParams::default()).await;

        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.delete(&self.ns, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => problems.push(format!("deleting namespace {}: {e}", self.ns)),
        }
        let ns = self.ns.clone();
        let gone = k8s::wait_for(
            &format!("namespace {ns} to go"),
            Duration::from_secs(180),
            Duration::from_secs(1),
            || {
                let namespaces = namespaces.clone();
                let ns = ns.clone();
                async move { Ok(namespaces.get_opt(&ns).await?.is_none().then_some(())) }
            },
        )
        .await;
        if let Err(e) = gone {
            problems.push(format!("{e:#}"));
        }
        if self.created_crds {
            // Only when no other ChatCluster uses them.
            let all: Api<kube::api::DynamicObject> =
                Api::all_with(self.client.clone(), &k8s::parley_resource("ChatCluster"));
            let others = all
                .list(&ListParams::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(1);
            if others == 0 {
                let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
                for name in [CLUSTER_CRD, "chatshards.parley.dev"] {
                    let _ = crds.delete(name, &DeleteParams::default()).await;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(problems.join("; ")))
        }
    }
}
