//! A Jepsen-style history: every operation the workload driver and the nemesis performed,
//! one JSON object per line, and the rows the shards stored, for the checker.
//!
//! An operation is an `invoke` followed, on the same process, by one completion: `ok`,
//! `fail` (it certainly did not happen) or `info` (the outcome is unknown). Observations
//! (`recv`, `drop`, `resync`, `presence`, `user`) are a lone `ok`; faults are the
//! `nemesis` process's lone `info`. The shape of one line:
//!
//! ```json
//! {"index":12,"time_ms":1532,"process":3,"type":"invoke","f":"send","node":"n2","value":{"channel":"123","client_msg_id":"p3-17"}}
//! ```
//!
//! [`HistoryWriter`] writes such a file while the run goes on (it assigns `index` and
//! `time_ms`); [`read_history`] reads it back. [`StoredRow`] is one line of the second
//! file, what the shards held after the run settled ([`write_stored`], [`read_stored`]).
//! [`check()`] reads both and reports the anomalies ([`Report`]).

pub mod check;
#[cfg(test)]
mod tests;

pub use check::{Anomaly, CheckOptions, HistoryError, Report, check};

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use parley_protocol::Id;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Who performed an operation: a client (one user on one WebSocket at a time), numbered
/// from 0, or the nemesis that injects faults. JSON: the number, or the string `"nemesis"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Process {
    /// A client process, by number.
    Client(u32),
    /// The fault injector.
    Nemesis,
}

impl From<u32> for Process {
    fn from(n: u32) -> Self {
        Process::Client(n)
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(n) => write!(f, "{n}"),
            Process::Nemesis => f.write_str("nemesis"),
        }
    }
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(n) => serializer.serialize_u32(*n),
            Process::Nemesis => serializer.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Client(u32),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Client(n) => Ok(Process::Client(n)),
            Raw::Name(s) if s == "nemesis" => Ok(Process::Nemesis),
            Raw::Name(s) => Err(serde::de::Error::custom(format_args!(
                "process is a client number or \"nemesis\", not {s:?}"
            ))),
        }
    }
}

/// The type of an operation (Jepsen's `:type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation began.
    Invoke,
    /// It happened (or, for an observation, this is what was observed).
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Its outcome is unknown: it may or may not have happened (a timeout, a closed socket,
    /// `unavailable`). Also the type of nemesis operations.
    Info,
}

impl OpType {
    /// The JSON name: `invoke`, `ok`, `fail`, `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }
}

impl fmt::Display for OpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The function of an operation (Jepsen's `:f`); each variant says what `value` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F {
    /// Send a message. Invoke `{channel, client_msg_id, text?}`; ok adds `{id, seq}`;
    /// fail/info add `{error}`. `fail` only when the error proves nothing was stored
    /// (`bad_request`, `forbidden`, `not_found`, `rate_limited`, `payload_too_large`).
    Send,
    /// Join a channel: `{channel}` on invoke and completion.
    Join,
    /// Leave a channel: `{channel}` on invoke and completion.
    Leave,
    /// Open a WebSocket session. Invoke `{resume_after?}`; ok `{session, node}`;
    /// fail/info `{error}`.
    Connect,
    /// The client closed its socket on purpose: a lone `ok`, value `{}`.
    Drop,
    /// A message the client received: a lone `ok`, `{channel, id, seq, via}` with `via`
    /// `live`, `resume` or `history`.
    Recv,
    /// The client got `resync_required`: a lone `ok`, `{channel}`.
    Resync,
    /// Presence as one observer saw it at the end: a lone `ok`, `{observer, expected,
    /// observed, converged_after_ms, bound_ms}`.
    Presence,
    /// A fault: process `nemesis`, type `info`, `{fault, phase: "start"|"heal", target?}`.
    Nemesis,
    /// The user a process acts as, its first operation: a lone `ok`, `{user}`.
    User,
}

impl F {
    /// The JSON name: `send`, `join`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            F::Send => "send",
            F::Join => "join",
            F::Leave => "leave",
            F::Connect => "connect",
            F::Drop => "drop",
            F::Recv => "recv",
            F::Resync => "resync",
            F::Presence => "presence",
            F::Nemesis => "nemesis",
            F::User => "user",
        }
    }

    /// Whether this function is a lone completion (an observation or a fault), never
    /// invoked: `drop`, `recv`, `resync`, `presence`, `user`, `nemesis`.
    pub fn is_observation(self) -> bool {
        !matches!(self, F::Send | F::Join | F::Leave | F::Connect)
    }
}

