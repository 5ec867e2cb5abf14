-- The owner term in force per channel of this shard: the highest fence record of the
-- channel the persisters have passed (docs/reliability.md, fencing). A persister raises it
-- (GREATEST, never lower) in the same transaction as the batch's messages of the channel,
-- and drops a message whose term is below it: a fenced-out owner's write.
CREATE TABLE channel_terms (
    channel_id BIGINT PRIMARY KEY,
    term       BIGINT NOT NULL
);
