-- Where an event's cost came from (docs/pricing.md): 'given' when the producer sent
-- cost_usd, 'computed' when the pipeline priced it from the price table, '' when it has no
-- cost. The sink always writes the column; the DEFAULT only answers for rows stored before
-- this migration, when every stored cost was a given one. Adding a column is a metadata
-- change (old parts compute the default on read). Re-runnable.
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS cost_source LowCardinality(String)
    DEFAULT if(cost_usd IS NULL, '', 'given') AFTER cost_usd
