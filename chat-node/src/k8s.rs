//! In Kubernetes, the ring members come from the node's `ChatCluster` (its
//! `status.ring.members`, kept by the operator), watched live: a scale-up or scale-down
//! changes the ring without restarting anything.

use std::sync::Arc;

use futures_util::StreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use parley_crd::Member;
use parley_crd::resources::ChatCluster;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;

/// The members a ChatCluster's status lists.
pub fn members_of(cluster: &ChatCluster) -> Vec<Member> {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.ring.as_ref())
        .map(|r| {
            r.members
                .iter()
                .map(|m| Member {
                    name: m.name.clone(),
                    endpoint: m.endpoint.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Watches `namespace/name` and hands every ring change to `cluster`, until `shutdown`.
pub async fn watch_ring(
    client: Client,
    namespace: String,
    name: String,
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
) {
    let api: Api<ChatCluster> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, config).boxed();
    loop {
        let next = tokio::select! {
            e = events.next() => e,
            () = shutdown.cancelled() => return,
        };
        match next {
            Some(Ok(Event::Apply(c) | Event::InitApply(c))) => cluster.set_members(members_of(&c)),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!("watching ChatCluster {namespace}/{name}: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_members_come_from_the_status() {
        let mut c: ChatCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "parley.dev/v1alpha1", "kind": "ChatCluster",
            "metadata": {"name": "alpha", "namespace": "chat"},
            "spec": {
                "image": "i", "redis": {"url": "redis://r"}, "kafka": {"bootstrapServers": "k:9092"},
                "directory": {"secretRef": {"name": "d"}},
                "media": {"bucket": "bkt", "credentialsSecretRef": {"name": "s3"}}
            }
        }))
        .unwrap();
        assert!(members_of(&c).is_empty(), "no status yet: no members");
        c.status = Some(serde_json::from_value(serde_json::json!({
            "ring": {"epoch": 3, "members": [
                {"name": "alpha-node-8", "ordinal": 8, "workerId": 8, "endpoint": "http://alpha-node-8.alpha-nodes.chat.svc:9180"}
            ]}
        })).unwrap());
        assert_eq!(
            members_of(&c),
            [Member {
                name: "alpha-node-8".into(),
                endpoint: "http://alpha-node-8.alpha-nodes.chat.svc:9180".into()
            }]
        );
    }
}
