-- Embedded store schema, version 4: the owner term in force per channel becomes
-- {generation, term}, as on the shards (migrations/shard/0003_owner_generations.sql). The
-- embedded node fences nothing, so the table stays empty there.
ALTER TABLE channel_terms ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
