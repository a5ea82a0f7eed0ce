-- event_id alone is the dedup key of raw events (design.md). 0001 sorted by
-- (model, model_version, timestamp, event_id) and partitioned by day, so the same event_id
-- re-sent with another timestamp or model was stored twice: ReplacingMergeTree collapses
-- only rows with the same sorting key, and only inside one partition. This rebuilds the
-- table with ORDER BY event_id and no partition key, so any two rows with one event_id
-- collapse, whatever their other fields.
--
-- Which copy is kept: the FIRST one stored. dedup_rank is larger for an earlier
-- ingested_at, and ReplacingMergeTree(dedup_rank) keeps the row with the largest rank
-- (ties, i.e. the same millisecond: the last inserted). Why first and not last: the row
-- that won once keeps winning, so a minute bucket that counted an event never has to be
-- found and recomputed when a later copy (another timestamp) arrives - the roll-ups
-- (pipeline/sinks/clickhouse/rollups.py) recompute only buckets that rows ingested since the last
-- refresh fall in, and those buckets see the kept copy through FINAL. A replay cannot
-- rewrite what was stored; a correction is a new event (or feedback), not a re-send.
-- Exact reads use FINAL (or count(DISTINCT event_id)); background merges drop the copies.
--
-- Time-range reads: rows are sorted by event_id, so the primary key no longer helps them.
-- Skip indexes do: minmax on timestamp and ingested_at (parts written by one insert, and
-- the size-tiered merges of similar-age parts, keep narrow ranges), bloom filter on model.
--
-- Crash-safe and re-runnable (the version is recorded only after the last statement):
-- a leftover events_0008 from an interrupted run is dropped and rebuilt from `events`;
-- EXCHANGE TABLES swaps atomically (it needs an Atomic database: the default of ClickHouse
-- since 20.10, and what chDB creates), so `events` is always either the old or the
-- complete new table. The rank column is added to the old table first because
-- CREATE TABLE ... AS copies its columns (and nothing here repeats 0001's column list).
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS dedup_rank UInt64
    MATERIALIZED bitNot(toUInt64(toUnixTimestamp64Milli(ingested_at)));

DROP TABLE IF EXISTS {db}.events_0008;

CREATE TABLE {db}.events_0008 AS {db}.events
ENGINE = ReplacingMergeTree(dedup_rank)
PARTITION BY tuple()
ORDER BY event_id
TTL toDateTime(timestamp) + INTERVAL {raw_retention_days} DAY;

ALTER TABLE {db}.events_0008
    ADD INDEX IF NOT EXISTS timestamp_minmax timestamp TYPE minmax GRANULARITY 1;

ALTER TABLE {db}.events_0008
    ADD INDEX IF NOT EXISTS ingested_at_minmax ingested_at TYPE minmax GRANULARITY 1;

ALTER TABLE {db}.events_0008
    ADD INDEX IF NOT EXISTS model_bloom model TYPE bloom_filter(0.01) GRANULARITY 4;

-- SELECT * leaves out the MATERIALIZED dedup_rank; the copy recomputes it from the
-- preserved ingested_at, so the first-stored copy stays the kept one.
INSERT INTO {db}.events_0008 SELECT * FROM {db}.events;

EXCHANGE TABLES {db}.events AND {db}.events_0008;

DROP TABLE {db}.events_0008
