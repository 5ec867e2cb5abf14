-- Embedded store schema, version 3: the owner term in force per channel, as the persister
-- last raised it (docs/reliability.md, fencing). The embedded node fences nothing (one
-- process is the only writer), so it stays empty there; the table exists so both stores
-- answer the same calls.
CREATE TABLE channel_terms (
    channel_id INTEGER PRIMARY KEY,
    term       INTEGER NOT NULL
);
