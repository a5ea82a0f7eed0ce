-- Who changed what (docs/audit.md): one row per AuditEvent on inferwatch.audit. Silences
-- added and expired, baselines set, rules loaded, queries run through the endpoint,
-- dashboard actions. The event's id is random and a redelivered event is identical, so
-- the key (at, id) keeps it once (read with FINAL). Retention: audit.retention_days.
CREATE TABLE IF NOT EXISTS {db}.audit
(
    id String,
    at DateTime64(3, 'UTC'),
    actor String,
    action LowCardinality(String),
    target String,
    detail Map(String, String),
    outcome LowCardinality(String),
    source LowCardinality(String),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (at, id)
TTL toDateTime(at) + INTERVAL {audit_retention_days} DAY
