//! Ring membership in distributed mode: the configured nodes (`PARLEY_NODES`) that are
//! alive. Each node keeps a lease in Redis (`parley:<cluster>:node:<name>`, renewed every
//! fifth of its length); the ring is made of the members whose lease exists. A node acts as
//! a channel's owner only while its own lease is fresh enough that nobody else can have
//! taken its channels over, in-flight Kafka writes included.
//!
//! ```text
//!   renew my lease ──► read every member's lease ──► alive set changed? ──► new ring, epoch+1
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parley_crd::{Member, Ring};
use parley_protocol::Id;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The ring as this node sees it.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Increases by one at every membership change this node observes.
    pub epoch: u64,
    pub ring: Ring,
}

/// Timing of the leases.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    /// How long a lease lives without renewal.
    pub lease: Duration,
    /// The longest a send may still be in flight to Kafka.
    pub delivery_timeout: Duration,
}

impl Leases {
    pub fn renew_every(self) -> Duration {
        self.lease / 5
    }

    /// How long after its last renewal a node still starts owner work: the lease, less the
    /// longest in-flight write, less a renewal period of margin.
    pub fn owner_window(self) -> Duration {
        self.lease
            .saturating_sub(self.delivery_timeout)
            .saturating_sub(self.renew_every())
    }
}

/// This node's membership.
pub struct Cluster {
    me: String,
    /// The configured members (`PARLEY_NODES`, or the ChatCluster's ring in Kubernetes).
    members: ArcSwap<Vec<Member>>,
    leases: Leases,
    namespace: String,
    redis: ConnectionManager,
    view: ArcSwap<View>,
    changes: watch::Sender<u64>,
    renewed: Mutex<Option<Instant>>,
    pub secret: String,
    pub http: reqwest::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.me)
            .field("epoch", &self.view.load().epoch)
            .finish()
    }
}

impl Cluster {
    pub fn new(
        me: &str,
        members: Vec<Member>,
        leases: Leases,
        namespace: &str,
        redis: ConnectionManager,
        secret: String,
    ) -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            me: me.to_owned(),
            members: ArcSwap::from_pointee(members),
            leases,
            namespace: namespace.to_owned(),
            redis,
            view: ArcSwap::from_pointee(View::default()),
            changes,
            renewed: Mutex::new(None),
            secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    /// Replaces the configured members (the ChatCluster's ring changed); the next tick
    /// rebuilds the ring from those whose lease exists.
    pub fn set_members(&self, members: Vec<Member>) {
        if *self.members.load_full() != members {
            tracing::info!(members = ?members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), "ring members from the ChatCluster");
            self.members.store(std::sync::Arc::new(members));
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    fn key(&self, name: &str) -> String {
        format!("parley:{}:node:{name}", self.namespace)
    }

    pub fn view(&self) -> std::sync::Arc<View> {
        self.view.load_full()
    }

    pub fn epoch(&self) -> u64 {
        self.view.load().epoch
    }

    /// Notified with the new epoch at every membership change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The owner of `channel` in the current view.
    pub fn owner(&self, channel: Id) -> Option<Member> {
        self.view.load().ring.owner(channel.0).cloned()
    }

    pub fn is_me(&self, member: &Member) -> bool {
        member.name == self.me
    }

    /// Whether this node may start owner work now (its lease is fresh).
    pub fn may_own(&self) -> bool {
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        renewed.is_some_and(|at| at.elapsed() < self.leases.owner_window())
    }

    /// Renews the lease and refreshes the view once.
    pub async fn tick(&self) {
        let mut conn = self.redis.clone();
        let members = self.members.load_full();
        let me = members
            .iter()
            .find(|m| m.name == self.me)
            .map(|m| m.endpoint.clone())
            .unwrap_or_default();
        let renewed: Result<(), redis::RedisError> = redis::cmd("SET")
            .arg(self.key(&self.me))
            .arg(me)
            .arg("PX")
            .arg(self.leases.lease.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        match renewed {
            Ok(()) => {
                *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now())
            }
            Err(e) => {
                tracing::warn!("renewing this node's lease failed: {e}");
                // Keep the last view: during a Redis outage nobody's lease can be seen expiring.
                return;
            }
        }
        let keys: Vec<String> = members.iter().map(|m| self.key(&m.name)).collect();
        let alive: Result<Vec<Option<String>>, _> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await;
        let Ok(alive) = alive else { return };
        let live: Vec<Member> = members
            .iter()
            .zip(alive)
            .filter(|(_, v)| v.is_some())
            .map(|(m, _)| m.clone())
            .collect();
        let current = self.view.load();
        if current.ring.members() != live.as_slice() || current.epoch == 0 {
            let epoch = current.epoch + 1;
            let names: Vec<&str> = live.iter().map(|m| m.name.as_str()).collect();
            tracing::info!(epoch, members = ?names, "ring changed");
            self.view.store(std::sync::Arc::new(View {
                epoch,
                ring: Ring::new(live),
            }));
            let _ = self.changes.send(epoch);
        }
    }

    /// Renews and refreshes until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.leases.renew_every());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.tick().await,
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// Gives the lease up, so the others take this node's channels over at once. Called
    /// after the last send in progress has finished.
    pub async fn release(&self) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut conn = self.redis.clone();
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(self.key(&self.me))
            .query_async(&mut conn)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_window_leaves_room_for_in_flight_writes() {
        let l = Leases {
            lease: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(5),
        };
        assert_eq!(l.renew_every(), Duration::from_secs(2));
        assert_eq!(l.owner_window(), Duration::from_secs(3));
    }
}
