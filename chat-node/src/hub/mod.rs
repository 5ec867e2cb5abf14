//! Local fan-out: which of this node's connections get what arrives on a pub/sub topic.
//!
//! ```text
//!   PubSub ─► Hub::connect's sink ─┬─ cluster topic ─► ClusterInbox (membership cache, ring)
//!                                  └─ Hub::dispatch ─┬─ channel topic ─► local members' sockets
//!                                                    └─ user topic ────► that user's sockets
//! ```
//!
//! The hub subscribes a topic when its first local interested connection appears and
//! unsubscribes when the last goes (reference counts per node, never one broker
//! subscription per socket). An event is serialized once by its publisher; every
//! connection's queue gets a cheap clone of the same bytes. A join or leave changes a
//! user's subscriptions only as far as the directory confirms it
//! ([`Hub::check_memberships_with`]): membership events can arrive out of order.
//!
//! Presence changes are coalesced per connection ([`presence_batch`]): a run of them with
//! nothing else queued between takes one queue slot, the latest status per user winning.
//!
//! `payload` is the wire form of what goes through the pub/sub (routing header + frame);
//! `budgets` the per-user budgets of resume replays and typing.

mod budgets;
mod payload;
pub mod presence_batch;
#[cfg(test)]
mod tests;

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_protocol::Id;
use parley_protocol::ws::close;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, Delivery, MemberStore, PubSub, Sink, Topic};

pub use budgets::Budget;
use budgets::Budgets;
pub use payload::{Header, decode, encode};
use presence_batch::{Added, PresenceBatch, PresenceFrame};

/// Identifies one WebSocket connection on this node.
pub type ConnId = u64;

/// Where the payloads of the `cluster` topic go (membership invalidations, ring changes).
pub type ClusterInbox = Arc<dyn Fn(&Bytes) + Send + Sync>;

/// One serialized server frame as the hub queues it: one allocation per event, shared by
/// all its connections, so a queue slot ([`Outbound`]) is 24 bytes.
#[derive(Debug)]
pub struct Event {
    /// The frame's JSON text.
    pub bytes: Bytes,
    /// For `message` events, (channel, message id): a resuming connection skips what its
    /// backlog already carried.
    pub message: Option<(Id, Id)>,
}

impl Event {
    /// A shared event of `bytes` (`message`: see [`Event::message`]).
    pub fn new(bytes: Bytes, message: Option<(Id, Id)>) -> Arc<Self> {
        Arc::new(Self { bytes, message })
    }
}

/// What a connection's writer receives.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A serialized server frame, shared by every connection it is queued for.
    Frame(Arc<Event>),
    /// Presence changes gathered in one queue slot ([`presence_batch`]): the session
    /// takes them when it reaches the slot.
    Presence(Arc<PresenceBatch>),
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
}

/// The hub's end of a connection's event queue ([`queue`]).
pub type EventSender = futures_channel::mpsc::Sender<Outbound>;
/// The session's end of its event queue ([`queue`]): a `Stream` of [`Outbound`], `try_recv`
/// for what is queued now.
pub type EventReceiver = futures_channel::mpsc::Receiver<Outbound>;

/// A connection's event queue, holding at most `capacity` (≥ 1) events; past that
/// `try_send` fails and the hub closes the connection as a slow reader (4008).
///
/// `futures-channel`'s bounded channel, not tokio's: tokio's allocates its first block of
/// 32 slots (768 bytes of [`Outbound`]) with the channel, for every connection, idle or
/// not; this one holds a linked list that allocates a node per queued event and, idle, a
/// stub node only. Its capacity is `buffer` plus one slot per sender (futures-channel's
/// `mpsc::channel` docs), hence `capacity - 1` with the hub's one sender.
pub fn queue(capacity: usize) -> (EventSender, EventReceiver) {
    futures_channel::mpsc::channel(capacity.max(1) - 1)
}

/// Tells one session to close, with the first reason given (a full queue, an expired
/// heartbeat). It is signalled beside the queue, so a session sees it even when its queue
/// is full or its writes are stuck; the events still queued are then not written (the
/// client resumes with `resume_after`).
#[derive(Debug, Clone, Default)]
pub struct Closer {
    token: CancellationToken,
    reason: Arc<OnceLock<(u16, &'static str)>>,
}

impl Closer {
    /// Asks the session to close with `code` and `reason` (ignored once one was given).
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.reason.set((code, reason));
        self.token.cancel();
    }

