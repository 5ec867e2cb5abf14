-- Directory database: users, channels, memberships, read markers, attachments and the
-- idempotency keys of sends. IDs are Snowflakes; *_at columns are milliseconds since the
-- Unix epoch (the same representation as the embedded store and the wire's IDs).
CREATE TABLE users (
    id            BIGINT PRIMARY KEY,
    username      TEXT   NOT NULL,
    username_key  TEXT   NOT NULL UNIQUE,
    display_name  TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE channels (
    id         BIGINT PRIMARY KEY,
    kind       TEXT   NOT NULL CHECK (kind IN ('group', 'dm')),
    name       TEXT,
    name_key   TEXT   UNIQUE,
    dm_key     TEXT   UNIQUE,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE members (
    channel_id BIGINT NOT NULL REFERENCES channels (id),
    user_id    BIGINT NOT NULL,
    joined_at  BIGINT NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, channel_id);

CREATE TABLE read_markers (
    user_id    BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    message_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, channel_id)
);

CREATE TABLE attachments (
    id           BIGINT PRIMARY KEY,
    owner_id     BIGINT NOT NULL,
    key          TEXT   NOT NULL,
    filename     TEXT   NOT NULL,
    content_type TEXT   NOT NULL,
    size         BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);

-- (author, client_msg_id) of every message that carried one, written by the persisters
-- with the message, so a repeated send is recognized on any node and after a failover.
CREATE TABLE idempotency_keys (
    author_id     BIGINT NOT NULL,
    client_msg_id TEXT   NOT NULL,
    message_id    BIGINT NOT NULL,
    channel_id    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (author_id, client_msg_id, message_id)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_at);
