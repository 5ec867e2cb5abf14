//! The checker: from a history and the rows the shards stored, every anomaly of a chat
//! queue, in the spirit of Jepsen's queue and total-queue checkers. Pure: no I/O.
//!
//! # Reading the history
//!
//! Operations are taken in `index` order (which must increase). A client process has at
//! most one outstanding `send`, `join`, `leave` or `connect`: an invoke is paired with the
//! next completion of the same process, which must have the same `f`. An invoke with no
//! completion is `info` (outcome unknown). `recv`, `drop`, `resync`, `presence` and `user`
//! are lone `ok` observations; `nemesis` is the `nemesis` process's lone `info`. Anything
//! else (a second invoke while one is outstanding, a completion without invoke, a value
//! without its fields, a send before the process's `user`) is a [`HistoryError`]: the
//! history is unusable, not anomalous.
//!
//! A message is named by `(author, client_msg_id)` (the author is the sending process's
//! user), as the directory's idempotency index names it: several sends with the same key
//! (retries) are one message. Membership of a channel is known only from `join` and
//! `leave` operations: a channel's creator who is a member without a `join` must still be
//! logged with one.
//!
//! # Anomalies
//!
//! See [`Anomaly`] for the exact rule of each kind. Each is counted once per occurrence
//! (per message, per stored id, per gap, per receipt), with up to
//! [`CheckOptions::max_examples`] examples.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use parley_protocol::Id;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{F, Op, OpType, Process, StoredRow};

/// Settings of [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Examples kept per anomaly kind (the count covers all of them). Default 5.
    pub max_examples: usize,
    /// A member that invokes a `leave` of the channel at most this many milliseconds
    /// (`time_ms`) after a send's `ok` need not receive that message: its live event may
    /// still be on the way when the leave cuts it off, and a final catch-up skips channels
    /// left. Default 0: the brief's rule (only a leave invoked before the `ok` excuses).
    pub leave_grace_ms: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_examples: 5,
            leave_grace_ms: 0,
        }
    }
}

/// A kind of anomaly; the JSON and printed name is the kebab-case one (`lost`,
/// `ack-mismatch`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anomaly {
    /// An `ok` send whose message is not stored: no stored row has its `(author,
    /// client_msg_id)` nor its acknowledged id. One per `ok` send.
    Lost,
    /// One message stored twice: several rows with the same id that agree on channel,
    /// author and client_msg_id (one per id), or one `(author, client_msg_id)` stored under
    /// several ids (one per key). An `info` send stored twice is caught here.
    Duplicated,
    /// An `ok` send whose message is stored, but no row of it (by key or by id) has the
    /// acknowledged channel, id and seq. One per `ok` send.
    AckMismatch,
    /// Per channel, stored seqs skip numbers: the distinct seqs are not `1..=max`. One per
    /// missing range.
    SeqGap,
    /// Per channel, one seq held by several distinct ids. One per seq.
    SeqRepeat,
    /// Per channel, id order disagrees with seq order: taking the distinct seqs in order,
    /// the largest id at one seq is not below the smallest id at the next. One per pair.
    SeqIdOrder,
    /// Rows with the same id that differ in channel, author or client_msg_id: an id in two
    /// channels or on two messages. One per id.
    IdNotUnique,
    /// A message whose every send was `fail` (proved not stored) is stored. One per
    /// message.
    FailedStored,
    /// A stored row that no send explains: its `(author, client_msg_id)` was never invoked
    /// and its id was never acknowledged. One per row.
    UnexpectedStored,
    /// An acknowledged message a member never received (by any `via`). The members that
    /// must receive it: processes with a `join` `ok` of the channel before the (first
    /// acknowledged) send's invoke and no `leave` invoked between that join's `ok` and the
    /// send's `ok` (nor within [`CheckOptions::leave_grace_ms`] after it). The sender is one of them when it is a member (its own connections get
    /// the `message` event). One per (message, process).
    Undelivered,
    /// A receipt by a process that was not a member: it had invoked no `join` (that did not
    /// `fail`) of the channel before the receipt, or the message's first send was invoked
    /// after the process's last `leave` `ok` before it, with no `join` (that did not
    /// `fail`) invoked between that leave's `ok` and the receipt. One per receipt.
    NonMemberDelivery,
    /// Within one connection (from a `connect` invoke to the next) of one process, a `live`
    /// receipt of a channel with a seq below one received live before on that channel in
    /// that connection. Equal seqs (a repeated event) are not counted. One per receipt.
    OutOfOrderDelivery,
    /// A receipt of a message the shards do not have as received: no stored row has its
    /// id, or the row has another channel or seq (e.g. a fenced owner's message that was
    /// published but never stored). Not in the brief's list; what Jepsen's queue checker
    /// calls an unexpected dequeue. One per receipt.
    RecvMismatch,
    /// A `presence` observation whose `observed` statuses differ from `expected` (for the
    /// users `expected` lists), or with no `converged_after_ms`, or with one above
    /// `bound_ms`. One per observation.
    PresenceNotConverged,
}