    /// Whether a close was asked for.
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves with the close code and reason once a close is asked for.
    pub async fn closed(&self) -> (u16, &'static str) {
        self.token.cancelled().await;
        self.reason
            .get()
            .copied()
            .unwrap_or((close::INTERNAL_ERROR, "internal error"))
    }
}

struct Conn {
    user: Id,
    tx: EventSender,
    /// Told to close when the connection's queue overflows (a slow reader, 4008) or its
    /// heartbeat expires (4002).
    closer: Closer,
    /// The presence batch queued last, while nothing else was queued after it: presence
    /// changes join it rather than taking a slot each.
    open_batch: Option<Arc<PresenceBatch>>,
    /// Presence entries queued and not yet taken ([`presence_batch::PENDING_MAX`]).
    presence_pending: Arc<AtomicUsize>,
}

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, Conn>,
    /// Local connections of each user.
    users: HashMap<Id, HashSet<ConnId>>,
    /// Channels of each user with a local connection.
    user_channels: HashMap<Id, HashSet<Id>>,
    /// Users with local connections in each channel.
    channels: HashMap<Id, HashSet<Id>>,
    /// Sessions admitted per user ([`Hub::admit`]), from hello to close.
    sessions: HashMap<Id, u32>,
}

/// This node's hub.
pub struct Hub {
    state: Mutex<State>,
    /// Per-user budgets of resume replays and typing events.
    budgets: Mutex<Budgets>,
    /// Serializes subscription changes so subscribe/unsubscribe of a topic keep their order.
    subscriptions: tokio::sync::Mutex<()>,
    pubsub: Arc<dyn PubSub>,
    /// The next connection ID to hand out.
    next_conn: AtomicU64,
    /// Where membership changes are checked before they are applied
    /// ([`Hub::check_memberships_with`]); unset, the event's word is taken.
    members: OnceLock<Arc<dyn MemberStore>>,
}

/// How long [`Hub::set_member`] waits for the directory before it takes the event's word.
const MEMBERSHIP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("Hub")
            .field("connections", &s.conns.len())
            .field("channels", &s.channels.len())
            .finish()
    }
}

