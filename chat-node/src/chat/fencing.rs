//! Fencing of channel owners (docs/reliability.md, "Fencing"): a node that lost a channel
//! (paused past its lease, or sure of a ring view that is out of date) can never have a
//! message acknowledged or stored after the channel's next owner started.
//!
//! An owner term is `{generation, term}`: the generation its reserve got, unique per channel
//! and rising with each reserve, and the offset + 1 of its fence record in the log. Taking a
//! channel over ([`super::Handover`]) is, under the channel's lock:
//!
//! ```text
//!   floor = the store's generation of the channel (0 if none)
//!   generation = reserve(channel, floor)   above every earlier one and the floor; from here
//!                                          every earlier owner's confirm fails
//!   append {"fence": channel, "gen": generation} ─► offset      term = offset + 1
//!   establish(channel, {generation, term})  fails if another reserve came after mine
//!   wait until the persisters consumed everything appended so far (my fence included)
//!   check the store's term of the channel is {generation, term}, exactly
//!   last_seq = the store's (max with this node's own)
//! ```
//!
//! and every send, after its record (stamped with the owner term) is durable in the log and
//! before anything else (remember, ack): `publish_confirmed(channel, {generation, term},
//! event)`, which publishes the message's event only if the term is still in force, as one
//! step, or answers `unavailable`.
//!
//! The persisters (`persister::fence`) walk the log keeping per channel the owner term in
//! force: a fence puts its owner's term in force only if its generation is above the one in
//! force (a contender whose reserve lost the race may append its fence after the winner's:
//! its establish fails, and its fence must not depose the winner); a message is kept only if
//! its owner term is the one in force where it stands.
//!
//! Why no acknowledged message is dropped and no seq given twice: a send is acknowledged
//! only if its confirm passed, so no reserve happened between its owner's establish and that
//! confirm. A fence of a higher generation standing between the owner's fence and the
//! record was reserved after the owner's reserve (generations rise with reserves) and before
//! the record's confirm (its append came before the record's): before the establish (which
//! then fails) or after it (the confirm then fails). A fence of a higher generation before
//! the owner's own was reserved before the owner's establish, which then fails too. So the
//! owner's fence is in force from its place to the record's, and the record is kept. The
//! later owner's wait starts after its fence is appended, so the store holds the record
//! before that owner loads `last_seq`, and it continues after it. A record appended after a
//! later owner's fence has an older term: its confirm fails (that reserve came before it),
//! the sender answers `unavailable` without remembering or publishing it, and the
//! persisters drop it. The reserve must come before the fence's append (else a zombie's
//! confirm could pass with its record landing after the fence), and the wait must start
//! after it.
//!
//! Where the fencing's state of a channel expired or was lost (Redis restarted empty),
//! generations must still rise above every one handed out before, those of take-overs in
//! flight too (reserved, fence not yet appended): else such a take-over's late fence, of a
//! generation above the new owner's, would depose it after its check. `RedisFencing` seeds
//! a missing hash with Redis' clock in microseconds; the floor (the store's generation)
//! covers every fence already persisted. The check after the wait makes it hold where a
//! generation repeats all the same: a stored term other than mine means my fence was not
//! put in force, or another one came after it, and the take-over fails (`unavailable`; the
//! next one's floor is above it).
//!
//! Why events arrive in seq order across owners: the confirm and the publish of a message's
//! event are one step, so an owner's events all reach the pub/sub before its successor's
//! reserve, and the successor's all after its establish.
//!
//! [`Unfenced`] is the embedded node's: one process is the only writer of its log, so it
//! appends no fences, waits for nothing and writes term `{0, 0}`, as before fencing. The
//! ring's implementation keeps the terms in Redis (`node::fencing::RedisFencing`).

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use parley_protocol::Id;

use crate::backend::{PubSub, Topic};
use crate::error::ApiError;

pub use crate::backend::OwnerTerm;

/// Which owner term of each channel is in force. Every failure is `unavailable`.
#[async_trait]
pub trait Fencing: Send + Sync + fmt::Debug {
    /// Whether a take-over appends a fence record and waits for the persisters; `false`
    /// for a node that is the only writer of its log ([`Unfenced`]).
    fn fences(&self) -> bool;

