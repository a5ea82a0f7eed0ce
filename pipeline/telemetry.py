"""The pipeline's own health as Prometheus metrics (prometheus-client).

Every metric lives here, on one registry, so its name, help and labels are read in one
place; stages and adapters import the object they update (``EVENTS_REJECTED.labels(
stage="stage1", reason="schema").inc(n)``). The HTTP endpoint that serves them
(``/metrics``, ``/healthz``, ``/readyz``) is started by the worker. Label values are
bounded sets (stage names, rejection reasons, alert states, receiver names, partitions),
never series keys: the opt-in model metrics have their own bounded collector.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ACTIVE_SERIES", "ALERTS", "CONSUMER_LAG", "DLQ_DELIVERIES", "EVENTS_CONSUMED",
    "EVENTS_REJECTED", "MESSAGES_CONSUMED", "NOTIFICATIONS", "OTLP_SPANS", "REGISTRY",
    "SERIES_OVERFLOW", "SINK_INSERT_FAILURES", "SINK_INSERT_SECONDS", "SINK_ROWS",
    "WINDOW_CLOSE_DELAY",
]

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_CONSUMED = Counter(
    "inferwatch_messages_consumed", "Kafka records consumed, per stage and topic.",
    ["stage", "topic"], registry=REGISTRY)
EVENTS_CONSUMED = Counter(
    "inferwatch_events_consumed", "Events decoded and accepted, per stage.",
    ["stage"], registry=REGISTRY)
EVENTS_REJECTED = Counter(
    "inferwatch_events_rejected", "Events or messages rejected, per stage and reason "
    "(each one is on the dead-letter topic).", ["stage", "reason"], registry=REGISTRY)
DLQ_DELIVERIES = Counter(
    "inferwatch_dlq_deliveries", "Dead letters acknowledged by the broker, per stage.",
    ["stage"], registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "inferwatch_consumer_lag", "Records between a partition's end and the stage's "
    "position, per assigned partition.", ["stage", "topic", "partition"], registry=REGISTRY)
WINDOW_CLOSE_DELAY = Histogram(
    "inferwatch_window_close_delay_seconds", "Wall-clock time from a window's end to its "
    "metrics being emitted.", registry=REGISTRY,
    buckets=(0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120, 300, 600))
SINK_ROWS = Counter(
    "inferwatch_sink_rows", "Rows inserted into ClickHouse, per table.", ["table"],
    registry=REGISTRY)
SINK_INSERT_SECONDS = Histogram(
    "inferwatch_sink_insert_seconds", "Time of one ClickHouse insert, per table.", ["table"],
    registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SINK_INSERT_FAILURES = Counter(
    "inferwatch_sink_insert_failures", "ClickHouse inserts that failed (retried or "
    "isolated), per table.", ["table"], registry=REGISTRY)
ACTIVE_SERIES = Gauge(
    "inferwatch_active_series", "Series with open windows on this worker, per stage.",
    ["stage"], registry=REGISTRY)
SERIES_OVERFLOW = Counter(
    "inferwatch_series_overflow", "Events folded into the overflow series because the "
    "worker held metrics.max_series_per_worker series.", registry=REGISTRY)
ALERTS = Gauge(
    "inferwatch_alerts", "Alerts on this worker, per state (pending, firing).", ["state"],
    registry=REGISTRY)
NOTIFICATIONS = Counter(
    "inferwatch_notifications", "Notifications to receivers, per receiver and outcome "
    "(sent, failed, dropped).", ["receiver", "outcome"], registry=REGISTRY)
OTLP_SPANS = Counter(
    "inferwatch_otlp_spans", "OpenTelemetry spans read, per outcome (mapped: a GenAI span "
    "became an event; skipped: not a GenAI span).", ["outcome"], registry=REGISTRY)