impl Anomaly {
    /// Every kind, in report order.
    pub const ALL: [Anomaly; 14] = [
        Anomaly::Lost,
        Anomaly::Duplicated,
        Anomaly::AckMismatch,
        Anomaly::SeqGap,
        Anomaly::SeqRepeat,
        Anomaly::SeqIdOrder,
        Anomaly::IdNotUnique,
        Anomaly::FailedStored,
        Anomaly::UnexpectedStored,
        Anomaly::Undelivered,
        Anomaly::NonMemberDelivery,
        Anomaly::OutOfOrderDelivery,
        Anomaly::RecvMismatch,
        Anomaly::PresenceNotConverged,
    ];

    /// The printed name, e.g. `ack-mismatch`.
    pub fn name(self) -> &'static str {
        match self {
            Anomaly::Lost => "lost",
            Anomaly::Duplicated => "duplicated",
            Anomaly::AckMismatch => "ack-mismatch",
            Anomaly::SeqGap => "seq-gap",
            Anomaly::SeqRepeat => "seq-repeat",
            Anomaly::SeqIdOrder => "seq-id-order",
            Anomaly::IdNotUnique => "id-not-unique",
            Anomaly::FailedStored => "failed-stored",
            Anomaly::UnexpectedStored => "unexpected-stored",
            Anomaly::Undelivered => "undelivered",
            Anomaly::NonMemberDelivery => "non-member-delivery",
            Anomaly::OutOfOrderDelivery => "out-of-order-delivery",
            Anomaly::RecvMismatch => "recv-mismatch",
            Anomaly::PresenceNotConverged => "presence-not-converged",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One occurrence of an anomaly: what it concerns and the operations (history indexes)
/// that show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The channel concerned, if one is.
    pub channel: Option<Id>,
    /// The message id concerned (acknowledged, stored or received), if one is.
    pub id: Option<Id>,
    /// The seq concerned (acknowledged, stored or received; for a gap its first seq).
    pub seq: Option<u64>,
    /// The process concerned: the sender, or the receiver for delivery anomalies.
    pub process: Option<Process>,
    /// `index` of the operations involved (invoke, completion, receipt, ...).
    pub ops: Vec<u64>,
    /// What is wrong, in words.
    pub detail: String,
}

impl fmt::Display for Example {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.channel {
            write!(f, "channel {c} ")?;
        }
        if let Some(id) = self.id {
            write!(f, "id {id} ")?;
        }
        if let Some(s) = self.seq {
            write!(f, "seq {s} ")?;
        }
        if let Some(p) = self.process {
            write!(f, "process {p} ")?;
        }
        if !self.ops.is_empty() {
            write!(f, "ops {:?} ", self.ops)?;
        }
        write!(f, "— {}", self.detail)
    }
}

/// How many times one kind occurred, and the first few.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// Occurrences in all.
    pub count: u64,
    /// The first occurrences, at most [`CheckOptions::max_examples`].
    pub examples: Vec<Example>,
}

/// Send operations by outcome (operations, not distinct messages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sends {
    /// Invokes.
    pub invoked: u64,
    /// `ok`.
    pub acknowledged: u64,
    /// `fail`: certainly not stored.
    pub failed: u64,
    /// `info`, or an invoke never completed.
    pub unknown: u64,
    /// Of the unknown ones, those whose message is stored.
    pub unknown_stored: u64,
}

/// What [`check`] found. `Display` prints a summary; serde gives the same as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// History lines by `f`, then by `type`.
    pub operations: BTreeMap<F, BTreeMap<OpType, u64>>,
    /// Invokes with no completion (counted as `info`).
    pub pending: u64,
    /// Faults injected: nemesis `start` operations by `fault`.
    pub faults: BTreeMap<String, u64>,
    /// Send operations by outcome.
    pub sends: Sends,
    /// Stored rows, and the channels they are in.
    pub stored: u64,
    pub channels: u64,
    /// `recv` operations by `via` (`live`, `resume`, `history`).
    pub deliveries: BTreeMap<String, u64>,
    /// Every kind, found or not (count 0).
    pub anomalies: BTreeMap<Anomaly, Found>,
}

impl Report {
    /// Whether no anomaly of any kind was found.
    pub fn is_valid(&self) -> bool {
        self.anomaly_count() == 0
    }

