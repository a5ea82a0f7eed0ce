-- Model quality from delayed feedback (docs/quality.md).
-- quality_windows: one row per (series, basis, window); a window fills in as its labels
-- arrive and is published again with a higher version. Read with FINAL.
CREATE TABLE IF NOT EXISTS {db}.quality_windows
(
    series_key String,
    labels Map(String, String),
    model LowCardinality(String) MATERIALIZED labels['model'],
    model_version LowCardinality(String) MATERIALIZED labels['model_version'],
    operation LowCardinality(String) MATERIALIZED labels['operation'],
    basis LowCardinality(String),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    version UInt32,
    inferences UInt64,
    feedback UInt64,
    labelled UInt64,
    label_coverage Nullable(Float64),
    label_delay_p50_s Nullable(Float64),
    label_delay_p90_s Nullable(Float64),
    label_delay_p99_s Nullable(Float64),
    accuracy Nullable(Float64),
    precision_macro Nullable(Float64),
    recall_macro Nullable(Float64),
    f1_macro Nullable(Float64),
    classes Map(String, Tuple(precision Float64, recall Float64, f1 Float64, support UInt64)),
    confusion Map(String, Map(String, UInt64)),
    ece Nullable(Float64),
    mae Nullable(Float64),
    rmse Nullable(Float64),
    satisfaction_mean Nullable(Float64),
    satisfaction_count UInt64,
    thumbs_down_rate Nullable(Float64),
    business_value_sum Float64,
    business_value_count UInt64,
    business_value_per_request Nullable(Float64),
    estimated_accuracy Nullable(Float64),
    estimated_accuracy_low Nullable(Float64),
    estimated_accuracy_high Nullable(Float64),
    emitted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (series_key, basis, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_retention_days} DAY;

-- feedback: every feedback event that passed validation, with its fate in the join:
-- joined (counted), repeat (the inference had this kind already), duplicate (its id was
-- seen), unmatched (no inference within the horizon). One row per feedback_id: the best
-- fate wins (fate_rank: joined 3, repeat 2, unmatched 1, duplicate 0).
CREATE TABLE IF NOT EXISTS {db}.feedback
(
    feedback_id String,
    event_id String,
    request_id String,
    timestamp DateTime64(3, 'UTC'),
    kind LowCardinality(String),
    label String,
    label_number Nullable(Float64),
    satisfaction Nullable(Float64),
    value Nullable(Float64),
    source LowCardinality(String),
    attributes Map(String, String),
    status LowCardinality(String),
    fate_rank UInt8,
    series_key String,
    inference_time Nullable(DateTime64(3, 'UTC')),
    prediction String,
    stored_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(fate_rank)
PARTITION BY toYYYYMM(timestamp)
ORDER BY feedback_id
TTL toDateTime(timestamp) + INTERVAL {raw_retention_days} DAY