impl fmt::Display for F {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0, increasing by one per line.
    pub index: u64,
    /// Milliseconds since the run started (monotonic clock).
    pub time_ms: u64,
    /// Who performed it.
    pub process: Process,
    /// `invoke`, `ok`, `fail` or `info` (JSON key `type`).
    #[serde(rename = "type")]
    pub kind: OpType,
    /// What it does (JSON key `f`).
    pub f: F,
    /// The node (`n1`, ...) the client talks to, or the nemesis's target; `null` if none.
    pub node: Option<String>,
    /// Arguments and results; the shape depends on `f` (see [`F`]). A completion repeats
    /// the invoke's fields and adds its own.
    pub value: Value,
}

/// Writes a history file as the run goes on: one JSON line per operation, flushed at once
/// (a crashed run leaves every line written so far), nothing kept in memory.
///
/// Cheap to clone (an [`Arc`]); every clone appends to the same file under one lock, which
/// assigns `index` (0, 1, 2, ...) and `time_ms` (since [`HistoryWriter::create`]) so both
/// increase with the line number. Writing never fails the caller: the first I/O error is
/// kept and returned by [`HistoryWriter::finish`], later operations are dropped.
#[derive(Clone)]
pub struct HistoryWriter {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    state: Mutex<WriterState>,
}

struct WriterState {
    next_index: u64,
    out: Box<dyn Write + Send>,
    error: Option<io::Error>,
}

impl fmt::Debug for HistoryWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryWriter")
            .field("next_index", &self.inner.state.lock().next_index)
            .finish_non_exhaustive()
    }
}

impl HistoryWriter {
    /// Creates (or truncates) the file at `path`; `time_ms` counts from now.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self::to_writer(Box::new(BufWriter::new(File::create(
            path,
        )?))))
    }

    /// Writes to any sink (a `Vec<u8>` behind a lock, a pipe); flushed after every line.
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        HistoryWriter {
            inner: Arc::new(Inner {
                start: Instant::now(),
                state: Mutex::new(WriterState {
                    next_index: 0,
                    out,
                    error: None,
                }),
            }),
        }
    }

    /// Appends one operation and returns it as written. The low-level form: prefer
    /// [`invoke`](Self::invoke), [`observe`](Self::observe), [`nemesis`](Self::nemesis).
    pub fn log(
        &self,
        process: Process,
        kind: OpType,
        f: F,
        node: Option<&str>,
        value: Value,
    ) -> Op {
        let mut state = self.inner.state.lock();
        let op = Op {
            index: state.next_index,
            time_ms: u64::try_from(self.inner.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            process,
            kind,
            f,
            node: node.map(str::to_owned),
            value,
        };
        state.next_index += 1;
        if state.error.is_none() {
            let written = serde_json::to_writer(&mut state.out, &op)
                .map_err(io::Error::from)
                .and_then(|()| state.out.write_all(b"\n"))
                .and_then(|()| state.out.flush());
            if let Err(e) = written {
                state.error = Some(e);
            }
        }
        op
    }

    /// Logs an `invoke` and returns the [`Pending`] operation to complete with
    /// [`Pending::ok`], [`Pending::fail`] or [`Pending::info`]. `value` must be a JSON
    /// object (e.g. `json!({"channel": "123", "client_msg_id": "p3-17"})`).
    pub fn invoke(
        &self,
        process: impl Into<Process>,
        f: F,
        node: Option<&str>,
        value: Value,
    ) -> Pending {
        let process = process.into();
        self.log(process, OpType::Invoke, f, node, value.clone());
        Pending {
            writer: self.clone(),
            process,
            f,
            node: node.map(str::to_owned),
            value,
            done: false,
        }
    }

    /// Logs an observation, a lone `ok` without invoke: `recv`, `drop`, `resync`,
    /// `presence`, `user`.
    pub fn observe(&self, process: impl Into<Process>, f: F, node: Option<&str>, value: Value) {
        self.log(process.into(), OpType::Ok, f, node, value);
    }

    /// Logs the first operation of a client process: the user it acts as.
    pub fn user(&self, process: u32, user: Id) {
        self.observe(process, F::User, None, serde_json::json!({ "user": user }));
    }

    /// Logs a fault's `start` or `heal`: process `nemesis`, type `info`, value
    /// `{fault, phase, target?}`; `target` (e.g. `n1`) also goes to `node`.
    pub fn nemesis(&self, fault: &str, phase: Phase, target: Option<&str>) {
        let mut value = serde_json::json!({ "fault": fault, "phase": phase });
        if let Some(t) = target {
            value["target"] = Value::from(t);
        }
        self.log(Process::Nemesis, OpType::Info, F::Nemesis, target, value);
    }

    /// Flushes and returns the first I/O error any write met, if one did.
    pub fn finish(&self) -> io::Result<()> {
        let mut state = self.inner.state.lock();
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        state.out.flush()
    }
}

