-- A message shard: the messages of the channels whose slot (hash(channel_id) mod 4096) the
-- shard map assigns here. Rows are written by the persisters in bulk with
-- ON CONFLICT (channel_id, id) DO NOTHING, so a batch can be written twice safely.
CREATE TABLE messages (
    channel_id    BIGINT  NOT NULL,
    id            BIGINT  NOT NULL,
    seq           BIGINT  NOT NULL,
    author_id     BIGINT  NOT NULL,
    text          TEXT    NOT NULL,
    client_msg_id TEXT,
    attachments   JSONB   NOT NULL DEFAULT '[]',
    reply_to      BIGINT,
    created_at    BIGINT  NOT NULL,
    moderated     BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (channel_id, id)
);
CREATE INDEX messages_by_id ON messages (id);