    /// Starts a take-over of `channel`: returns a new generation, above every earlier one
    /// and above `floor` (the generation the store holds for the channel: it keeps
    /// generations rising where the fencing's own state expired or was lost). From here
    /// every earlier owner's [`Fencing::confirm`] fails.
    async fn reserve(&self, channel: Id, floor: u64) -> Result<u64, ApiError>;

    /// Puts `term` in force for `channel`, if its `gen` is still the latest reserved.
    /// Errors: `unavailable` when another reserve came after it (this node is superseded),
    /// or the store of the terms cannot be reached.
    async fn establish(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError>;

    /// Checks that `term` is still in force for `channel`. Errors: `unavailable` when it is
    /// not (fenced: another node reserved the channel since) or that cannot be told.
    async fn confirm(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError>;

    /// Publishes `payload` (an event of `channel`'s) on `topic` if `term` is still in force
    /// for `channel`, as one step: once a later owner has reserved the channel, no event of
    /// this owner's reaches a subscriber, so a deposed owner's event never arrives after its
    /// successor's. (A confirm and a publish apart let a confirm that passed just before
    /// the reserve, its answer delayed by a partition, publish after the successor's
    /// events.)
    ///
    /// The default confirms, then publishes through `pubsub`: one step only where nothing
    /// else publishes the channel's events (one process; tests). An implementation that
    /// keeps the terms beside the pub/sub does both at once (`node::fencing::RedisFencing`:
    /// one script) and may ignore `pubsub`.
    ///
    /// Errors: `unavailable` when the term is not in force or that cannot be told (for the
    /// one-step kind, an answer lost on the way back too: the event may have been
    /// published, and the message stored). A publish that fails after the confirm passed
    /// is logged, not an error: the message is durable, clients catch up through resume
    /// and history.
    async fn publish_confirmed(
        &self,
        channel: Id,
        term: OwnerTerm,
        topic: Topic,
        payload: Bytes,
        pubsub: &dyn PubSub,
    ) -> Result<(), ApiError> {
        self.confirm(channel, term).await?;
        if let Err(e) = pubsub.publish(topic, payload).await {
            tracing::warn!(%topic, "publish failed: {e}");
        }
        Ok(())
    }
}

/// The embedded node's fencing: every call succeeds at once, nothing is fenced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unfenced;

#[async_trait]
impl Fencing for Unfenced {
    fn fences(&self) -> bool {
        false
    }

    async fn reserve(&self, _channel: Id, _floor: u64) -> Result<u64, ApiError> {
        Ok(0)
    }

    async fn establish(&self, _channel: Id, _term: OwnerTerm) -> Result<(), ApiError> {
        Ok(())
    }

    async fn confirm(&self, _channel: Id, _term: OwnerTerm) -> Result<(), ApiError> {
        Ok(())
    }
}

/// `unavailable` for `channel`: superseded by a later reserve.
pub fn superseded(channel: Id) -> ApiError {
    ApiError::unavailable(format!(
        "channel {channel} was taken over by another node meanwhile; try again"
    ))
}

/// `unavailable` for `channel`: this node's term is no longer in force.
pub fn fenced(channel: Id) -> ApiError {
    ApiError::unavailable(format!(
        "this node no longer owns channel {channel} (fenced); try again"
    ))
}

/// Fencing in this process's memory, with the same semantics as Redis' (tests: the
/// hand-over's and the reference for [`fencing_suite`]). Its state is never lost, so its
/// generations start at 1 (Redis' start at its clock: see `RedisFencing`).
#[cfg(any(test, feature = "conformance"))]
#[derive(Debug, Default)]
pub struct MemoryFencing {
    /// Per channel: the last generation reserved and the term in force (if any).
    channels: parking_lot::Mutex<std::collections::HashMap<Id, (u64, Option<u64>)>>,
}

#[cfg(any(test, feature = "conformance"))]
#[async_trait]
impl Fencing for MemoryFencing {
    fn fences(&self) -> bool {
        true
    }

    async fn reserve(&self, channel: Id, floor: u64) -> Result<u64, ApiError> {
        let mut channels = self.channels.lock();
        let c = channels.entry(channel).or_insert((0, None));
        c.0 = c.0.max(floor) + 1;
        Ok(c.0)
    }

    async fn establish(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        match self.channels.lock().get_mut(&channel) {
            Some(c) if c.0 == term.generation => {
                c.1 = Some(term.term);
                Ok(())
            }
            _ => Err(superseded(channel)),
        }
    }

    async fn confirm(&self, channel: Id, term: OwnerTerm) -> Result<(), ApiError> {
        match self.channels.lock().get(&channel) {
            Some(&(generation, Some(t))) if generation == term.generation && t == term.term => {
                Ok(())
            }
            _ => Err(fenced(channel)),
        }
    }
}

/// The behaviour every fencing that [`Fencing::fences`] must show, on fresh random channels
/// (so it can run against a long-lived Redis). `pubsub` is an endpoint of the pub/sub the
/// fencing publishes on (its node's), whose deliveries `seen` records.
#[cfg(any(test, feature = "conformance"))]
pub async fn fencing_suite(
    f: &dyn Fencing,
    pubsub: &dyn PubSub,
    seen: &parking_lot::Mutex<Vec<crate::backend::Delivery>>,
) {
    assert!(f.fences());
    let base = u64::from(rand::random::<u32>()) * 1000;
    let (c, other) = (Id(base + 1), Id(base + 2));
    let t2 = one_owner_then_another(f, c, other).await;
    racing_take_overs(f, c, t2).await;
    publishes_only_in_force(f, pubsub, seen, Id(base + 4)).await;
    reserves_rise_above_the_floor(f, Id(base + 6)).await;
}

/// A reserve's generation is above the floor given, and above every earlier one whatever
/// the floor.
#[cfg(any(test, feature = "conformance"))]
async fn reserves_rise_above_the_floor(f: &dyn Fencing, c: Id) {
    let g1 = f.reserve(c, 0).await.unwrap();
    let g2 = f.reserve(c, g1 + 1000).await.unwrap();
    assert_eq!(g2, g1 + 1001, "one above the floor");
    let g3 = f.reserve(c, 1).await.unwrap();
    assert_eq!(g3, g2 + 1, "a lower floor changes nothing");
    let fresh = Id(c.0 + 1);
    assert!(
        f.reserve(fresh, 1000).await.unwrap() > 1000,
        "a channel's first reserve is above the floor too"
    );
    let t3 = OwnerTerm {
        generation: g3,
        term: 90,
    };
    f.establish(c, t3).await.unwrap();
    f.confirm(c, t3).await.unwrap();
}

/// An owner of `c` publishes; once a second one has reserved, the first one's publish is
/// refused and never delivered: the second owner's event is the next one subscribers get.
#[cfg(any(test, feature = "conformance"))]
async fn publishes_only_in_force(
    f: &dyn Fencing,
    pubsub: &dyn PubSub,
    seen: &parking_lot::Mutex<Vec<crate::backend::Delivery>>,
    c: Id,
) {
    let topic = Topic::Channel(c);
    pubsub.subscribe(topic).await.unwrap();
    let publish = |term: OwnerTerm, what: &'static str| {
        f.publish_confirmed(c, term, topic, Bytes::from_static(what.as_bytes()), pubsub)
    };
    let g1 = f.reserve(c, 0).await.unwrap();
    let t1 = OwnerTerm {
        generation: g1,
        term: 70,
    };
    assert_unavailable(
        publish(t1, "reserved").await,
        "reserved, not established: nothing published",
    );
    f.establish(c, t1).await.unwrap();
    publish(t1, "first").await.unwrap();
    let g2 = f.reserve(c, 0).await.unwrap();
    assert_unavailable(publish(t1, "deposed").await, "fenced by the reserve");
    let t2 = OwnerTerm {
        generation: g2,
        term: 80,
    };
    f.establish(c, t2).await.unwrap();
    assert_unavailable(publish(t1, "deposed").await, "the first owner stays fenced");
    publish(t2, "second").await.unwrap();

    // Deliveries on one topic keep the order of publishing: once "second" is in, anything
    // the first owner published after the reserve would be in too.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let got = loop {
        let got: Vec<Bytes> = seen
            .lock()
            .iter()
            .filter(|d| d.topic == topic)
            .map(|d| d.payload.clone())
            .collect();
        if got.len() >= 2 || tokio::time::Instant::now() >= deadline {
            break got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(
        got,
        [Bytes::from_static(b"first"), Bytes::from_static(b"second")],
        "only the owners in force published"
    );
    pubsub.unsubscribe(topic).await.unwrap();
}

#[cfg(any(test, feature = "conformance"))]
fn assert_unavailable(r: Result<(), ApiError>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(
        e.code,
        parley_protocol::ErrorCode::Unavailable,
        "{what}: {e:?}"
    );
}

/// An owner of `c` establishes and confirms; a second one reserves (fencing the first at
/// once) and establishes. Returns the second's term.
#[cfg(any(test, feature = "conformance"))]
async fn one_owner_then_another(f: &dyn Fencing, c: Id, other: Id) -> OwnerTerm {
    let term = |generation: u64, term: u64| OwnerTerm { generation, term };
    assert_unavailable(
        f.confirm(c, term(0, 0)).await,
        "nothing is in force before a take-over",
    );
    let g1 = f.reserve(c, 0).await.unwrap();
    let t1 = term(g1, 10);
    assert_unavailable(f.confirm(c, t1).await, "reserved, not established");
    f.establish(c, t1).await.unwrap();
    f.confirm(c, t1).await.unwrap();
    f.confirm(c, t1).await.unwrap();
    assert_unavailable(
        f.confirm(c, term(g1, 11)).await,
        "another term of the same generation",
    );
    assert_unavailable(f.confirm(other, t1).await, "another channel's term");

    let g2 = f.reserve(c, 0).await.unwrap();
    assert!(g2 > g1, "generations grow: {g1} then {g2}");
    assert_unavailable(f.confirm(c, t1).await, "fenced by the reserve");
    assert_unavailable(
        f.establish(c, term(g1, 20)).await,
        "an earlier generation cannot establish again",
    );
    let t2 = term(g2, 30);
    f.establish(c, t2).await.unwrap();
    f.confirm(c, t2).await.unwrap();
    assert_unavailable(f.confirm(c, t1).await, "the first owner stays fenced");
    t2
}

/// Two take-overs of `c` (whose term in force is `t2`) race: the later reserve wins, the
/// earlier cannot establish. Other channels are apart.
#[cfg(any(test, feature = "conformance"))]
async fn racing_take_overs(f: &dyn Fencing, c: Id, t2: OwnerTerm) {
    let term = |generation: u64, term: u64| OwnerTerm { generation, term };
    let g3 = f.reserve(c, 0).await.unwrap();
    let g4 = f.reserve(c, 0).await.unwrap();
    assert_unavailable(
        f.establish(c, term(g3, 40)).await,
        "superseded before establishing",
    );
    assert_unavailable(f.confirm(c, t2).await, "fenced by both reserves");
    let t4 = term(g4, 50);
    f.establish(c, t4).await.unwrap();
    f.confirm(c, t4).await.unwrap();

    let other = Id(c.0 + 2);
    let o1 = f.reserve(other, 0).await.unwrap();
    let to = term(o1, 60);
    f.establish(other, to).await.unwrap();
    f.confirm(other, to).await.unwrap();
    f.confirm(c, t4).await.unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_fencing_passes_the_fencing_suite() {
        let (sink, seen) = crate::backend::conformance::recording_sink();
        let pubsub = crate::backend::memory::MemoryBus::new().endpoint(sink);
        fencing_suite(&MemoryFencing::default(), &pubsub, &seen).await;
    }

    #[tokio::test]
    async fn unfenced_lets_everything_pass() {
        let f = Unfenced;
        assert!(!f.fences());
        let t = OwnerTerm {
            generation: 0,
            term: 0,
        };
        assert_eq!(f.reserve(Id(1), 0).await.unwrap(), 0);
        f.establish(Id(1), t).await.unwrap();
        f.confirm(Id(1), t).await.unwrap();
        f.confirm(
            Id(2),
            OwnerTerm {
                generation: 7,
                term: 9,
            },
        )
        .await
        .unwrap();

        let (sink, seen) = crate::backend::conformance::recording_sink();
        let pubsub = crate::backend::memory::MemoryBus::new().endpoint(sink);
        let topic = Topic::Channel(Id(1));
        pubsub.subscribe(topic).await.unwrap();
        f.publish_confirmed(Id(1), t, topic, Bytes::from_static(b"e"), &pubsub)
            .await
            .unwrap();
        assert_eq!(seen.lock().len(), 1, "published through the pub/sub given");
    }
}
