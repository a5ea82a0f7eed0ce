-- How far the roll-ups (0004) have caught up with the raw events, by ingestion time.
-- Every event ingested before `cutoff` (less a safety margin for inserts still in flight)
-- is in rollup_1m and rollup_1h. A pass re-aggregates the minute buckets that rows with
-- ingested_at in [cutoff - margin, target) fall in, a bounded number per refresh, in
-- bucket order: `next_bucket` is the first minute of the pass not yet done. When the pass
-- ends, cutoff becomes target. A row is written only after the buckets it claims are
-- stored, so a crash repeats work (recomputing a bucket is idempotent) and loses none.
-- No row yet means cutoff 1970: the first passes re-aggregate every stored event, which
-- also fills in what the old 15-minute look-back missed. The highest `run` is current.
CREATE TABLE IF NOT EXISTS {db}.rollup_progress
(
    id UInt8,
    run UInt64,
    cutoff DateTime64(3, 'UTC'),
    target DateTime64(3, 'UTC'),
    next_bucket DateTime('UTC'),
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(run)
ORDER BY id
TTL toDateTime(updated_at) + INTERVAL {aggregate_retention_days} DAY
