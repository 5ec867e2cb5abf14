//! Ring membership in distributed mode: the configured nodes (`PARLEY_NODES`) that are
//! alive. Each node keeps a lease in Redis (`parley:<cluster>:node:<name>`, renewed every
//! fifth of its length); the ring is made of the members whose lease exists. A node acts as
//! a channel's owner only while its own lease is fresh enough that nobody else can have
//! taken its channels over, in-flight Kafka writes included.
//!
//! ```text
//!   renew my lease ──► read every member's lease ──► alive set changed? ──► new ring, epoch+1
//! ```
//!
//! Ownership moves only when its holder gave it up or its lease expired, never on a list
//! alone: a member that leaves the configured list (the operator drops a pod being deleted
//! or not Ready) stays in the ring while its lease lives. A node gives its channels up
//! ([`Cluster::give_up`]) when it drains or finds itself off the list: it waits for the owner
//! work in progress (its last append), deletes its lease and announces `RingChanged` on the
//! `cluster` topic, so every node reads the leases again at once instead of at its next tick.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parley_crd::{Member, Ring};
use parley_protocol::Id;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::{PubSub, Topic};
use crate::internal::ClusterEvent;

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
    /// How often the lease is renewed: a fifth of its length.
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
    /// Members that left the configured list but may still hold a lease: they keep their
    /// channels until it is gone.
    departing: Mutex<Vec<Member>>,
    /// Set when this node drains: it never renews its lease again.
    leaving: AtomicBool,
    /// Owner work (a send being sequenced) holds it shared; giving the channels up takes it
    /// exclusively, so the lease goes only after the last append.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// One tick at a time (the timer, pokes and refreshes).
    ticking: tokio::sync::Mutex<()>,
    /// Wakes the tick loop early (another node gave its channels up; the list changed).
    poke: Arc<Notify>,
    /// Where `RingChanged` is announced.
    pubsub: Arc<dyn PubSub>,
    leases: Leases,
    namespace: String,
    redis: ConnectionManager,
    view: ArcSwap<View>,
    changes: watch::Sender<u64>,
    renewed: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.me)
            .field("epoch", &self.view.load().epoch)
            .finish()
    }
}

/// What [`Cluster::new`] needs besides the node's name and members.
pub struct Wiring {
    pub leases: Leases,
    /// Namespace of the Redis keys (the topic prefix).
    pub namespace: String,
    pub redis: ConnectionManager,
    /// Announces `RingChanged` on the `cluster` topic.
    pub pubsub: Arc<dyn PubSub>,
    /// Notified when another node announces `RingChanged` (the pub/sub sink holds the other
    /// end).
    pub poke: Arc<Notify>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring")
            .field("leases", &self.leases)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Node `me` of the configured `members`, with its leases and pub/sub in `w`; the ring
    /// is empty until the first [`Cluster::tick`].
    pub fn new(me: &str, members: Vec<Member>, w: Wiring) -> Self {
        let Wiring {
            leases,
            namespace,
            redis,
            pubsub,
            poke,
        } = w;
        let (changes, _) = watch::channel(0);
        Self {
            me: me.to_owned(),
            members: ArcSwap::from_pointee(members),
            departing: Mutex::new(Vec::new()),
            leaving: AtomicBool::new(false),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            ticking: tokio::sync::Mutex::new(()),
            poke,
            pubsub,
            leases,
            namespace,
            redis,
            view: ArcSwap::from_pointee(View::default()),
            changes,
            renewed: Mutex::new(None),
        }
    }

    /// Replaces the configured members (the ChatCluster's ring changed); the next tick
    /// rebuilds the ring from those whose lease exists.
    /// Members that left keep their channels while their lease lives.
    pub fn set_members(&self, members: Vec<Member>) {
        let old = self.members.load_full();
        if *old != members {
            tracing::info!(members = ?members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), "ring members from the ChatCluster");
            {
                let mut departing = self.departing.lock();
                for m in old.iter() {
                    if m.name != self.me
                        && !members.iter().any(|n| n.name == m.name)
                        && !departing.iter().any(|d| d.name == m.name)
                    {
                        departing.push(m.clone());
                    }
                }
                departing.retain(|d| !members.iter().any(|n| n.name == d.name));
            }
            self.members.store(Arc::new(members));
            self.poke.notify_one();
        }
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    fn key(&self, name: &str) -> String {
        format!("parley:{}:node:{name}", self.namespace)
    }

    /// The ring as this node sees it now.
    pub fn view(&self) -> std::sync::Arc<View> {
        self.view.load_full()
    }

    /// The current view's epoch.
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

    /// Whether `member` is this node.
    pub fn is_me(&self, member: &Member) -> bool {
        member.name == self.me
    }

