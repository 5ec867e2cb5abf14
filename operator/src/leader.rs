//! Leader election with a `coordination.k8s.io` Lease, so two operator replicas are safe:
//! only the holder reconciles. The holder renews every `renew`; another replica takes over
//! when the lease has not been renewed for `duration`. Updates use the Lease's
//! resourceVersion, so two replicas cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// Why this replica cannot take part in the election at all.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The Lease's namespace does not exist: waiting would never end.
    #[error(
        "the leader Lease's namespace {0:?} does not exist: set POD_NAMESPACE (or --lease-namespace) \
         to an existing namespace, or create it with `kubectl create namespace {0}`"
    )]
    NoNamespace(String),
    /// A request to the API server failed (retried while waiting to lead).
    #[error("leader election: {0}")]
    Kube(#[from] kube::Error),
}

/// One replica's candidacy.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish()
    }
}

impl Elector {
    /// A candidate for the Lease `name` behind `api`, as `identity`; the Lease lasts
    /// `duration` unrenewed.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// Tries once to hold (or keep) the lease; `true` when this replica is the leader.
    /// [`ElectionError::NoNamespace`] when the Lease's namespace does not exist.
    pub async fn try_acquire(&self) -> Result<bool, ElectionError> {
        let now = MicroTime(Timestamp::now());
        let secs = self.duration.as_secs() as i32;
        let current = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                // Creating in a namespace that is not there: `namespaces "x" not found`.
                Err(kube::Error::Api(e)) if e.code == 404 => Err(ElectionError::NoNamespace(
                    self.api.namespace().unwrap_or_default().to_owned(),
                )),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let age = Timestamp::now().duration_since(t.0);
            age.as_secs() >= i64::from(spec.lease_duration_seconds.unwrap_or(secs))
        });
        if !mine && !expired {
            return Ok(false);
        }
        let mut next = spec.clone();
        if !mine {
            next.holder_identity = Some(self.identity.clone());
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next.renew_time = Some(now);
        next.lease_duration_seconds = Some(secs);
        lease.spec = Some(next);
        // `replace` carries the resourceVersion we read: a concurrent writer makes it fail.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up on a clean shutdown, so another replica leads at once rather than
    /// after `duration`. Does nothing when another replica holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone else wrote it since: it is not ours to release any more.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads. Passing errors (the API server away, a conflict) are
    /// logged and retried; a Lease namespace that does not exist is returned, since no wait
    /// ends that.
    pub async fn acquire(&self) -> Result<(), ElectionError> {
        loop {
            match self.try_acquire().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e @ ElectionError::NoNamespace(_)) => return Err(e),
                Err(e) => tracing::warn!("{e}"),
            }
            tokio::time::sleep(self.duration / 4).await;
        }
    }

    /// Renews until the lease is lost (returns then); the caller stops reconciling.
    pub async fn hold(&self) {
        let mut failures = 0;
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => failures = 0,
                Ok(false) => return,
                Err(e) => {
                    failures += 1;
                    tracing::warn!("renewing the leader lease: {e}");
                    if failures >= 2 {
                        return;
                    }
                }
            }
        }
    }
}