    /// Anomalies of all kinds together.
    pub fn anomaly_count(&self) -> u64 {
        self.anomalies.values().map(|f| f.count).sum()
    }

    /// How many of `kind` were found.
    pub fn count(&self, kind: Anomaly) -> u64 {
        self.anomalies.get(&kind).map_or(0, |f| f.count)
    }

    /// History lines in all.
    pub fn operation_count(&self) -> u64 {
        self.operations.values().flat_map(|m| m.values()).sum()
    }
}

fn join_counts<K: fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "operations: {} ({} invokes never completed, counted as info)",
            self.operation_count(),
            self.pending
        )?;
        for (func, types) in &self.operations {
            writeln!(f, "  {func}: {}", join_counts(types))?;
        }
        let faults: u64 = self.faults.values().sum();
        writeln!(f, "faults: {faults} ({})", join_counts(&self.faults))?;
        let s = &self.sends;
        writeln!(
            f,
            "sends: {} invoked, {} acknowledged, {} failed, {} unknown ({} of them stored)",
            s.invoked, s.acknowledged, s.failed, s.unknown, s.unknown_stored
        )?;
        writeln!(
            f,
            "stored: {} messages in {} channels",
            self.stored, self.channels
        )?;
        writeln!(f, "deliveries: {}", join_counts(&self.deliveries))?;
        writeln!(f, "anomalies: {}", self.anomaly_count())?;
        for (kind, found) in &self.anomalies {
            writeln!(f, "  {kind}: {}", found.count)?;
            for e in &found.examples {
                writeln!(f, "    {e}")?;
            }
        }
        write!(f, "{}", if self.is_valid() { "valid" } else { "INVALID" })
    }
}

/// Why a history cannot be checked: the first malformed operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history operation {index}: {message}")]
pub struct HistoryError {
    /// The operation's `index`.
    pub index: u64,
    /// What is wrong with it.
    pub message: String,
}

fn bad(op: &Op, message: impl Into<String>) -> HistoryError {
    HistoryError {
        index: op.index,
        message: message.into(),
    }
}

/// How a message reached a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Via {
    Live,
    Resume,
    History,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Live => "live",
            Via::Resume => "resume",
            Via::History => "history",
        }
    }
}

#[derive(Deserialize)]
struct ChannelValue {
    channel: Id,
}

#[derive(Deserialize)]
struct SendInvoke {
    channel: Id,
    client_msg_id: String,
}

#[derive(Deserialize)]
struct SendOk {
    id: Id,
    seq: u64,
}

#[derive(Deserialize)]
struct RecvValue {
    channel: Id,
    id: Id,
    seq: u64,
    via: Via,
}

#[derive(Deserialize)]
struct UserValue {
    user: Id,
}

#[derive(Deserialize)]
struct NemesisValue {
    fault: String,
    phase: super::Phase,
}

#[derive(Deserialize)]
struct PresenceValue {
    observer: Value,
    expected: serde_json::Map<String, Value>,
    observed: serde_json::Map<String, Value>,
    converged_after_ms: Option<u64>,
    bound_ms: u64,
}

fn value<T: serde::de::DeserializeOwned>(op: &Op) -> Result<T, HistoryError> {
    T::deserialize(&op.value).map_err(|e| bad(op, format!("{} {} value: {e}", op.f, op.kind)))
}

/// How a send ended.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok {
        index: u64,
        time_ms: u64,
        id: Id,
        seq: u64,
    },
    Fail {
        index: u64,
    },
    /// `info`, or `None` when never completed.
    Info {
        index: Option<u64>,
    },
}

#[derive(Debug)]
struct SendOp {
    process: u32,
    user: Id,
    channel: Id,
    client_msg_id: String,
    invoke: u64,
    outcome: Outcome,
}

impl SendOp {
    fn key(&self) -> (Id, &str) {
        (self.user, self.client_msg_id.as_str())
    }
}

struct RecvOp {
    process: u32,
    index: u64,
    connection: u64,
    channel: Id,
    id: Id,
    seq: u64,
    via: Via,
}

/// One process's `join`/`leave` history of one channel: history indexes, increasing.
#[derive(Default)]
struct Membership {
    /// Index of each join's `ok`.
    join_ok: Vec<u64>,
    /// Index of each join invoke whose completion is not `fail`.
    join_invoked: Vec<u64>,
    /// Index and `time_ms` of each leave invoke.
    leave_invoked: Vec<(u64, u64)>,
    /// Index of each leave's `ok`.
    leave_ok: Vec<u64>,
}

fn last_before(v: &[u64], index: u64) -> Option<u64> {
    v.iter().copied().take_while(|&i| i < index).last()
}

fn any_between(v: &[u64], after: u64, before: u64) -> bool {
    v.iter().any(|&i| i > after && i < before)
}

