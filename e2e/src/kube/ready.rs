//! Steps 2 and 3: the sample applied (patched for the run, see [`sample`]) and the
//! ChatCluster Ready: every shard in force, the migration Job's pod exited 0, the chat-node
//! and persister pods Running with every container started and ready.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};

use super::run::Run;
use super::{backends, k8s, log, sample};

impl Run<'_> {
    pub(super) async fn apply_sample(&mut self, b: &backends::Backends) -> Result<sample::Sample> {
        let text = std::fs::read_to_string(&self.o.sample)
            .with_context(|| format!("cannot read the sample {}", self.o.sample.display()))?;
        let docs = sample::parse_documents(&text)
            .with_context(|| format!("{} is not YAML", self.o.sample.display()))?;
        let (node_selector, tolerations) = self.o.scheduling()?;
        let patch = sample::Patch {
            namespace: self.ns.clone(),
            backends: b.clone(),
            node_image: self.o.node_image.clone(),
            pull_policy: self.o.pull_policy.clone(),
            node_selector,
            tolerations,
            ingress_host: self.host.clone(),
            ingress_class: self.o.ingress_class.clone(),
            trusted_proxies: self.o.trusted_proxies(),
            topic_prefix: format!("e2e-{}", self.unique),
            partitions: 6,
            replicas: 2,
            persisters: 1,
            jwt_secret: format!("jwt-{}-{}", self.unique, "0123456789abcdef0123456789abcdef"),
        };
        let s = sample::patch(docs, &patch)?;
        self.cluster_name = sample::name_of(&s.cluster).to_owned();
        for obj in s
            .support
            .iter()
            .chain(std::iter::once(&s.cluster))
            .chain(&s.shards)
        {
            self.apply(obj).await?;
        }
        log(format_args!(
            "applied {} objects of {}: ChatCluster {} with shards {:?}",
            s.support.len() + 1 + s.shards.len(),
            self.o.sample.display(),
            self.cluster_name,
            s.shards.iter().map(sample::name_of).collect::<Vec<_>>()
        ));
        Ok(s)
    }

    pub(super) async fn ready(&mut self, s: &sample::Sample) -> Result<()> {
        let replicas = s.cluster["spec"]["replicas"].as_i64().unwrap_or(2);
        let shards = s.shards.len();
        let c = self
            .wait_ready("the ChatCluster to be Ready", |c| {
                let ready = c["status"]["readyReplicas"].as_i64().unwrap_or(0);
                let in_force = c["status"]["shards"].as_array().map_or(0, Vec::len);
                if ready == replicas && in_force == shards {
                    Ok(())
                } else {
                    Err(format!(
                        "{ready}/{replicas} chat-nodes ready, {in_force}/{shards} shards in force"
                    ))
                }
            })
            .await?;
        log(format_args!(
            "ChatCluster Ready: ring {}",
            c["status"]["ring"]
        ));

        // The migration Job really ran: it succeeded with a pod that exited 0.
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.ns);
        let list = jobs
            .list(&ListParams::default().labels(&self.selector("migrate")))
            .await?;
        let done: Vec<&Job> = list
            .items
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1)
            .collect();
        ensure!(
            !done.is_empty(),
            "no migration Job succeeded: {:?}",
            list.items
                .iter()
                .map(|j| (j.name_any(), j.status.clone()))
                .collect::<Vec<_>>()
        );
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let mut ran = Vec::new();
        for j in &done {
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={}", j.name_any())))
                .await?;
            ran.extend(list.items.into_iter().filter(k8s::pod_exited_zero));
        }
        ensure!(
            !ran.is_empty(),
            "the migration Job(s) {:?} succeeded but no pod of theirs shows a container that exited 0:\n{}",
            done.iter().map(|j| j.name_any()).collect::<Vec<_>>(),
            k8s::pods_report(&self.client, &self.ns, Some(&self.selector("migrate"))).await
        );
        log(format_args!(
            "migration ran: pod {} exited 0",
            ran[0].name_any()
        ));
        let nodes = self.wait_pods("chat-node", replicas as usize).await?;
        let persisters = s.cluster["spec"]["persister"]["replicas"]
            .as_u64()
            .unwrap_or(1) as usize;
        let ps = self.wait_pods("persister", persisters).await?;
        log(format_args!(
            "running: {} chat-node pod(s) {:?}, {} persister pod(s)",
            nodes.len(),
            nodes.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ps.len()
        ));
        Ok(())
    }
}
