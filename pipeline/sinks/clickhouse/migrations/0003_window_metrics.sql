-- Final window metrics from stage 2 (the inferwatch.metrics topic), one row per
-- (series, window); a correction arrives with a higher version and replaces the row.
-- Read with FINAL to see only the newest version.
CREATE TABLE IF NOT EXISTS {db}.window_metrics
(
    series_key String,
    labels Map(String, String),
    model LowCardinality(String) MATERIALIZED labels['model'],
    model_version LowCardinality(String) MATERIALIZED labels['model_version'],
    operation LowCardinality(String) MATERIALIZED labels['operation'],
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    version UInt32,
    requests UInt64,
    request_rate_per_s Float64,
    errors UInt64,
    errors_by_type Map(String, UInt64),
    error_rate Float64,
    latency_p50_ms Nullable(Float64),
    latency_p90_ms Nullable(Float64),
    latency_p95_ms Nullable(Float64),
    latency_p99_ms Nullable(Float64),
    latency_max_ms Nullable(Float64),
    ttft_p50_ms Nullable(Float64),
    ttft_p90_ms Nullable(Float64),
    ttft_p99_ms Nullable(Float64),
    queue_wait_p50_ms Nullable(Float64),
    queue_wait_p99_ms Nullable(Float64),
    tpot_p50_ms Nullable(Float64),
    tpot_p99_ms Nullable(Float64),
    input_tokens_sum UInt64,
    input_tokens_p50 Nullable(Float64),
    input_tokens_p99 Nullable(Float64),
    output_tokens_sum UInt64,
    output_tokens_p50 Nullable(Float64),
    output_tokens_p99 Nullable(Float64),
    output_tokens_per_s Float64,
    cache_hit_rate Nullable(Float64),
    cost_usd_sum Float64,
    cost_per_request_usd Nullable(Float64),
    slo_latency_ms Nullable(Float64),
    slo_compliance Nullable(Float64),
    feedback_mean Nullable(Float64),
    feedback_count UInt64,
    feature_usage Map(String, Map(String, UInt64)),
    late_events UInt64,
    sketch_relative_accuracy Float64,
    emitted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (series_key, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_retention_days} DAY