/// The history, paired and typed.
#[derive(Default)]
struct Parsed<'h> {
    users: HashMap<u32, Id>,
    sends: Vec<SendOp>,
    recvs: Vec<RecvOp>,
    presence: Vec<(&'h Op, PresenceValue)>,
    membership: HashMap<(u32, Id), Membership>,
    operations: BTreeMap<F, BTreeMap<OpType, u64>>,
    faults: BTreeMap<String, u64>,
    pending: u64,
    /// Per process, `connect` invokes so far (names the current connection).
    connections: HashMap<u32, u64>,
}

impl<'h> Parsed<'h> {
    fn read(history: &'h [Op]) -> Result<Self, HistoryError> {
        let mut p = Parsed::default();
        let mut outstanding: HashMap<u32, &'h Op> = HashMap::new();
        let mut last_index = None;
        for op in history {
            if last_index.is_some_and(|l| op.index <= l) {
                return Err(bad(op, "index does not increase"));
            }
            last_index = Some(op.index);
            *p.operations
                .entry(op.f)
                .or_default()
                .entry(op.kind)
                .or_default() += 1;
            let client = match op.process {
                Process::Nemesis => {
                    p.nemesis(op)?;
                    continue;
                }
                Process::Client(c) => c,
            };
            if op.f.is_observation() {
                p.observation(client, op)?;
            } else if op.kind == OpType::Invoke {
                if outstanding.insert(client, op).is_some() {
                    return Err(bad(op, "invoke while another operation is outstanding"));
                }
            } else {
                let invoke = outstanding
                    .remove(&client)
                    .filter(|i| i.f == op.f)
                    .ok_or_else(|| bad(op, "completion without a matching invoke"))?;
                p.pair(client, invoke, Some(op))?;
            }
        }
        let mut left: Vec<(u32, &Op)> = outstanding.into_iter().collect();
        left.sort_by_key(|(_, op)| op.index);
        for (client, invoke) in left {
            p.pending += 1;
            p.pair(client, invoke, None)?;
        }
        Ok(p)
    }

    fn nemesis(&mut self, op: &Op) -> Result<(), HistoryError> {
        if op.f != F::Nemesis || op.kind != OpType::Info {
            return Err(bad(op, "the nemesis process logs only `nemesis` `info`"));
        }
        let v: NemesisValue = value(op)?;
        if v.phase == super::Phase::Start {
            *self.faults.entry(v.fault).or_default() += 1;
        }
        Ok(())
    }

    fn observation(&mut self, client: u32, op: &'h Op) -> Result<(), HistoryError> {
        if op.kind != OpType::Ok || op.f == F::Nemesis {
            return Err(bad(op, format!("a client's `{}` is a lone `ok`", op.f)));
        }
        match op.f {
            F::User => {
                let v: UserValue = value(op)?;
                self.users.insert(client, v.user);
            }
            F::Recv => {
                let v: RecvValue = value(op)?;
                self.recvs.push(RecvOp {
                    process: client,
                    index: op.index,
                    connection: self.connections.get(&client).copied().unwrap_or(0),
                    channel: v.channel,
                    id: v.id,
                    seq: v.seq,
                    via: v.via,
                });
            }
            F::Presence => self.presence.push((op, value(op)?)),
            _ => {}
        }
        Ok(())
    }

    /// An invoke and its completion (`None`: never completed).
    fn pair(&mut self, client: u32, invoke: &Op, done: Option<&Op>) -> Result<(), HistoryError> {
        let kind = done.map_or(OpType::Info, |d| d.kind);
        match invoke.f {
            F::Send => {
                let v: SendInvoke = value(invoke)?;
                let user = *self
                    .users
                    .get(&client)
                    .ok_or_else(|| bad(invoke, "send before the process's `user` operation"))?;
                let outcome = match (done, kind) {
                    (Some(d), OpType::Ok) => {
                        let ok: SendOk = value(d)?;
                        Outcome::Ok {
                            index: d.index,
                            time_ms: d.time_ms,
                            id: ok.id,
                            seq: ok.seq,
                        }
                    }
                    (Some(d), OpType::Fail) => Outcome::Fail { index: d.index },
                    _ => Outcome::Info {
                        index: done.map(|d| d.index),
                    },
                };
                self.sends.push(SendOp {
                    process: client,
                    user,
                    channel: v.channel,
                    client_msg_id: v.client_msg_id,
                    invoke: invoke.index,
                    outcome,
                });
            }
            F::Join | F::Leave => {
                let v: ChannelValue = value(invoke)?;
                let m = self.membership.entry((client, v.channel)).or_default();
                let ok = done.filter(|_| kind == OpType::Ok).map(|d| d.index);
                if invoke.f == F::Join {
                    m.join_ok.extend(ok);
                    if kind != OpType::Fail {
                        m.join_invoked.push(invoke.index);
                    }
                } else {
                    m.leave_invoked.push((invoke.index, invoke.time_ms));
                    m.leave_ok.extend(ok);
                }
            }
            F::Connect => *self.connections.entry(client).or_default() += 1,
            _ => return Err(bad(invoke, format!("`{}` is never invoked", invoke.f))),
        }
        Ok(())
    }
}

