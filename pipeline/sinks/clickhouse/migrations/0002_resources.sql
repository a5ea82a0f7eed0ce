-- Resource samples of model-server hosts (CPU, memory, GPU, queue, KV cache).
CREATE TABLE IF NOT EXISTS {db}.resources
(
    timestamp DateTime64(3, 'UTC'),
    host LowCardinality(String),
    server LowCardinality(String),
    model LowCardinality(String),
    cpu_util Nullable(Float64),
    memory_util Nullable(Float64),
    memory_bytes Nullable(UInt64),
    gpu_util Nullable(Float64),
    gpu_memory_util Nullable(Float64),
    kv_cache_util Nullable(Float64),
    queue_length Nullable(UInt32),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (host, server, timestamp)
TTL toDateTime(timestamp) + INTERVAL {raw_retention_days} DAY
