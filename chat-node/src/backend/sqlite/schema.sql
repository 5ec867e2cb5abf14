-- Embedded store schema, version 1. IDs are Snowflakes (63 bits, so they fit INTEGER);
-- timestamps are milliseconds since the Unix epoch.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL,
    username_key  TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE channels (
    id         INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN ('group', 'dm')),
    name       TEXT,
    name_key   TEXT    UNIQUE,
    dm_key     TEXT    UNIQUE,
    created_by INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE members (
    channel_id INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    joined_at  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id, channel_id);

CREATE TABLE messages (
    channel_id    INTEGER NOT NULL,
    id            INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    author_id     INTEGER NOT NULL,
    text          TEXT    NOT NULL,
    client_msg_id TEXT,
    attachments   TEXT    NOT NULL DEFAULT '[]',
    reply_to      INTEGER,
    created_at    INTEGER NOT NULL,
    moderated     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, id)
) WITHOUT ROWID;
CREATE INDEX messages_by_id ON messages (id);
CREATE INDEX messages_by_client_id ON messages (author_id, client_msg_id) WHERE client_msg_id IS NOT NULL;

CREATE TABLE read_markers (
    user_id    INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel_id)
) WITHOUT ROWID;

CREATE TABLE attachments (
    id           INTEGER PRIMARY KEY,
    owner_id     INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    filename     TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);

-- The embedded durable log (what Kafka is in distributed mode).
CREATE TABLE log (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT,
    topic    TEXT    NOT NULL,
    key      INTEGER NOT NULL,
    payload  BLOB    NOT NULL
);
CREATE INDEX log_by_topic ON log (topic, "offset");

CREATE TABLE log_offsets (
    topic    TEXT    NOT NULL,
    grp      TEXT    NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY (topic, grp)
) WITHOUT ROWID;