/// Whether a nemesis operation begins or ends a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The fault begins (counted as a fault injected).
    Start,
    /// The fault ends.
    Heal,
}

/// An invoked operation waiting for its completion. Completing merges the fields of
/// `extra` (a JSON object, or `null` for none) into the invoke's value. Dropping it
/// uncompleted logs `info` with `{"error": "abandoned"}` (outcome unknown), so a process
/// never has two operations outstanding.
#[must_use = "complete it with ok, fail or info"]
pub struct Pending {
    writer: HistoryWriter,
    process: Process,
    f: F,
    node: Option<String>,
    value: Value,
    done: bool,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("process", &self.process)
            .field("f", &self.f)
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The invoke's value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// It happened; `extra` holds the results (for `send`: `{id, seq}`).
    pub fn ok(self, extra: Value) -> Op {
        self.complete(OpType::Ok, extra)
    }

    /// It certainly did not happen; `extra` is usually `{error}`.
    pub fn fail(self, extra: Value) -> Op {
        self.complete(OpType::Fail, extra)
    }

    /// Its outcome is unknown; `extra` is usually `{error}`.
    pub fn info(self, extra: Value) -> Op {
        self.complete(OpType::Info, extra)
    }

    /// Completes with the given type (what [`ok`](Self::ok), [`fail`](Self::fail) and
    /// [`info`](Self::info) call); handy when the type is computed.
    pub fn complete(mut self, kind: OpType, extra: Value) -> Op {
        debug_assert_ne!(kind, OpType::Invoke, "a completion is ok, fail or info");
        self.done = true;
        let mut value = std::mem::take(&mut self.value);
        merge(&mut value, extra);
        self.writer
            .log(self.process, kind, self.f, self.node.as_deref(), value)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let mut value = std::mem::take(&mut self.value);
            merge(&mut value, serde_json::json!({ "error": "abandoned" }));
            self.writer.log(
                self.process,
                OpType::Info,
                self.f,
                self.node.as_deref(),
                value,
            );
        }
    }
}

/// Copies the fields of `extra` into `value` (both objects); a non-object `extra` other
/// than `null` is stored under `"result"`.
fn merge(value: &mut Value, extra: Value) {
    match (value, extra) {
        (_, Value::Null) => {}
        (Value::Object(v), Value::Object(e)) => v.extend(e),
        (Value::Object(v), other) => {
            v.insert("result".to_owned(), other);
        }
        (v, other) => *v = other,
    }
}

/// Why a history or stored file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    /// Line `line` (from 1) is not the JSON expected.
    #[error("{path}:{line}: {source}")]
    Parse {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
}

/// Reads JSON lines of `T` from `input` (blank lines skipped); `name` names the source in
/// errors, which carry the 1-based line number.
pub fn read_lines<T: serde::de::DeserializeOwned>(
    input: impl BufRead,
    name: &str,
) -> Result<Vec<T>, ReadError> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| ReadError::Io {
            path: name.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|source| ReadError::Parse {
                path: name.to_owned(),
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

fn read_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, ReadError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| ReadError::Io {
        path: name.clone(),
        source,
    })?;
    read_lines(BufReader::new(file), &name)
}

/// Reads a history file written by [`HistoryWriter`].
pub fn read_history(path: &Path) -> Result<Vec<Op>, ReadError> {
    read_file(path)
}

/// One message a shard stored, read after the run settled. JSON:
/// `{"channel":"1","id":"2","seq":3,"author":"4","client_msg_id":"p3-17"}` (IDs as
/// decimal strings; `client_msg_id` may be `null` or absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRow {
    /// The channel it is in.
    pub channel: Id,
    /// The message's id.
    pub id: Id,
    /// Position in the channel, from 1.
    pub seq: u64,
    /// The user who sent it.
    pub author: Id,
    /// The sender's idempotency key, if it gave one.
    #[serde(default)]
    pub client_msg_id: Option<String>,
}

/// Reads a stored-rows file ([`StoredRow`] per line).
pub fn read_stored(path: &Path) -> Result<Vec<StoredRow>, ReadError> {
    read_file(path)
}

/// Writes `rows` as JSON lines to `path` (created or truncated).
pub fn write_stored(path: &Path, rows: &[StoredRow]) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
