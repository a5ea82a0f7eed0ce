-- Raw inference events, one row per event_id.
-- Effectively-once: the sink is at-least-once (offsets are committed after the insert),
-- so a crash between insert and commit re-delivers a batch. Exact reads use FINAL (or
-- count(DISTINCT event_id)); background merges remove the copies on disk.
-- The key below is superseded by 0008_events_by_event_id: this key collapsed only copies
-- with the same model, version and timestamp; 0008 rebuilds the table with ORDER BY
-- event_id (no partition key), keeping the first copy stored of each event_id.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id String,
    timestamp DateTime64(3, 'UTC'),
    schema_version UInt16,
    request_id String,
    trace_id String,
    span_id String,
    service LowCardinality(String),
    environment LowCardinality(String),
    tenant LowCardinality(String),
    user String,
    region LowCardinality(String),
    model LowCardinality(String),
    model_version LowCardinality(String),
    provider LowCardinality(String),
    operation LowCardinality(String),
    status LowCardinality(String),
    error_type LowCardinality(String),
    http_status UInt16,
    finish_reason LowCardinality(String),
    latency_ms Float64,
    time_to_first_token_ms Nullable(Float64),
    queue_wait_ms Nullable(Float64),
    time_per_output_token_ms Nullable(Float64),
    input_tokens Nullable(UInt32),
    output_tokens Nullable(UInt32),
    cache_read_tokens Nullable(UInt32),
    cache_hit Nullable(Bool),
    cost_usd Nullable(Float64),
    prediction String,
    confidence Nullable(Float64),
    feedback_score Nullable(Float64),
    features_num Map(String, Float64),
    features_cat Map(String, String),
    attributes Map(String, String),
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (model, model_version, timestamp, event_id)
TTL toDateTime(timestamp) + INTERVAL {raw_retention_days} DAY
