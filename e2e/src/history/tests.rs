//! Tests of the history types, the writer and the readers.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::*;

/// A sink the test can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn op_has_the_documented_json_shape() {
    let line = r#"{"index":12,"time_ms":1532,"process":3,"type":"invoke","f":"send","node":"n2","value":{"channel":"123","client_msg_id":"p3-17"}}"#;
    let op: Op = serde_json::from_str(line).unwrap();
    assert_eq!(op.process, Process::Client(3));
    assert_eq!(op.kind, OpType::Invoke);
    assert_eq!(op.f, F::Send);
    assert_eq!(serde_json::to_string(&op).unwrap(), line);
    let nemesis = r#"{"index":0,"time_ms":0,"process":"nemesis","type":"info","f":"nemesis","node":null,"value":{"fault":"pause","phase":"start"}}"#;
    let op: Op = serde_json::from_str(nemesis).unwrap();
    assert_eq!(op.process, Process::Nemesis);
    assert_eq!(serde_json::to_string(&op).unwrap(), nemesis);
    assert!(serde_json::from_str::<Process>(r#""n1""#).is_err());
}

#[test]
fn writer_assigns_indexes_and_completes_pending_operations() {
    let sink = Shared::default();
    let writer = HistoryWriter::to_writer(Box::new(sink.clone()));
    writer.user(3, Id(44));
    let send = writer.invoke(
        3,
        F::Send,
        Some("n2"),
        json!({"channel": "1", "client_msg_id": "p3-0"}),
    );
    writer.nemesis("pause", Phase::Start, Some("n1"));
    let ok = send.ok(json!({"id": "9", "seq": 1}));
    assert_eq!(
        ok.value,
        json!({"channel": "1", "client_msg_id": "p3-0", "id": "9", "seq": 1})
    );
    drop(writer.invoke(3, F::Join, Some("n2"), json!({"channel": "1"})));
    writer.finish().unwrap();
    let text = String::from_utf8(sink.0.lock().clone()).unwrap();
    let ops: Vec<Op> = read_lines(text.as_bytes(), "mem").unwrap();
    let summary: Vec<(u64, OpType, F)> = ops.iter().map(|o| (o.index, o.kind, o.f)).collect();
    assert_eq!(
        summary,
        [
            (0, OpType::Ok, F::User),
            (1, OpType::Invoke, F::Send),
            (2, OpType::Info, F::Nemesis),
            (3, OpType::Ok, F::Send),
            (4, OpType::Invoke, F::Join),
            (5, OpType::Info, F::Join),
        ]
    );
    assert_eq!(ops[0].value, json!({"user": "44"}));
    assert_eq!(
        ops[2].value,
        json!({"fault": "pause", "phase": "start", "target": "n1"})
    );
    assert_eq!(ops[5].value["error"], "abandoned");
    assert!(ops.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
}

#[test]
fn stored_rows_round_trip_and_errors_name_the_line() {
    let dir = std::env::temp_dir().join(format!("parley-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stored.jsonl");
    let rows = vec![StoredRow {
        channel: Id(1),
        id: Id(2),
        seq: 3,
        author: Id(4),
        client_msg_id: Some("p3-17".into()),
    }];
    write_stored(&path, &rows).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"channel\":\"1\",\"id\":\"2\",\"seq\":3,\"author\":\"4\",\"client_msg_id\":\"p3-17\"}\n"
    );
    assert_eq!(read_stored(&path).unwrap(), rows);
    std::fs::write(&path, "\n{\"channel\":\"1\"}\n").unwrap();
    let err = read_stored(&path).unwrap_err().to_string();
    assert!(err.contains(":2:"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Builds a history by hand: indexes 0, 1, 2, ...; `time_ms` = 10 × index; process `p`
/// acts as user `100 + p`.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
}

impl H {
    fn op(&mut self, process: Process, kind: OpType, f: F, value: Value) -> u64 {
        let index = self.ops.len() as u64;
        self.ops.push(Op {
            index,
            time_ms: index * 10,
            process,
            kind,
            f,
            node: Some("n1".into()),
            value,
        });
        index
    }
    fn client(&mut self, p: u32, kind: OpType, f: F, value: Value) -> u64 {
        self.op(Process::Client(p), kind, f, value)
    }
    fn user(&mut self, p: u32) {
        self.client(
            p,
            OpType::Ok,
            F::User,
            json!({"user": (100 + p).to_string()}),
        );
    }
    fn connect(&mut self, p: u32) {
        self.client(p, OpType::Invoke, F::Connect, json!({}));
        self.client(
            p,
            OpType::Ok,
            F::Connect,
            json!({"session": "s", "node": "n1"}),
        );
    }
    fn join(&mut self, p: u32, channel: u64) {
        self.client(
            p,
            OpType::Invoke,
            F::Join,
            json!({"channel": channel.to_string()}),
        );
        self.client(
            p,
            OpType::Ok,
            F::Join,
            json!({"channel": channel.to_string()}),
        );
    }
    fn leave(&mut self, p: u32, channel: u64) {
        self.client(
            p,
            OpType::Invoke,
            F::Leave,
            json!({"channel": channel.to_string()}),
        );
        self.client(
            p,
            OpType::Ok,
            F::Leave,
            json!({"channel": channel.to_string()}),
        );
    }
    fn send_invoke(&mut self, p: u32, channel: u64, cmid: &str) {
        let v = json!({"channel": channel.to_string(), "client_msg_id": cmid});
        self.client(p, OpType::Invoke, F::Send, v);
    }
    fn send_done(&mut self, p: u32, channel: u64, cmid: &str, kind: OpType, extra: Value) {
        let mut v = json!({"channel": channel.to_string(), "client_msg_id": cmid});
        super::merge(&mut v, extra);
        self.client(p, kind, F::Send, v);
    }
    fn send_ok(&mut self, p: u32, channel: u64, cmid: &str, id: u64, seq: u64) {
        self.send_invoke(p, channel, cmid);
        let extra = json!({"id": id.to_string(), "seq": seq});
        self.send_done(p, channel, cmid, OpType::Ok, extra);
    }
    fn send_err(&mut self, p: u32, channel: u64, cmid: &str, kind: OpType, error: &str) {
        self.send_invoke(p, channel, cmid);
        self.send_done(p, channel, cmid, kind, json!({"error": error}));
    }
    fn recv(&mut self, p: u32, channel: u64, id: u64, seq: u64, via: &str) {
        let v =
            json!({"channel": channel.to_string(), "id": id.to_string(), "seq": seq, "via": via});
        self.client(p, OpType::Ok, F::Recv, v);
    }
    fn nemesis(&mut self, phase: &str) {
        let v = json!({"fault": "pause", "phase": phase, "target": "n1"});
        self.op(Process::Nemesis, OpType::Info, F::Nemesis, v);
    }
    fn presence(&mut self, observed: &str, converged_after_ms: Option<u64>) {
        let v = json!({"observer": 0, "expected": {"1": "online"}, "observed": {"1": observed},
                       "converged_after_ms": converged_after_ms, "bound_ms": 3000});
        self.client(0, OpType::Ok, F::Presence, v);
    }
}

fn row(id: u64, seq: u64, author: u64, cmid: &str) -> StoredRow {
    row_in(1, id, seq, author, cmid)
}

fn row_in(channel: u64, id: u64, seq: u64, author: u64, cmid: &str) -> StoredRow {
    StoredRow {
        channel: Id(channel),
        id: Id(id),
        seq,
        author: Id(author),
        client_msg_id: Some(cmid.to_owned()),
    }
}

/// A valid run on channel 1 by processes 0, 1, 2 (users 100, 101, 102) with its near
/// misses: an `info` send stored once, one not stored, a `fail` not stored, a receipt by
/// process 2 of a message sent while its leave was outstanding, receipts via `resume` and
/// `history` after a reconnect, a send never completed.
fn base() -> (H, Vec<StoredRow>) {
    let mut h = H::default();
    h.nemesis("start");
    for p in 0..3 {
        h.user(p);
        h.connect(p);
        h.join(p, 1);
    }
    h.send_ok(0, 1, "p0-0", 1001, 1);
    h.send_ok(1, 1, "p1-0", 1002, 2);
    for p in 0..3 {
        h.recv(p, 1, 1001, 1, "live");
        h.recv(p, 1, 1002, 2, "live");
    }
    h.send_err(2, 1, "p2-0", OpType::Info, "timeout");
    h.recv(0, 1, 1003, 3, "live");
    h.recv(1, 1, 1003, 3, "live");
    h.send_err(2, 1, "p2-1", OpType::Info, "unavailable");
    h.send_err(0, 1, "p0-1", OpType::Fail, "forbidden");
    h.client(2, OpType::Invoke, F::Leave, json!({"channel": "1"}));
    h.send_ok(0, 1, "p0-2", 1004, 4);
    h.recv(2, 1, 1004, 4, "live");
    h.client(2, OpType::Ok, F::Leave, json!({"channel": "1"}));
    h.nemesis("heal");
    h.send_ok(1, 1, "p1-1", 1005, 5);
    h.recv(0, 1, 1004, 4, "live");
    h.recv(0, 1, 1005, 5, "live");
    h.client(1, OpType::Ok, F::Drop, json!({}));
    h.client(
        1,
        OpType::Invoke,
        F::Connect,
        json!({"resume_after": "1003"}),
    );
    h.client(
        1,
        OpType::Ok,
        F::Connect,
        json!({"session": "s2", "node": "n2"}),
    );
    h.recv(1, 1, 1004, 4, "resume");
    h.recv(1, 1, 1005, 5, "history");
    h.presence("online", Some(500));
    h.send_invoke(1, 1, "p1-2");
    let stored = vec![
        row(1001, 1, 100, "p0-0"),
        row(1002, 2, 101, "p1-0"),
        row(1003, 3, 102, "p2-0"),
        row(1004, 4, 100, "p0-2"),
        row(1005, 5, 101, "p1-1"),
    ];
    (h, stored)
}

fn run(h: &H, stored: &[StoredRow]) -> Report {
    check(&h.ops, stored, CheckOptions::default()).unwrap()
}

/// Asserts that exactly these kinds were found, this many times each.
fn assert_found(report: &Report, expected: &[(Anomaly, u64)]) {
    let found: Vec<(Anomaly, u64)> = report
        .anomalies
        .iter()
        .filter(|(_, f)| f.count > 0)
        .map(|(k, f)| (*k, f.count))
        .collect();
    assert_eq!(found, expected, "{report}");
}

#[test]
fn a_valid_run_has_no_anomalies_and_its_figures() {
    let (h, stored) = base();
    let r = run(&h, &stored);
    assert!(r.is_valid(), "{r}");
    assert_eq!(r.operation_count(), h.ops.len() as u64);
    assert_eq!(r.operations[&F::Send][&OpType::Invoke], 8);
    assert_eq!(r.operations[&F::Send][&OpType::Info], 2);
    assert_eq!(r.pending, 1);
    assert_eq!(r.faults, BTreeMap::from([("pause".to_owned(), 1)]));
    let s = r.sends;
    assert_eq!(
        (
            s.invoked,
            s.acknowledged,
            s.failed,
            s.unknown,
            s.unknown_stored
        ),
        (8, 4, 1, 3, 1)
    );
    assert_eq!((r.stored, r.channels), (5, 1));
    let via: Vec<(&str, u64)> = r.deliveries.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(via, [("history", 1), ("live", 11), ("resume", 1)]);
    assert_eq!(r.anomalies.len(), Anomaly::ALL.len());
    let text = r.to_string();
    assert!(text.contains("anomalies: 0"), "{text}");
    assert!(text.contains("faults: 1 (pause 1)"), "{text}");
    assert!(text.ends_with("valid"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["anomalies"]["ack-mismatch"]["count"], 0);
    assert_eq!(json["operations"]["send"]["invoke"], 8);
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn lost_acknowledged_message() {
    let (h, mut stored) = base();
    stored.retain(|r| r.id != Id(1005));
    let r = run(&h, &stored);
    // Its two receipts are of a message the shards do not have.
    assert_found(&r, &[(Anomaly::Lost, 1), (Anomaly::RecvMismatch, 2)]);
    let e = &r.anomalies[&Anomaly::Lost].examples[0];
    assert_eq!(
        (e.id, e.seq, e.process),
        (Some(Id(1005)), Some(5), Some(Process::Client(1)))
    );
    assert!(!r.is_valid());
    assert!(r.to_string().ends_with("INVALID"));
}

#[test]
fn duplicated_by_id_and_by_client_msg_id() {
    let (h, mut stored) = base();
    stored.push(row(1001, 1, 100, "p0-0"));
    assert_found(&run(&h, &stored), &[(Anomaly::Duplicated, 1)]);
    // The `info` send stored twice (once is fine, see the base).
    let (h, mut stored) = base();
    stored.push(row(1006, 6, 102, "p2-0"));
    assert_found(&run(&h, &stored), &[(Anomaly::Duplicated, 1)]);
}

#[test]
fn ack_mismatch() {
    let (mut h, stored) = base();
    let ok = h
        .ops
        .iter_mut()
        .find(|o| o.kind == OpType::Ok && o.value["client_msg_id"] == "p1-0")
        .unwrap();
    ok.value["seq"] = json!(7);
    let r = run(&h, &stored);
    assert_found(&r, &[(Anomaly::AckMismatch, 1)]);
    assert!(
        r.to_string().contains("stored as channel 1 id 1002 seq 2"),
        "{r}"
    );
}

/// One sender, no members: only the stored side matters.
fn sends_only(acks: &[(u64, u64, u64)]) -> (H, Vec<StoredRow>) {
    let mut h = H::default();
    h.user(0);
    let mut stored = Vec::new();
    for (n, &(channel, id, seq)) in acks.iter().enumerate() {
        let cmid = format!("p0-{n}");
        h.send_ok(0, channel, &cmid, id, seq);
        stored.push(row_in(channel, id, seq, 100, &cmid));
    }
    (h, stored)
}

#[test]
fn seq_gap_repeat_and_id_order() {
    let (h, stored) = sends_only(&[(1, 1, 1), (1, 2, 2), (1, 3, 4), (1, 4, 7)]);
    let r = run(&h, &stored);
    assert_found(&r, &[(Anomaly::SeqGap, 2)]);
    let details: Vec<&str> = r.anomalies[&Anomaly::SeqGap]
        .examples
        .iter()
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(details, ["seqs 3..=3 missing", "seqs 5..=6 missing"]);
    let (h, stored) = sends_only(&[(1, 1, 2), (1, 2, 3)]);
    assert_found(&run(&h, &stored), &[(Anomaly::SeqGap, 1)]);
    let (h, stored) = sends_only(&[(1, 1, 1), (1, 2, 2), (1, 3, 2)]);
    assert_found(&run(&h, &stored), &[(Anomaly::SeqRepeat, 1)]);
    let (h, stored) = sends_only(&[(1, 5, 1), (1, 4, 2), (1, 6, 3)]);
    assert_found(&run(&h, &stored), &[(Anomaly::SeqIdOrder, 1)]);
    // Seqs restart per channel.
    let (h, stored) = sends_only(&[(1, 1, 1), (2, 2, 1), (1, 3, 2)]);
    assert_found(&run(&h, &stored), &[]);
}

#[test]
fn id_not_unique() {
    let (h, stored) = sends_only(&[(1, 7, 1), (2, 7, 1)]);
    assert_found(&run(&h, &stored), &[(Anomaly::IdNotUnique, 1)]);
}

#[test]
fn failed_send_stored() {
    let (h, mut stored) = base();
    stored.push(row(1006, 6, 100, "p0-1"));
    assert_found(&run(&h, &stored), &[(Anomaly::FailedStored, 1)]);
}

#[test]
fn unexpected_stored() {
    let (h, mut stored) = base();
    stored.push(row(1006, 6, 999, "x-0"));
    assert_found(&run(&h, &stored), &[(Anomaly::UnexpectedStored, 1)]);
    // The never-completed send `p1-2` may be stored: it is explained.
    let (h, mut stored) = base();
    stored.push(row(1006, 6, 101, "p1-2"));
    assert_found(&run(&h, &stored), &[]);
}

#[test]
fn undelivered_to_a_member() {
    let (mut h, stored) = base();
    h.ops.retain(|o| {
        !(o.f == F::Recv && o.process == Process::Client(1) && o.value["id"] == "1001")
    });
    let r = run(&h, &stored);
    assert_found(&r, &[(Anomaly::Undelivered, 1)]);
    let e = &r.anomalies[&Anomaly::Undelivered].examples[0];
    assert_eq!(
        (e.process, e.id),
        (Some(Process::Client(1)), Some(Id(1001)))
    );
}

#[test]
fn undelivered_after_a_rejoin_even_if_it_leaves_later() {
    let (mut h, mut stored) = base();
    h.join(2, 1);
    h.send_ok(0, 1, "p0-3", 1006, 6);
    stored.push(row(1006, 6, 100, "p0-3"));
    h.recv(0, 1, 1006, 6, "live");
    h.recv(1, 1, 1006, 6, "live");
    h.leave(2, 1);
    let r = run(&h, &stored);
    assert_found(&r, &[(Anomaly::Undelivered, 1)]);
    let e = &r.anomalies[&Anomaly::Undelivered].examples[0];
    assert_eq!(e.process, Some(Process::Client(2)));
    assert!(
        e.detail.ends_with("it left at op 57, 30 ms after the ok"),
        "{e}"
    );
    // A leave invoked within the grace after the ok excuses it.
    let opts = CheckOptions {
        leave_grace_ms: 30,
        ..CheckOptions::default()
    };
    assert!(check(&h.ops, &stored, opts).unwrap().is_valid());
}

#[test]
fn a_retried_send_is_one_message_since_its_first_attempt() {
    // Process 2 left before the first attempt (info, yet stored), rejoined, and the retry
    // with the same client_msg_id was acknowledged with the stored message: process 2 was
    // not a member throughout, so missing it is no anomaly.
    let (mut h, mut stored) = base();
    h.send_err(0, 1, "p0-3", OpType::Info, "unavailable");
    stored.push(row(1006, 6, 100, "p0-3"));
    h.join(2, 1);
    h.send_ok(0, 1, "p0-3", 1006, 6);
    h.recv(0, 1, 1006, 6, "live");
    h.recv(1, 1, 1006, 6, "live");
    let r = run(&h, &stored);
    assert!(r.is_valid(), "{r}");
}

#[test]
fn non_member_delivery() {
    // Process 2 left (ok) before 1005 was sent, and did not join again.
    let (mut h, stored) = base();
    h.recv(2, 1, 1005, 5, "live");
    assert_found(&run(&h, &stored), &[(Anomaly::NonMemberDelivery, 1)]);
    // A process that never joined.
    let (mut h, stored) = base();
    h.user(3);
    h.recv(3, 1, 1001, 1, "history");
    assert_found(&run(&h, &stored), &[(Anomaly::NonMemberDelivery, 1)]);
    // Joined again (even if that join's outcome is unknown): history may show it.
    let (mut h, stored) = base();
    h.client(2, OpType::Invoke, F::Join, json!({"channel": "1"}));
    h.client(
        2,
        OpType::Info,
        F::Join,
        json!({"channel": "1", "error": "timeout"}),
    );
    h.recv(2, 1, 1005, 5, "history");
    assert_found(&run(&h, &stored), &[]);
    // A failed join does not count.
    let (mut h, stored) = base();
    h.client(2, OpType::Invoke, F::Join, json!({"channel": "1"}));
    h.client(
        2,
        OpType::Fail,
        F::Join,
        json!({"channel": "1", "error": "forbidden"}),
    );
    h.recv(2, 1, 1005, 5, "history");
    assert_found(&run(&h, &stored), &[(Anomaly::NonMemberDelivery, 1)]);
}

#[test]
fn out_of_order_live_delivery() {
    let (mut h, stored) = base();
    h.recv(0, 1, 1002, 2, "live");
    let r = run(&h, &stored);
    assert_found(&r, &[(Anomaly::OutOfOrderDelivery, 1)]);
    assert_eq!(
        r.anomalies[&Anomaly::OutOfOrderDelivery].examples[0].detail,
        "live seq 2 after live seq 5"
    );
    // Replays, history and a new connection start no order to break; a repeat is no
    // decrease.
    let (mut h, stored) = base();
    h.recv(0, 1, 1002, 2, "resume");
    h.recv(0, 1, 1005, 5, "live");
    h.recv(1, 1, 1001, 1, "live");
    assert_found(&run(&h, &stored), &[]);
}

#[test]
fn receipt_of_a_message_not_stored_so() {
    let (mut h, stored) = base();
    h.recv(0, 1, 9999, 2, "history");
    h.recv(1, 1, 1001, 3, "history");
    assert_found(&run(&h, &stored), &[(Anomaly::RecvMismatch, 2)]);
}

#[test]
fn presence_not_converged() {
    let (mut h, stored) = base();
    h.presence("online", Some(3500));
    h.presence("online", None);
    h.presence("offline", Some(10));
    h.presence("online", Some(3000));
    assert_found(&run(&h, &stored), &[(Anomaly::PresenceNotConverged, 3)]);
}

#[test]
fn examples_are_capped_but_all_counted() {
    let (h, stored) = sends_only(&(1..=8).map(|n| (1, n, 2 * n)).collect::<Vec<_>>());
    let r = check(
        &h.ops,
        &stored,
        CheckOptions {
            max_examples: 3,
            ..CheckOptions::default()
        },
    )
    .unwrap();
    let gaps = &r.anomalies[&Anomaly::SeqGap];
    assert_eq!((gaps.count, gaps.examples.len()), (8, 3));
}

#[test]
fn malformed_histories_are_errors() {
    let mut h = H::default();
    h.user(0);
    h.send_invoke(0, 1, "a");
    h.send_invoke(0, 1, "b");
    let err = check(&h.ops, &[], CheckOptions::default()).unwrap_err();
    assert_eq!(err.index, 2, "{err}");

    let mut h = H::default();
    h.user(0);
    h.client(0, OpType::Ok, F::Join, json!({"channel": "1"}));
    assert!(check(&h.ops, &[], CheckOptions::default()).is_err());

    let mut h = H::default();
    h.send_ok(0, 1, "a", 1, 1);
    let err = check(&h.ops, &[], CheckOptions::default()).unwrap_err();
    assert!(err.message.contains("user"), "{err}");

    let mut h = H::default();
    h.user(0);
    h.send_invoke(0, 1, "a");
    h.client(
        0,
        OpType::Ok,
        F::Send,
        json!({"channel": "1", "client_msg_id": "a"}),
    );
    let err = check(&h.ops, &[], CheckOptions::default()).unwrap_err();
    assert!(err.message.contains("missing field `id`"), "{err}");

    let mut h = H::default();
    h.user(0);
    h.ops[0].index = 5;
    h.user(1);
    assert!(check(&h.ops, &[], CheckOptions::default()).is_err());
}
