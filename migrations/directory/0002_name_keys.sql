-- Names are compared by Unicode NFC + full case folding (chat-node's text::name_key), and a
-- username that looks like a taken one (its UTS #39 skeleton, text::confusable_skeleton) is
-- refused. `chat-node migrate` recomputes username_key and name_key of every existing row
-- and fills username_skeleton in the same transaction as this file (SQL cannot compute
-- them); it stops, naming the rows, when two existing names now have one key. An existing
-- user whose skeleton an older user holds keeps NULL there (UNIQUE allows many NULLs).
ALTER TABLE users ADD COLUMN username_skeleton TEXT;
ALTER TABLE users ADD CONSTRAINT users_username_skeleton_key UNIQUE (username_skeleton);
