-- Long-range roll-ups fed from the raw events, with mergeable DDSketch states
-- (quantilesDD, 1% relative error) so percentiles over hours or days stay correct:
-- merge the states (quantilesDDMerge), never average percentiles.
-- The sink recomputes recent minutes from `events FINAL` and recent hours from
-- rollup_1m on a timer; ReplacingMergeTree on the bucket key makes a recompute replace
-- the row instead of adding to it, so a replayed or late event is never counted twice.
CREATE TABLE IF NOT EXISTS {db}.rollup_1m
(
    bucket DateTime('UTC'),
    model LowCardinality(String),
    model_version LowCardinality(String),
    operation LowCardinality(String),
    tenant LowCardinality(String),
    requests UInt64,
    errors UInt64,
    cache_hits UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cost_usd Float64,
    latency_ms AggregateFunction(quantilesDD(0.01, 0.5, 0.9, 0.95, 0.99), Float64),
    ttft_ms AggregateFunction(quantilesDD(0.01, 0.5, 0.9, 0.99), Nullable(Float64)),
    output_tokens_q AggregateFunction(quantilesDD(0.01, 0.5, 0.99), Nullable(Float64)),
    computed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, model, model_version, operation, tenant)
TTL bucket + INTERVAL {aggregate_retention_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.rollup_1h AS {db}.rollup_1m
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, model, model_version, operation, tenant)
TTL bucket + INTERVAL {aggregate_retention_days} DAY
