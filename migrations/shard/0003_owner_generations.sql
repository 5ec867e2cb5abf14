-- The owner term in force per channel becomes {generation, term} (docs/reliability.md,
-- fencing): a fence puts its owner's term in force only if its reserve's generation is above
-- the one in force, so a take-over that lost the race and appended its fence late deposes
-- nobody. Rows of the persisters before this version read as generation 0. A persister
-- replaces a row only by a larger (generation, term), in the same transaction as the batch's
-- messages of the channel.
ALTER TABLE channel_terms ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