/// Collects anomalies, keeping the first few examples of each kind.
struct Findings {
    max_examples: usize,
    found: BTreeMap<Anomaly, Found>,
}

impl Findings {
    fn new(max_examples: usize) -> Self {
        Findings {
            max_examples,
            found: Anomaly::ALL
                .iter()
                .map(|&k| (k, Found::default()))
                .collect(),
        }
    }

    fn add(&mut self, kind: Anomaly, example: Example) {
        let f = self.found.entry(kind).or_default();
        f.count += 1;
        if f.examples.len() < self.max_examples {
            f.examples.push(example);
        }
    }
}

/// The stored rows, indexed.
struct Store<'s> {
    rows: &'s [StoredRow],
    by_id: HashMap<Id, Vec<&'s StoredRow>>,
    by_key: HashMap<(Id, &'s str), Vec<&'s StoredRow>>,
    by_channel: BTreeMap<Id, Vec<&'s StoredRow>>,
}

impl<'s> Store<'s> {
    fn new(rows: &'s [StoredRow]) -> Self {
        let mut s = Store {
            rows,
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            by_channel: BTreeMap::new(),
        };
        for r in rows {
            s.by_id.entry(r.id).or_default().push(r);
            if let Some(c) = &r.client_msg_id {
                s.by_key.entry((r.author, c.as_str())).or_default().push(r);
            }
            s.by_channel.entry(r.channel).or_default().push(r);
        }
        s
    }

    /// Rows of a message: by key, then by id (each row once).
    fn message(&self, key: (Id, &str), id: Option<Id>) -> Vec<&'s StoredRow> {
        let mut out: Vec<&StoredRow> = self.by_key.get(&key).cloned().unwrap_or_default();
        if let Some(rows) = id.and_then(|id| self.by_id.get(&id)) {
            for r in rows {
                if !out.iter().any(|o| std::ptr::eq(*o, *r)) {
                    out.push(r);
                }
            }
        }
        out
    }
}

/// Checks `history` against the rows `stored` (every row of the run's channels, from
/// every shard, read after the run settled). Errors when the history is malformed (see the
/// module docs); anomalies go into the [`Report`].
pub fn check(
    history: &[Op],
    stored: &[StoredRow],
    opts: CheckOptions,
) -> Result<Report, HistoryError> {
    let parsed = Parsed::read(history)?;
    let store = Store::new(stored);
    let mut findings = Findings::new(opts.max_examples);
    check_rows(&store, &mut findings);
    let sends = check_sends(&parsed, &store, &mut findings);
    check_delivery(&parsed, &store, opts.leave_grace_ms, &mut findings);
    check_order(&parsed, &mut findings);
    check_presence(&parsed, &mut findings);
    let mut deliveries = BTreeMap::new();
    for r in &parsed.recvs {
        *deliveries.entry(r.via.name().to_owned()).or_default() += 1;
    }
    Ok(Report {
        operations: parsed.operations,
        pending: parsed.pending,
        faults: parsed.faults,
        sends,
        stored: stored.len() as u64,
        channels: store.by_channel.len() as u64,
        deliveries,
        anomalies: findings.found,
    })
}

/// `duplicated` and `id-not-unique` by id; the seq checks per channel.
fn check_rows(store: &Store<'_>, findings: &mut Findings) {
    let mut ids: Vec<(&Id, &Vec<&StoredRow>)> = store.by_id.iter().collect();
    ids.sort_by_key(|(id, _)| **id);
    for (&id, rows) in ids.into_iter().filter(|(_, rows)| rows.len() > 1) {
        let first = rows[0];
        let same = rows.iter().all(|r| {
            r.channel == first.channel
                && r.author == first.author
                && r.client_msg_id == first.client_msg_id
        });
        let places: Vec<String> = rows
            .iter()
            .map(|r| format!("channel {} seq {}", r.channel, r.seq))
            .collect();
        let (kind, what) = if same {
            (Anomaly::Duplicated, "one message stored")
        } else {
            (Anomaly::IdNotUnique, "id on different messages,")
        };
        findings.add(
            kind,
            Example {
                channel: Some(first.channel),
                id: Some(id),
                detail: format!("{what} {} times: {}", rows.len(), places.join("; ")),
                ..Example::default()
            },
        );
    }
    for (&channel, rows) in &store.by_channel {
        check_channel_seqs(channel, rows, findings);
    }
}

