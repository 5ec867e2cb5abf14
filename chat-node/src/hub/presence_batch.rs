//! Coalesced presence for one connection ([`PresenceBatch`]).
//!
//! A connect storm of N members of one room is N² presence changes to deliver. Instead of one
//! queue slot per change, the hub gives a connection one [`Outbound::Presence`] slot for a
//! run of presence changes with nothing else queued between them: the changes gather in
//! that slot's batch until the session takes it, one entry per user, the latest status
//! winning (a user flapping online, offline, online while the batch waits is told once,
//! and the same change arriving through several shared channels is told once). The session
//! writes the batch as `presence` frames, or, when the client said hello with
//! `presence_batch: true`, as one `presence_batch` frame: then a storm costs each connection
//! a frame per batch taken, not per change.
//!
//! Nothing is remembered per connection once a batch is taken (no per-user map that would
//! grow to every co-member: ~34 KiB per connection in a room of 1000), so a change that
//! reaches a connection through two channels in two batches is told twice; a status told
//! again is harmless.
//!
//! ```text
//!   dispatch(presence of U) ─► conn's open batch (not yet taken, last in its queue)?
//!        yes: add / replace / cancel U's entry      no: a new batch, queued as one slot
//!   session: Outbound::Presence(batch) ─► take() ─► frames, or one presence_batch frame
//! ```
//!
//! Entries not yet taken count against the connection's `pending` budget
//! ([`PENDING_MAX`]); past it the connection is a slow reader, closed like one whose queue
//! is full.
//!
//! [`Outbound::Presence`]: super::Outbound::Presence

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use parley_protocol::Id;

/// Most presence entries queued for one connection and not yet taken by its session (each
/// ~100 bytes plus the shared frame): 4 times the session queue's 1024 slots.
pub const PENDING_MAX: usize = 4096;

/// Most Presence objects in one `presence_batch` frame (~90 bytes each, ~3 KiB a frame): a
/// longer batch is written as several frames, so each stays small for the client to
/// parse.
pub const FRAME_MAX_PRESENCES: usize = 32;

/// One user's presence: a `presence` frame and where its Presence object lies in it.
#[derive(Debug, Clone)]
pub struct PresenceFrame {
    /// The whole `presence` frame, `{"t":"presence","d":{Presence}}`.
    pub frame: Bytes,
    /// The byte range of its `d` (the Presence object) in `frame`.
    pub d: Range<usize>,
}

impl PresenceFrame {
    /// `frame`, a serialized `presence` frame; `None` if it has no JSON object `d`.
    pub fn parse(frame: Bytes) -> Option<Self> {
        let d = d_of(&frame)?;
        Some(Self { frame, d })
    }

    /// The Presence object.
    pub fn d(&self) -> &[u8] {
        &self.frame[self.d.clone()]
    }
}

#[derive(Debug)]
struct Entry {
    user: Id,
    frame: PresenceFrame,
}

#[derive(Debug, Default)]
struct Inner {
    /// In the order each user first changed.
    entries: Vec<Entry>,
    index: HashMap<Id, usize>,
    taken: bool,
}

/// What [`PresenceBatch::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The change is in the batch (new, or replacing the user's entry).
    Yes,
    /// The session took the batch already: the change needs a new one.
    Taken,
    /// The connection's `pending` budget is spent: a slow reader.
    Full,
}

/// The presence changes gathered in one queue slot of one connection.
#[derive(Debug)]
pub struct PresenceBatch {
    inner: Mutex<Inner>,
    /// Entries queued for the connection and not yet taken, over all its batches.
    pending: Arc<AtomicUsize>,
}

impl PresenceBatch {
    /// An empty batch counting its entries in `pending` (shared by a connection's batches).
    pub fn new(pending: Arc<AtomicUsize>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            pending,
        }
    }

    /// `user`'s presence became `frame`'s; it replaces what the batch held of `user`.
    pub fn add(&self, user: Id, frame: PresenceFrame) -> Added {
        let mut b = self.inner.lock();
        if b.taken {
            return Added::Taken;
        }
        if let Some(&i) = b.index.get(&user) {
            b.entries[i].frame = frame;
            return Added::Yes;
        }
        if self.pending.load(Ordering::Relaxed) >= PENDING_MAX {
            return Added::Full;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        let i = b.entries.len();
        b.entries.push(Entry { user, frame });
        b.index.insert(user, i);
        Added::Yes
    }

    /// Takes the batch's entries, in the order each user first changed; later changes go to
    /// a new batch.
    pub fn take(&self) -> Vec<PresenceFrame> {
        let mut b = self.inner.lock();
        b.taken = true;
        b.index = HashMap::new();
        let frames: Vec<PresenceFrame> = std::mem::take(&mut b.entries)
            .into_iter()
            .map(|e| e.frame)
            .collect();
        self.pending.fetch_sub(frames.len(), Ordering::Relaxed);
        frames
    }

    /// The users with an entry now, in the order they will be written.
    pub fn users(&self) -> Vec<Id> {
        let b = self.inner.lock();
        b.entries.iter().map(|e| e.user).collect()
    }
}

