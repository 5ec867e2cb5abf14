-- Embedded store schema, version 2: names are compared by Unicode NFC + full case folding
-- (chat-node's text::name_key) and a username that looks like a taken one (UTS #39
-- skeleton, text::confusable_skeleton) is refused. The node recomputes username_key and
-- name_key of every existing row and fills username_skeleton in the same transaction as
-- this file (SQL cannot compute them); it refuses to start when two existing names now
-- have one key. An existing user whose skeleton an older user holds keeps NULL there.
ALTER TABLE users ADD COLUMN username_skeleton TEXT;
CREATE UNIQUE INDEX users_by_skeleton ON users (username_skeleton);