/// `seq-gap`, `seq-repeat` and `seq-id-order` of one channel.
fn check_channel_seqs(channel: Id, rows: &[&StoredRow], findings: &mut Findings) {
    let mut by_seq: BTreeMap<u64, BTreeSet<Id>> = BTreeMap::new();
    for r in rows {
        by_seq.entry(r.seq).or_default().insert(r.id);
    }
    let at = |seq: u64, id: Option<Id>, detail: String| Example {
        channel: Some(channel),
        id,
        seq: Some(seq),
        detail,
        ..Example::default()
    };
    let mut next = 1;
    let mut previous: Option<(u64, Id)> = None;
    for (&seq, ids) in &by_seq {
        if seq > next {
            let detail = format!("seqs {next}..={} missing", seq - 1);
            findings.add(Anomaly::SeqGap, at(next, None, detail));
        }
        next = next.max(seq + 1);
        if ids.len() > 1 {
            let detail = format!("held by ids {ids:?}");
            findings.add(Anomaly::SeqRepeat, at(seq, None, detail));
        }
        let (min, max) = (ids.first().copied(), ids.last().copied());
        if let (Some((p_seq, p_max)), Some(min)) = (previous, min)
            && p_max >= min
        {
            let detail = format!("id {p_max} at seq {p_seq} is not below id {min} at seq {seq}");
            findings.add(Anomaly::SeqIdOrder, at(seq, Some(min), detail));
        }
        previous = max.map(|m| (seq, m));
    }
}

