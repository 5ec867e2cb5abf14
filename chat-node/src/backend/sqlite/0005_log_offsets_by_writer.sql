-- Embedded store schema, version 5: the log's offsets are assigned by its writer (one
-- above the highest offset in the log or in its consumers' positions, so they never go
-- back, even once every record was trimmed) instead of by AUTOINCREMENT, and the log has
-- no (topic, offset) index (one topic in practice; a read is a range of offsets, the row
-- ID). A one-record append wrote three pages to the WAL (the row, its index entry and
-- sqlite_sequence's row); now it writes one. The records still in the log keep their
-- offsets.
CREATE TABLE log_v5 (
    "offset" INTEGER PRIMARY KEY,
    topic    TEXT    NOT NULL,
    key      INTEGER NOT NULL,
    payload  BLOB    NOT NULL
);
INSERT INTO log_v5 ("offset", topic, key, payload)
    SELECT "offset", topic, key, payload FROM log ORDER BY "offset";
DROP TABLE log;
ALTER TABLE log_v5 RENAME TO log;
