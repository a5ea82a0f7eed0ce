-- Drift per series, closed window, monitored distribution and statistic, with the
-- reference each value was measured against (pinned baseline version, or trailing).
-- A replayed score is identical, so the key keeps it once.
CREATE TABLE IF NOT EXISTS {db}.drift_scores
(
    series_key String,
    labels Map(String, String),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    name LowCardinality(String),
    kind LowCardinality(String),
    statistic LowCardinality(String),
    value Nullable(Float64),
    threshold Nullable(Float64),
    drifted Bool,
    reference LowCardinality(String),
    reference_version UInt64,
    reference_count UInt64,
    current_count UInt64,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (series_key, name, statistic, window_start)
TTL toDateTime(window_end) + INTERVAL {aggregate_retention_days} DAY;

-- One row per series and closed window: the anomaly score of its metric vector, which
-- metrics moved most (robust z-scores), change points, and the names that drifted.
CREATE TABLE IF NOT EXISTS {db}.anomaly_scores
(
    series_key String,
    labels Map(String, String),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    requests UInt64,
    anomaly_score Nullable(Float64),
    anomaly_threshold Float64,
    anomalous Bool,
    anomaly_warm_up Bool,
    anomaly_contributions Map(String, Float64),
    change_points Array(String),
    drifted Array(String),
    reference LowCardinality(String),
    reference_version UInt64,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (series_key, window_start)
TTL toDateTime(window_end) + INTERVAL {aggregate_retention_days} DAY;