/// `lost`, `ack-mismatch`, `failed-stored`, `unexpected-stored`, `duplicated` by key; the
/// send figures.
fn check_sends(parsed: &Parsed<'_>, store: &Store<'_>, findings: &mut Findings) -> Sends {
    let mut sends = Sends::default();
    let mut by_key: BTreeMap<(Id, &str), Vec<&SendOp>> = BTreeMap::new();
    for s in &parsed.sends {
        by_key.entry(s.key()).or_default().push(s);
        sends.invoked += 1;
        match s.outcome {
            Outcome::Ok { index, id, seq, .. } => {
                sends.acknowledged += 1;
                check_ack(s, index, id, seq, store, findings);
            }
            Outcome::Fail { .. } => sends.failed += 1,
            Outcome::Info { .. } => {
                sends.unknown += 1;
                if store.by_key.contains_key(&s.key()) {
                    sends.unknown_stored += 1;
                }
            }
        }
    }
    for (key, ops) in &by_key {
        let rows = store.by_key.get(key).map_or(&[][..], Vec::as_slice);
        let s = ops[0];
        let indexes = || ops.iter().flat_map(|o| op_indexes(o)).collect::<Vec<_>>();
        if !rows.is_empty()
            && ops
                .iter()
                .all(|o| matches!(o.outcome, Outcome::Fail { .. }))
        {
            findings.add(
                Anomaly::FailedStored,
                send_example(s, rows.first().map(|r| (r.id, r.seq)), indexes(), {
                    format!("every send failed, yet stored {} time(s)", rows.len())
                }),
            );
        }
        let distinct: BTreeSet<Id> = rows.iter().map(|r| r.id).collect();
        if distinct.len() > 1 {
            findings.add(
                Anomaly::Duplicated,
                send_example(s, None, indexes(), {
                    format!("client_msg_id {} stored under ids {distinct:?}", key.1)
                }),
            );
        }
    }
    let acked: HashSet<Id> = parsed
        .sends
        .iter()
        .filter_map(|s| match s.outcome {
            Outcome::Ok { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    for r in store.rows {
        let invoked = r
            .client_msg_id
            .as_deref()
            .is_some_and(|c| by_key.contains_key(&(r.author, c)));
        if !invoked && !acked.contains(&r.id) {
            findings.add(
                Anomaly::UnexpectedStored,
                Example {
                    channel: Some(r.channel),
                    id: Some(r.id),
                    seq: Some(r.seq),
                    detail: format!(
                        "author {} client_msg_id {:?}: no send explains it",
                        r.author, r.client_msg_id
                    ),
                    ..Example::default()
                },
            );
        }
    }
    sends
}

/// The history indexes of a send: invoke and completion.
fn op_indexes(s: &SendOp) -> Vec<u64> {
    let done = match s.outcome {
        Outcome::Ok { index, .. } | Outcome::Fail { index } => Some(index),
        Outcome::Info { index } => index,
    };
    std::iter::once(s.invoke).chain(done).collect()
}

fn send_example(s: &SendOp, at: Option<(Id, u64)>, ops: Vec<u64>, detail: String) -> Example {
    Example {
        channel: Some(s.channel),
        id: at.map(|a| a.0),
        seq: at.map(|a| a.1),
        process: Some(Process::Client(s.process)),
        ops,
        detail,
    }
}

/// `lost` or `ack-mismatch` of one `ok` send.
fn check_ack(s: &SendOp, index: u64, id: Id, seq: u64, store: &Store<'_>, findings: &mut Findings) {
    let rows = store.message(s.key(), Some(id));
    let ops = vec![s.invoke, index];
    if rows.is_empty() {
        let detail = format!("acknowledged ({}), not stored", s.client_msg_id);
        findings.add(Anomaly::Lost, send_example(s, Some((id, seq)), ops, detail));
    } else if !rows
        .iter()
        .any(|r| r.channel == s.channel && r.id == id && r.seq == seq)
    {
        let stored: Vec<String> = rows
            .iter()
            .map(|r| format!("channel {} id {} seq {}", r.channel, r.id, r.seq))
            .collect();
        let detail = format!("acknowledged, but stored as {}", stored.join("; "));
        findings.add(
            Anomaly::AckMismatch,
            send_example(s, Some((id, seq)), ops, detail),
        );
    }
}

/// Per message key (author, client_msg_id): the index of the first invoke of any attempt.
fn first_invokes_by_key<'p>(parsed: &'p Parsed<'_>) -> HashMap<(Id, &'p str), u64> {
    let mut first_by_key: HashMap<(Id, &str), u64> = HashMap::new();
    for s in &parsed.sends {
        let e = first_by_key.entry(s.key()).or_insert(s.invoke);
        *e = (*e).min(s.invoke);
    }
    first_by_key
}

/// Per message id: the index of the first invoke of any send of it.
fn first_invokes(parsed: &Parsed<'_>, store: &Store<'_>) -> HashMap<Id, u64> {
    let first_by_key = first_invokes_by_key(parsed);
    let mut out: HashMap<Id, u64> = HashMap::new();
    let mut note = |id: Id, invoke: u64| {
        let e = out.entry(id).or_insert(invoke);
        *e = (*e).min(invoke);
    };
    for s in &parsed.sends {
        if let Outcome::Ok { id, .. } = s.outcome {
            note(id, first_by_key[&s.key()]);
        }
    }
    for r in store.rows {
        if let Some(&i) = r
            .client_msg_id
            .as_deref()
            .and_then(|c| first_by_key.get(&(r.author, c)))
        {
            note(r.id, i);
        }
    }
    out
}

/// `undelivered`, `non-member-delivery`, `recv-mismatch`.
fn check_delivery(parsed: &Parsed<'_>, store: &Store<'_>, grace_ms: u64, findings: &mut Findings) {
    let mut received: HashSet<(u32, Id, Id)> = HashSet::new();
    for r in &parsed.recvs {
        received.insert((r.process, r.channel, r.id));
    }
    let mut seen_keys: HashSet<(Id, &str)> = HashSet::new();
    // A retried send is one message since its first attempt: a process that joined between
    // the first attempt and the retry was not a member throughout.
    let first_by_key = first_invokes_by_key(parsed);
    let mut members: Vec<(&(u32, Id), &Membership)> = parsed.membership.iter().collect();
    members.sort_by_key(|(k, _)| **k);
    for s in &parsed.sends {
        let Outcome::Ok {
            index,
            time_ms,
            id,
            seq,
        } = s.outcome
        else {
            continue;
        };
        if !seen_keys.insert(s.key()) {
            continue;
        }
        let ids: Vec<Id> = std::iter::once(id)
            .chain(store.message(s.key(), None).iter().map(|r| r.id))
            .collect();
        for &(&(process, channel), m) in &members {
            let invoke = first_by_key.get(&s.key()).copied().unwrap_or(s.invoke);
            if channel != s.channel || !member_throughout(m, invoke, (index, time_ms), grace_ms) {
                continue;
            }
            if !ids
                .iter()
                .any(|&i| received.contains(&(process, channel, i)))
            {
                let left = m.leave_invoked.iter().find(|l| l.0 > index);
                let detail = match left {
                    Some((i, t)) => format!(
                        "sent by process {}, never received; it left at op {i}, {} ms after the ok",
                        s.process,
                        t.saturating_sub(time_ms)
                    ),
                    None => format!("sent by process {}, never received", s.process),
                };
                let mut e = send_example(s, Some((id, seq)), vec![s.invoke, index], detail);
                e.process = Some(Process::Client(process));
                findings.add(Anomaly::Undelivered, e);
            }
        }
    }
    let first_invoke = first_invokes(parsed, store);
    for r in &parsed.recvs {
        check_receipt(r, parsed, store, &first_invoke, findings);
    }
}

/// Whether the process must receive a message sent by the invoke `invoke` acknowledged at
/// `ok` (index, `time_ms`): a join `ok` before the invoke and no leave invoked from then to
/// the `ok`, nor within `grace_ms` after it.
fn member_throughout(m: &Membership, invoke: u64, ok: (u64, u64), grace_ms: u64) -> bool {
    last_before(&m.join_ok, invoke).is_some_and(|j| {
        !m.leave_invoked.iter().any(|&(i, t)| {
            i > j && (i < ok.0 || (grace_ms > 0 && t <= ok.1.saturating_add(grace_ms)))
        })
    })
}

/// `non-member-delivery` and `recv-mismatch` of one receipt.
fn check_receipt(
    r: &RecvOp,
    parsed: &Parsed<'_>,
    store: &Store<'_>,
    first_invoke: &HashMap<Id, u64>,
    findings: &mut Findings,
) {
    let example = |detail: String, ops: Vec<u64>| Example {
        channel: Some(r.channel),
        id: Some(r.id),
        seq: Some(r.seq),
        process: Some(Process::Client(r.process)),
        ops,
        detail,
    };
    let m = parsed.membership.get(&(r.process, r.channel));
    let joined = m.is_some_and(|m| last_before(&m.join_invoked, r.index).is_some());
    if !joined {
        let detail = format!(
            "received ({}) with no join of the channel before",
            r.via.name()
        );
        findings.add(Anomaly::NonMemberDelivery, example(detail, vec![r.index]));
    } else if let (Some(m), Some(&invoke)) = (m, first_invoke.get(&r.id))
        && let Some(left) = last_before(&m.leave_ok, invoke)
        && !any_between(&m.join_invoked, left, r.index)
    {
        let detail = format!(
            "received ({}) a message sent after the leave acknowledged at {left}",
            r.via.name()
        );
        findings.add(
            Anomaly::NonMemberDelivery,
            example(detail, vec![left, invoke, r.index]),
        );
    }
    let rows = store.by_id.get(&r.id).map_or(&[][..], Vec::as_slice);
    if !rows
        .iter()
        .any(|s| s.channel == r.channel && s.seq == r.seq)
    {
        let detail = if rows.is_empty() {
            format!("received ({}), never stored", r.via.name())
        } else {
            let at: Vec<String> = rows
                .iter()
                .map(|s| format!("channel {} seq {}", s.channel, s.seq))
                .collect();
            format!("received ({}), stored as {}", r.via.name(), at.join("; "))
        };
        findings.add(Anomaly::RecvMismatch, example(detail, vec![r.index]));
    }
}

/// `out-of-order-delivery`: live receipts per (process, connection, channel).
fn check_order(parsed: &Parsed<'_>, findings: &mut Findings) {
    let mut highest: HashMap<(u32, u64, Id), (u64, u64)> = HashMap::new();
    for r in parsed.recvs.iter().filter(|r| r.via == Via::Live) {
        let key = (r.process, r.connection, r.channel);
        match highest.get(&key) {
            Some(&(seq, index)) if r.seq < seq => findings.add(
                Anomaly::OutOfOrderDelivery,
                Example {
                    channel: Some(r.channel),
                    id: Some(r.id),
                    seq: Some(r.seq),
                    process: Some(Process::Client(r.process)),
                    ops: vec![index, r.index],
                    detail: format!("live seq {} after live seq {seq}", r.seq),
                },
            ),
            _ => {
                highest.insert(key, (r.seq, r.index));
            }
        }
    }
}

/// `presence-not-converged`.
fn check_presence(parsed: &Parsed<'_>, findings: &mut Findings) {
    for (op, p) in &parsed.presence {
        let differ: Vec<&String> = p
            .expected
            .iter()
            .filter(|(user, status)| p.observed.get(*user) != Some(*status))
            .map(|(user, _)| user)
            .collect();
        let problem = if !differ.is_empty() {
            Some(format!(
                "statuses of {differ:?} differ from the expected ones"
            ))
        } else {
            match p.converged_after_ms {
                None => Some("never converged".to_owned()),
                Some(ms) if ms > p.bound_ms => {
                    Some(format!("converged after {ms} ms, bound {} ms", p.bound_ms))
                }
                Some(_) => None,
            }
        };
        if let Some(problem) = problem {
            findings.add(
                Anomaly::PresenceNotConverged,
                Example {
                    process: Some(op.process),
                    ops: vec![op.index],
                    detail: format!("observer {}: {problem}", p.observer),
                    ..Example::default()
                },
            );
        }
    }
}
