//! The ChatCluster a reconcile works on, with the calls every phase makes: read an object of
//! its namespace, apply one (server-side apply, the operator's field manager, forced).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt as _};
use parley_crd::resources::ChatCluster;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::resources::{MANAGER, Names};

/// A namespaced kind the operator reads or applies.
pub trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
{
}

/// The ChatCluster being reconciled, the namespace of everything it owns, their names, and
/// the client to reach them.
#[derive(Clone)]
pub struct Target<'a> {
    /// The API server's client.
    pub client: &'a Client,
    /// The ChatCluster as the reconcile got it (from the watch cache).
    pub cluster: &'a ChatCluster,
    /// The cluster's namespace: its children's too.
    pub namespace: String,
    /// The names of what the cluster owns.
    pub names: Names,
}

impl Debug for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("namespace", &self.namespace)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl<'a> Target<'a> {
    /// [`Error::Missing`] when the cluster has no namespace (one read from the API has).
    pub fn new(client: &'a Client, cluster: &'a ChatCluster) -> Result<Self> {
        Ok(Self {
            client,
            cluster,
            namespace: cluster.namespace().ok_or(Error::Missing("namespace"))?,
            names: Names::of(cluster),
        })
    }

    /// `K` in the cluster's namespace.
    pub fn api<K: Namespaced>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The `K` called `name`, if there is one.
    pub async fn get<K: Namespaced>(&self, name: &str) -> Result<Option<K>> {
        Ok(self.api::<K>().get_opt(name).await?)
    }

    /// Server-side applies `obj` (which must have a name); the object as the API server
    /// now has it.
    pub async fn apply<K: Namespaced>(&self, obj: &K) -> Result<K> {
        let name = obj.meta().name.clone().ok_or(Error::Missing("name"))?;
        Ok(self
            .api::<K>()
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?)
    }
}
