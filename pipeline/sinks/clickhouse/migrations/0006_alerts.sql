-- Every alert transition published on inferwatch.alerts (firing, repeat, resolved),
-- silenced and inhibited ones included (marked). A replayed event is identical, so the
-- key (fingerprint, window_end, state, repeat) keeps it once.
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    fingerprint String,
    rule LowCardinality(String),
    state LowCardinality(String),
    severity LowCardinality(String),
    repeat Bool,
    series_key String,
    series_labels Map(String, String),
    labels Map(String, String),
    annotations Map(String, String),
    value Nullable(Float64),
    threshold Nullable(Float64),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    starts_at DateTime64(3, 'UTC'),
    ends_at Nullable(DateTime64(3, 'UTC')),
    silenced Bool,
    silenced_by Array(String),
    inhibited Bool,
    inhibited_by Array(String),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (fingerprint, window_end, state, repeat)
TTL toDateTime(window_end) + INTERVAL {aggregate_retention_days} DAY
