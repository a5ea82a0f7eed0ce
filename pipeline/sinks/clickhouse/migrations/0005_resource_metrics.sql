-- Resource metrics per host, model server and window (ResourceMetrics on inferwatch.metrics).
CREATE TABLE IF NOT EXISTS {db}.resource_metrics
(
    host LowCardinality(String),
    server LowCardinality(String),
    model LowCardinality(String),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    version UInt32,
    samples UInt64,
    cpu_util_mean Nullable(Float64),
    cpu_util_max Nullable(Float64),
    memory_util_mean Nullable(Float64),
    memory_util_max Nullable(Float64),
    gpu_util_mean Nullable(Float64),
    gpu_util_max Nullable(Float64),
    kv_cache_util_mean Nullable(Float64),
    kv_cache_util_max Nullable(Float64),
    queue_length_mean Nullable(Float64),
    queue_length_max Nullable(Float64),
    emitted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (host, server, model, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_retention_days} DAY