impl Hub {
    /// A hub publishing on `pubsub`. What `pubsub` delivers must reach [`Hub::dispatch`]:
    /// [`Hub::connect`] wires both ends.
    pub fn new(pubsub: Arc<dyn PubSub>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            budgets: Mutex::new(Budgets::default()),
            subscriptions: tokio::sync::Mutex::new(()),
            pubsub,
            next_conn: AtomicU64::new(1),
            members: OnceLock::new(),
        }
    }

    /// From now on, [`Hub::set_member`] applies what `members` says of the membership, not
    /// what the change claimed. Membership events can arrive out of order: a `member_left`
    /// whose publish timed out during a partition from Redis still reaches Redis after the
    /// partition heals, on a connection the publisher has since replaced, so after the
    /// member's next `member_joined`; taken at its word, it would cut a member off its
    /// channel's events for good. A second call is ignored.
    pub fn check_memberships_with(&self, members: Arc<dyn MemberStore>) {
        let _ = self.members.set(members);
    }

    /// Builds the hub and its pub/sub together: `pubsub` is given the sink its deliveries
    /// must go to (the `cluster` topic to `cluster`, the others to this hub's
    /// connections), and the hub subscribes the `cluster` topic. Errors: the pub/sub's, from
    /// connecting or subscribing.
    pub async fn connect<F, Fut>(pubsub: F, cluster: ClusterInbox) -> Result<Arc<Hub>, BackendError>
    where
        F: FnOnce(Sink) -> Fut,
        Fut: Future<Output = Result<Arc<dyn PubSub>, BackendError>>,
    {
        // The pub/sub exists before the hub it delivers to: the sink finds the hub here.
        let target: Arc<OnceLock<Weak<Hub>>> = Arc::default();
        let hub_of = target.clone();
        let sink: Sink = Arc::new(move |delivery: Delivery| {
            if delivery.topic == Topic::Cluster {
                cluster(&delivery.payload);
            } else if let Some(hub) = hub_of.get().and_then(Weak::upgrade) {
                hub.dispatch(&delivery);
            }
        });
        let hub = Arc::new(Hub::new(pubsub(sink).await?));
        let _ = target.set(Arc::downgrade(&hub));
        hub.pubsub.subscribe(Topic::Cluster).await?;
        Ok(hub)
    }

    /// A fresh connection ID.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The pub/sub the hub subscribes on and events are published to.
    pub fn pubsub(&self) -> &Arc<dyn PubSub> {
        &self.pubsub
    }

    /// Number of live connections on this node.
    pub fn connections(&self) -> usize {
        self.state().conns.len()
    }

    /// Whether the user has a live connection on this node.
    #[cfg(test)]
    fn is_connected(&self, user: Id) -> bool {
        self.state().users.get(&user).is_some_and(|c| !c.is_empty())
    }

    /// Admits one more session of `user` unless they hold `max` already on this node; the
    /// slot is given back when dropped.
    pub fn admit(self: &Arc<Self>, user: Id, max: u32) -> Option<SessionSlot> {
        let mut s = self.state();
        let n = s.sessions.entry(user).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SessionSlot {
            hub: self.clone(),
            user,
        })
    }

    /// Sessions of `user` admitted on this node.
    pub fn sessions_of(&self, user: Id) -> u32 {
        self.state().sessions.get(&user).copied().unwrap_or(0)
    }

    fn budgets(&self) -> parking_lot::MutexGuard<'_, Budgets> {
        self.budgets.lock()
    }

    /// Whether `user` may start a resume replay now (their replay budget is positive);
    /// `Err` says how long until it is. The replay is then charged with
    /// [`Hub::charge_resume`].
    pub fn may_resume(&self, user: Id, budget: Budget) -> Result<(), Duration> {
        self.budgets().resume.check(user, budget, Instant::now())
    }

    /// Takes `cost` from `user`'s replay budget (it may go below zero: the next resumes
    /// wait until it has refilled).
    pub fn charge_resume(&self, user: Id, cost: u32, budget: Budget) {
        self.budgets()
            .resume
            .charge(user, f64::from(cost), budget, Instant::now());
    }

    /// Takes one typing event from `user`'s budget; `Err` says how long until one is left.
    pub fn allow_typing(&self, user: Id, budget: Budget) -> Result<(), Duration> {
        let now = Instant::now();
        let mut b = self.budgets();
        b.typing.check(user, budget, now)?;
        b.typing.charge(user, 1.0, budget, now);
        Ok(())
    }

    /// Registers a connection of `user`, a member of `channels`; returns once the node is
    /// subscribed to every topic the connection needs. `closer` is told to close the
    /// connection if its queue ever overflows (or its heartbeat expires).
    pub async fn attach(
        &self,
        conn: ConnId,
        user: Id,
        channels: &[Id],
        tx: EventSender,
        closer: Closer,
    ) -> Result<(), BackendError> {
        let _order = self.subscriptions.lock().await;
        let new_topics = {
            let mut s = self.state();
            let mut topics = Vec::new();
            s.conns.insert(
                conn,
                Conn {
                    user,
                    tx,
                    closer,
                    open_batch: None,
                    presence_pending: Arc::default(),
                },
            );
            let conns = s.users.entry(user).or_default();
            if conns.is_empty() {
                topics.push(Topic::User(user));
            }
            conns.insert(conn);
            let mine = s.user_channels.entry(user).or_default();
            let added: Vec<Id> = channels
                .iter()
                .copied()
                .filter(|c| mine.insert(*c))
                .collect();
            for c in added {
                let users = s.channels.entry(c).or_default();
                if users.is_empty() {
                    topics.push(Topic::Channel(c));
                }
                users.insert(user);
            }
            topics
        };
        for t in new_topics {
            if let Err(e) = self.pubsub.subscribe(t).await {
                drop(_order);
                self.detach(conn).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes a connection; unsubscribes what no local connection needs any more.
    pub async fn detach(&self, conn: ConnId) {
        let _order = self.subscriptions.lock().await;
        let gone = {
            let mut s = self.state();
            let Some(c) = s.conns.remove(&conn) else {
                return;
            };
            let mut topics = Vec::new();
            let last = s.users.get_mut(&c.user).map(|set| {
                set.remove(&conn);
                set.is_empty()
            });
            if last == Some(true) {
                s.users.remove(&c.user);
                topics.push(Topic::User(c.user));
                let channels = s.user_channels.remove(&c.user).unwrap_or_default();
                for ch in channels {
                    if let Some(users) = s.channels.get_mut(&ch) {
                        users.remove(&c.user);
                        if users.is_empty() {
                            s.channels.remove(&ch);
                            topics.push(Topic::Channel(ch));
                        }
                    }
                }
            }
            topics
        };
        for t in gone {
            if let Err(e) = self.pubsub.unsubscribe(t).await {
                tracing::warn!(topic = %t, "unsubscribe failed: {e}");
            }
        }
    }

    /// The user's local connections start (or stop) receiving `channel`: as `member` says,
    /// or, once [`Hub::check_memberships_with`] was called, as the directory says now (a
    /// stale change is ignored).
    pub async fn set_member(
        &self,
        channel: Id,
        user: Id,
        member: bool,
    ) -> Result<(), BackendError> {
        let _order = self.subscriptions.lock().await;
        if !self.state().users.contains_key(&user) {
            return Ok(());
        }
        // Read under the lock: whichever change of (channel, user) is applied last reads
        // the directory after every earlier one was committed.
        let member = self.member_now(channel, user, member).await;
        let change = {
            let mut s = self.state();
            if !s.users.contains_key(&user) {
                return Ok(());
            }
            if member {
                s.user_channels.entry(user).or_default().insert(channel);
                let users = s.channels.entry(channel).or_default();
                let first = users.is_empty();
                users.insert(user);
                first.then_some((Topic::Channel(channel), true))
            } else {
                s.user_channels.entry(user).or_default().remove(&channel);
                let empty = s.channels.get_mut(&channel).is_some_and(|u| {
                    u.remove(&user);
                    u.is_empty()
                });
                if empty {
                    s.channels.remove(&channel);
                }
                empty.then_some((Topic::Channel(channel), false))
            }
        };
        match change {
            Some((t, true)) => self.pubsub.subscribe(t).await,
            Some((t, false)) => self.pubsub.unsubscribe(t).await,
            None => Ok(()),
        }
    }

    /// Hands what arrived on a topic to the local connections it concerns. Never blocks.
    pub fn dispatch(self: &Arc<Self>, delivery: &Delivery) {
        let Some((header, frame)) = decode(&delivery.payload) else {
            tracing::warn!(topic = %delivery.topic, "undecodable pub/sub payload dropped");
            return;
        };
        // A join (on the joiner's user topic) is applied first, so the frame reaches the new
        // member's connections; a leave (on the channel topic) after the frame went out.
        if let (Topic::User(_), Some((channel, user))) = (delivery.topic, header.j) {
            self.spawn_set_member(channel, user, true);
        }
        // A presence frame, its Presence object found once for all its connections.
        let presence = header.p.and_then(|_| {
            let p = PresenceFrame::parse(frame.clone());
            if p.is_none() {
                tracing::warn!("a presence frame without a Presence object dropped");
            }
            p
        });
        {
            let mut s = self.state();
            let targets: Vec<ConnId> = match delivery.topic {
                Topic::Cluster => return,
                Topic::User(user) => s
                    .users
                    .get(&user)
                    .map(|c| c.iter().copied().collect())
                    .unwrap_or_default(),
                Topic::Channel(channel) => {
                    let Some(users) = s.channels.get(&channel) else {
                        return;
                    };
                    users
                        .iter()
                        .filter(|u| Some(**u) != header.x)
                        .flat_map(|u| s.users.get(u).into_iter().flatten().copied())
                        .collect()
                }
            };
            // Made once, for the first connection that gets it.
            let mut event: Option<Arc<Event>> = None;
            for id in targets {
                let Some(conn) = s.conns.get_mut(&id) else {
                    continue;
                };
                if header.x == Some(conn.user) {
                    continue;
                }
                if let Some((user, _)) = header.p {
                    if user != conn.user
                        && let Some(p) = &presence
                    {
                        queue_presence(conn, user, p.clone());
                    }
                    continue;
                }
                let event = event.get_or_insert_with(|| Event::new(frame.clone(), header.m));
                queue_or_close(conn, Outbound::Frame(event.clone()));
            }
        }
        if let (Topic::Channel(_), Some((channel, user))) = (delivery.topic, header.l) {
            self.spawn_set_member(channel, user, false);
        }
    }

    /// Whether `user` is a member of `channel` now, as the directory says; `claimed` (the
    /// change's word) when there is no directory to ask, or it fails or does not answer
    /// within [`MEMBERSHIP_CHECK_TIMEOUT`].
    async fn member_now(&self, channel: Id, user: Id, claimed: bool) -> bool {
        let Some(members) = self.members.get() else {
            return claimed;
        };
        match tokio::time::timeout(MEMBERSHIP_CHECK_TIMEOUT, members.is_member(channel, user)).await
        {
            Ok(Ok(member)) => {
                if member != claimed {
                    tracing::debug!(%channel, %user, member, "a stale membership change ignored");
                }
                member
            }
            Ok(Err(e)) => {
                tracing::warn!(%channel, %user, "membership check failed, the change is taken: {e}");
                claimed
            }
            Err(_) => {
                tracing::warn!(%channel, %user, "membership check timed out, the change is taken");
                claimed
            }
        }
    }

    fn spawn_set_member(self: &Arc<Self>, channel: Id, user: Id, member: bool) {
        let hub = self.clone();
        tokio::spawn(async move {
            if let Err(e) = hub.set_member(channel, user, member).await {
                tracing::warn!(%channel, %user, "subscription change failed: {e}");
            }
        });
    }

    /// Tells every local connection that events of its channels may have been lost (the
    /// pub/sub's subscriber connection was down): a `resync_required` {channel_id} per
    /// channel of its user, after which the client refetches history (PROTOCOL.md). A
    /// connection whose queue is full is closed with 4008 and resumes, as for any event.
    /// Returns how many frames were queued.
    pub fn resync_subscribers(&self) -> usize {
        let mut guard = self.state();
        let s = &mut *guard;
        // Each channel's frame is serialized once, then shared by its connections.
        let mut frames: HashMap<Id, Arc<Event>> = HashMap::new();
        let mut queued = 0;
        for conn in s.conns.values_mut() {
            let Some(channels) = s.user_channels.get(&conn.user) else {
                continue;
            };
            for &channel_id in channels {
                let event = frames.entry(channel_id).or_insert_with(|| {
                    let d = parley_protocol::ws::ResyncRequired { channel_id };
                    let frame = serde_json::to_vec(&parley_protocol::ws::ServerFrame {
                        t: parley_protocol::ws::event::RESYNC_REQUIRED,
                        r#ref: None,
                        d: &d,
                    })
                    .expect("server frames serialize");
                    Event::new(Bytes::from(frame), None)
                });
                if queue_or_close(conn, Outbound::Frame(event.clone())) {
                    queued += 1;
                }
            }
        }
        queued
    }

    /// Sends `out` to every local connection (shutdown); a `Close` goes to each one's
    /// [`Closer`].
    pub fn broadcast(&self, out: &Outbound) {
        for conn in self.state().conns.values_mut() {
            deliver(conn, out.clone());
        }
    }

    /// Sends `out` to one connection; a `Close` goes to its [`Closer`], so it is seen even
    /// when the connection's queue is full or its writes are stuck. `false`: no such
    /// connection, or its queue is full.
    pub fn send_to(&self, conn: ConnId, out: Outbound) -> bool {
        self.state()
            .conns
            .get_mut(&conn)
            .is_some_and(|c| deliver(c, out))
    }
}

/// Queues the event `out` for `conn`; a full queue (a reader too slow) closes it with 4008,
/// and the client resumes. `true`: queued.
fn queue_or_close(conn: &mut Conn, out: Outbound) -> bool {
    let queued = try_queue(conn, out);
    if !queued {
        close_slow(conn);
    }
    queued
}

/// Queues `out`; what follows it in the queue is no longer after the open presence batch.
fn try_queue(conn: &mut Conn, out: Outbound) -> bool {
    conn.open_batch = None;
    conn.tx.try_send(out).is_ok()
}

fn close_slow(conn: &Conn) {
    conn.closer.close(
        close::POLICY,
        "too slow to read events; reconnect with resume_after",
    );
}

/// Gives `conn` the presence of `user` in `frame`: in its open presence batch, or a new
/// one queued. A full queue or presence budget closes it as a slow reader.
fn queue_presence(conn: &mut Conn, user: Id, frame: PresenceFrame) {
    if let Some(open) = &conn.open_batch {
        match open.add(user, frame.clone()) {
            Added::Yes => return,
            Added::Full => return close_slow(conn),
            Added::Taken => {}
        }
    }
    let batch = Arc::new(PresenceBatch::new(conn.presence_pending.clone()));
    if batch.add(user, frame) == Added::Full {
        return close_slow(conn);
    }
    if queue_or_close(conn, Outbound::Presence(batch.clone())) {
        conn.open_batch = Some(batch);
    } else {
        // Never written: its entry leaves the budget.
        batch.take();
    }
}

fn deliver(conn: &mut Conn, out: Outbound) -> bool {
    match out {
        Outbound::Close(code, reason) => {
            conn.closer.close(code, reason);
            true
        }
        frame => try_queue(conn, frame),
    }
}

/// A session's place under [`Hub::admit`]'s cap; given back when dropped.
#[derive(Debug)]
pub struct SessionSlot {
    hub: Arc<Hub>,
    user: Id,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut s = self.hub.state();
        if let Some(n) = s.sessions.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.sessions.remove(&self.user);
            }
        }
    }
}
