//! Tests of the history types, the writer and the readers.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;

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
