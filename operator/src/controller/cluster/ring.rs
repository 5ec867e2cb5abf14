//! Phase 6, the ring: the ready chat-node pods within the desired ordinals, with an epoch
//! that moves on when they change. Nodes read it from the status.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use parley_crd::resources::{RingStatus, WorkerIdRange};

use crate::controller::target::Target;
use crate::error::Result;
use crate::resources::{self as r, Component};
use crate::status::{RingScope, next_ring, ring_members};

/// What phase 6 observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    /// The members and their epoch.
    pub ring: RingStatus,
    /// The chat-node pods' label selector (`k=v,...`), for the scale subresource.
    pub selector: String,
}

/// Phase 6: lists the chat-node pods (one request).
pub async fn observe(
    t: &Target<'_>,
    workers: WorkerIdRange,
    previous: Option<&RingStatus>,
) -> Result<Ring> {
    let selector = r::selector_string(&r::selector(t.cluster, Component::Node));
    let pods = t
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let scope = RingScope {
        names: &t.names,
        namespace: &t.namespace,
        workers,
        desired: t.cluster.spec.replicas,
    };
    let members = ring_members(&pods, &scope);
    Ok(Ring {
        ring: next_ring(previous, members),
        selector,
    })
}
