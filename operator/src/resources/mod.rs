//! Pure builders: from a `ChatCluster` (and what the operator decided about it) to the
//! Kubernetes objects it implies. No I/O here; the controller applies what these return with
//! server-side apply.
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

mod edge;
mod nodes;
mod persister;
mod support;

pub use edge::{Edge, edge, http_route_resource};
pub use nodes::{config, pdb, rbac, services, statefulset};
pub use persister::{PENDING_SHARDS_KEY, SHARDS_ANNOTATION, migration, persister};
pub use support::*;