    /// Whether this node may start owner work now (its lease is fresh).
    pub fn may_own(&self) -> bool {
        let renewed = *self.renewed.lock();
        renewed.is_some_and(|at| at.elapsed() < self.leases.owner_window())
    }

    /// Held while sequencing: [`Cluster::give_up`] waits for every holder.
    pub async fn owner_work(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.gate.clone().read_owned().await
    }

    /// Whether this node is draining (it gave or is giving its channels up for good).
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// Renews the lease and refreshes the view once. A node off the configured list, or
    /// draining, does not renew: it gives its channels up and keeps only the others in its
    /// view.
    pub async fn tick(&self) {
        let _one = self.ticking.lock().await;
        let mut conn = self.redis.clone();
        let members = self.members.load_full();
        let listed = members.iter().find(|m| m.name == self.me);
        let active = listed.is_some() && !self.is_leaving();
        if let Some(me) = listed.filter(|_| active) {
            let renewed: Result<(), redis::RedisError> = redis::cmd("SET")
                .arg(self.key(&self.me))
                .arg(&me.endpoint)
                .arg("PX")
                .arg(self.leases.lease.as_millis() as u64)
                .query_async(&mut conn)
                .await;
            match renewed {
                Ok(()) => *self.renewed.lock() = Some(Instant::now()),
                Err(e) => {
                    tracing::warn!("renewing this node's lease failed: {e}");
                    // Keep the last view: during a Redis outage nobody's lease can be seen
                    // expiring.
                    return;
                }
            }
        } else if self.renewed.lock().is_some() {
            tracing::info!(
                listed = listed.is_some(),
                leaving = self.is_leaving(),
                "giving this node's channels up"
            );
            self.give_up().await;
        }
        let departing: Vec<Member> = self.departing.lock().clone();
        let candidates: Vec<&Member> = members.iter().chain(departing.iter()).collect();
        let keys: Vec<String> = candidates.iter().map(|m| self.key(&m.name)).collect();
        let alive: Result<Vec<Option<String>>, _> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await;
        let Ok(alive) = alive else { return };
        let mut live: Vec<Member> = Vec::new();
        let mut still_departing = Vec::new();
        for (m, lease) in candidates.into_iter().zip(alive) {
            let is_departing = departing.iter().any(|d| d.name == m.name);
            if lease.is_none() || (m.name == self.me && !active) {
                continue;
            }
            if is_departing {
                still_departing.push(m.name.clone());
            }
            live.push(m.clone());
        }
        self.departing
            .lock()
            .retain(|d| still_departing.contains(&d.name));
        let next = Ring::new(live);
        let current = self.view.load();
        if current.ring.members() != next.members() || current.epoch == 0 {
            let epoch = current.epoch + 1;
            let names: Vec<&str> = next.members().iter().map(|m| m.name.as_str()).collect();
            tracing::info!(epoch, members = ?names, "ring changed");
            self.view.store(Arc::new(View { epoch, ring: next }));
            let _ = self.changes.send(epoch);
        }
    }

    /// Reads the leases again now (two nodes disagree on a channel's owner: a ring change
    /// is under way).
    pub async fn refresh(&self) {
        self.tick().await;
    }

    /// Renews and refreshes until `shutdown`, and at once when poked.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.leases.renew_every());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.tick().await,
                () = self.poke.notified() => self.tick().await,
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// Drains: gives the channels up for good and drops this node from its own view.
    /// Returns once the lease is deleted and the others were told.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        self.tick().await;
        // The tick gave the channels up if this node held any; make sure of the lease.
        self.give_up().await;
    }

    /// Stops owning channels: waits for the owner work in progress (the last append),
    /// deletes the lease and, when this node held one, announces `RingChanged` so the others
    /// take its channels over at once. New owners wait for the persisters to store this
    /// node's appends before they sequence, so seqs continue without a gap or a repeat.
    pub async fn give_up(&self) {
        let _no_owner_work = self.gate.write().await;
        let held = self.renewed.lock().take().is_some();
        let mut conn = self.redis.clone();
        let deleted: Result<i64, _> = redis::cmd("DEL")
            .arg(self.key(&self.me))
            .query_async(&mut conn)
            .await;
        if let Err(e) = &deleted {
            tracing::warn!("deleting this node's lease failed (it expires by itself): {e}");
        }
        if held || deleted.is_ok_and(|n| n > 0) {
            let event = serde_json::to_vec(&ClusterEvent::RingChanged).unwrap_or_default();
            if let Err(e) = self.pubsub.publish(Topic::Cluster, event.into()).await {
                tracing::warn!(
                    "announcing the ring change failed (the others see it at their next tick): {e}"
                );
            }
        }
    }

    /// Gives the lease up at the end of a shutdown (same as [`Cluster::give_up`]).
    pub async fn release(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        self.give_up().await;
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
