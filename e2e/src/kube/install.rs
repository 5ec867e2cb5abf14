//! Step 1: the operator installed and leading. The run's namespace, the chart's CRDs applied
//! server-side (as an upgrade would: helm installs them only when absent), `helm install` of
//! the operator chart, its Deployment available and its Lease held by one of its pods.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use super::run::Run;
use super::{CLUSTER_CRD, MANAGER, k8s, log, sample};

impl Run<'_> {
    /// Step 1: the namespace, the CRDs, `helm install` of the operator chart, its Deployment
    /// available and its Lease held by one of its pods.
    pub(super) async fn install(&mut self) -> Result<()> {
        let ns = self.ns.clone();
        log(format_args!(
            "namespace {ns}, release {}, operator image {}, node image {}, ingress host {}",
            self.release, self.o.operator_image, self.o.node_image, self.host
        ));
        self.create_namespace().await?;
        self.apply_crds().await?;
        self.helm_install().await?;
        self.wait_operator_available().await?;
        let holder = self.wait_leader().await?;
        log(format_args!("operator installed; leader {holder}"));
        Ok(())
    }

    /// The run's namespace, labelled as the scenario's.
    async fn create_namespace(&self) -> Result<()> {
        let ns = self.ns.clone();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut meta = kube::api::ObjectMeta {
            name: Some(ns.clone()),
            ..Default::default()
        };
        meta.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/part-of".to_owned(),
            "parley-e2e".to_owned(),
        )]));
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: meta,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        Ok(())
    }

    /// The chart's CRDs applied server-side, each waited for until Established; notes
    /// whether this run created them.
    async fn apply_crds(&mut self) -> Result<()> {
        // The chart's CRDs, applied as an upgrade would (helm installs them only when absent).
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        self.created_crds = crds.get_opt(CLUSTER_CRD).await?.is_none();
        let crd_dir = self.o.chart.join("crds");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&crd_dir)
            .with_context(|| format!("cannot read {}", crd_dir.display()))?
        {
            let path = entry?.path();
            if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for doc in sample::parse_documents(&text)? {
                let crd: CustomResourceDefinition = serde_json::from_value(doc)
                    .with_context(|| format!("{} is not a CRD", path.display()))?;
                let name = crd.name_any();
                crds.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("applying CRD {name}"))?;
                names.push(name);
            }
        }
        for name in &names {
            let crds = crds.clone();
            k8s::wait_for(
                &format!("CRD {name} to be established"),
                Duration::from_secs(60),
                Duration::from_millis(300),
                || {
                    let crds = crds.clone();
                    async move {
                        let c = crds.get(name).await?;
                        let ok = c.status.and_then(|s| s.conditions).is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        });
                        Ok(ok.then_some(()))
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// `helm install` of the operator chart with the run's values.
    async fn helm_install(&mut self) -> Result<()> {
        let ns = self.ns.clone();
        let values = self.o.chart_values(&ns)?;
        let values_file =
            std::env::temp_dir().join(format!("parley-e2e-{}-values.json", self.unique));
        std::fs::write(&values_file, values.to_string())?;
        let chart = self.o.chart.to_string_lossy().into_owned();
        let vf = values_file.to_string_lossy().into_owned();
        let out = k8s::helm(
            &self.o.helm,
            &self.o.kubeconfig,
            &[
                "install",
                &self.release,
                &chart,
                "-n",
                &ns,
                "-f",
                &vf,
                "--timeout",
                "120s",
            ],
            Duration::from_secs(180),
        )
        .await;
        let _ = std::fs::remove_file(&values_file);
        out?;
        self.installed = true;
        Ok(())
    }

    /// Waits until the operator Deployment is available with every replica.
    async fn wait_operator_available(&self) -> Result<()> {
        let ns = self.ns.clone();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let selector = format!("app.kubernetes.io/instance={}", self.release);
        let release = self.release.clone();
        let client = self.client.clone();
        let waited = k8s::wait_for(
            "the operator Deployment to be available",
            self.limit(),
            Duration::from_secs(1),
            || {
                let deployments = deployments.clone();
                let release = release.clone();
                let client = client.clone();
                let ns = ns.clone();
                let selector = selector.clone();
                async move {
                    let d = deployments.get(&release).await?;
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let st = d.status.clone().unwrap_or_default();
                    let available = st
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Available" && c.status == "True");
                    if available && st.available_replicas.unwrap_or(0) >= want {
                        return Ok(Some(()));
                    }
                    Err(anyhow!(
                        "{} of {want} available\n{}",
                        st.available_replicas.unwrap_or(0),
                        k8s::pods_report(&client, &ns, Some(&selector)).await
                    ))
                }
            },
        )
        .await;
        waited?;
        Ok(())
    }

    /// Waits until the operator's Lease has a holder and checks the holder is one of the
    /// operator's pods; answers its name.
    async fn wait_leader(&self) -> Result<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        let release = self.release.clone();
        let holder = k8s::wait_for(
            "the operator's Lease to have a holder",
            Duration::from_secs(120),
            Duration::from_secs(1),
            || {
                let leases = leases.clone();
                let release = release.clone();
                async move {
                    let l = leases.get_opt(&release).await?;
                    let holder = l
                        .and_then(|l| l.spec)
                        .and_then(|s| s.holder_identity)
                        .filter(|h| !h.is_empty());
                    Ok(holder)
                }
            },
        )
        .await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let operator_pods = pods
            .list(
                &ListParams::default()
                    .labels(&format!("app.kubernetes.io/instance={}", self.release)),
            )
            .await?;
        ensure!(
            operator_pods.items.iter().any(|p| p.name_any() == holder),
            "the Lease holder {holder} is none of the operator's pods: {:?}",
            operator_pods
                .items
                .iter()
                .map(|p| p.name_any())
                .collect::<Vec<_>>()
        );
        Ok(holder)
    }
}