/// `{"t":"presence_batch","d":{"presences":[d, ...]}}` of `frames`' Presence objects, in
/// their order (the batched form a client asks for with hello's `presence_batch`); the
/// session writes at most [`FRAME_MAX_PRESENCES`] in one.
pub fn batch_frame(frames: &[PresenceFrame]) -> Bytes {
    const HEAD: &[u8] = br#"{"t":"presence_batch","d":{"presences":["#;
    const TAIL: &[u8] = b"]}}";
    let len = frames.iter().map(|f| f.d.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(HEAD.len() + len + TAIL.len());
    out.extend_from_slice(HEAD);
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(f.d());
    }
    out.extend_from_slice(TAIL);
    Bytes::from(out)
}

/// Where the `d` of a serialized server frame lies in it; `None` if the frame is not JSON
/// or its `d` is not a JSON object.
fn d_of(frame: &[u8]) -> Option<Range<usize>> {
    #[derive(serde::Deserialize)]
    struct Shape<'a> {
        #[serde(borrow)]
        d: &'a serde_json::value::RawValue,
    }
    let shape: Shape<'_> = serde_json::from_slice(frame).ok()?;
    let d = shape.d.get().as_bytes();
    if !d.starts_with(b"{") {
        return None;
    }
    // serde_json's slice reader lends RawValues out of the input: `d` lies within `frame`.
    let start = (d.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    let end = start.checked_add(d.len())?;
    (end <= frame.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(user: u64, status: &str) -> PresenceFrame {
        PresenceFrame::parse(Bytes::from(format!(
            r#"{{"t":"presence","d":{{"user_id":"{user}","status":"{status}","last_seen":null}}}}"#
        )))
        .expect("a d")
    }

    fn batch() -> (PresenceBatch, Arc<AtomicUsize>) {
        let pending = Arc::new(AtomicUsize::new(0));
        (PresenceBatch::new(pending.clone()), pending)
    }

    #[test]
    fn the_latest_status_of_each_user_wins_in_first_change_order() {
        let (b, pending) = batch();
        assert_eq!(b.add(Id(1), frame(1, "online")), Added::Yes);
        assert_eq!(b.add(Id(2), frame(2, "online")), Added::Yes);
        assert_eq!(b.add(Id(1), frame(1, "offline")), Added::Yes);
        assert_eq!(b.add(Id(1), frame(1, "idle")), Added::Yes);
        assert_eq!(b.users(), [Id(1), Id(2)]);
        assert_eq!(pending.load(Ordering::Relaxed), 2);
        let taken = b.take();
        let ds: Vec<&[u8]> = taken.iter().map(PresenceFrame::d).collect();
        assert_eq!(
            ds,
            [
                &br#"{"user_id":"1","status":"idle","last_seen":null}"#[..],
                &br#"{"user_id":"2","status":"online","last_seen":null}"#[..],
            ]
        );
        assert_eq!(pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_taken_batch_takes_nothing_more() {
        let (b, _) = batch();
        b.add(Id(1), frame(1, "online"));
        assert_eq!(b.take().len(), 1);
        assert_eq!(b.add(Id(2), frame(2, "online")), Added::Taken);
        assert!(b.take().is_empty());
    }

    #[test]
    fn entries_past_the_pending_budget_are_refused_but_changes_to_queued_ones_are_not() {
        let pending = Arc::new(AtomicUsize::new(PENDING_MAX - 1));
        let b = PresenceBatch::new(pending.clone());
        assert_eq!(b.add(Id(1), frame(1, "online")), Added::Yes);
        assert_eq!(b.add(Id(2), frame(2, "online")), Added::Full);
        assert_eq!(b.add(Id(1), frame(1, "idle")), Added::Yes);
        assert_eq!(pending.load(Ordering::Relaxed), PENDING_MAX);
    }

    #[test]
    fn the_batch_frame_lists_the_presence_objects() {
        let frames = [frame(1, "online"), frame(2, "idle")];
        let out = batch_frame(&frames);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["t"], "presence_batch");
        assert_eq!(v["d"]["presences"][0]["user_id"], "1");
        assert_eq!(v["d"]["presences"][1]["status"], "idle");
        assert_eq!(
            &batch_frame(&[])[..],
            br#"{"t":"presence_batch","d":{"presences":[]}}"#
        );
    }

    #[test]
    fn d_is_found_in_the_frame() {
        let f = PresenceFrame::parse(Bytes::from_static(
            br#"{"t":"presence","d":{"a":[1,{"b":2}]}}"#,
        ));
        assert_eq!(f.expect("a d").d(), br#"{"a":[1,{"b":2}]}"#);
        assert!(PresenceFrame::parse(Bytes::from_static(b"not json")).is_none());
        assert!(PresenceFrame::parse(Bytes::from_static(br#"{"t":"x"}"#)).is_none());
        assert!(PresenceFrame::parse(Bytes::from_static(br#"{"t":"x","d":[1]}"#)).is_none());
    }
}
