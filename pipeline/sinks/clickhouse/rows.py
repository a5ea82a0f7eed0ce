"""Contracts → ClickHouse rows (column-oriented), with no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.alert import AlertEvent
from schemas.bounds import EPOCH_SECONDS_MAX
from schemas.event import InferenceEvent, ResourceSample
from schemas.metrics import ResourceMetrics, WindowMetrics
from schemas.scores import DriftScore, WindowScores

__all__ = [
    "ALERT_COLUMNS", "ANOMALY_COLUMNS", "DRIFT_COLUMNS", "EVENT_COLUMNS", "METRICS_COLUMNS",
    "RESOURCE_COLUMNS", "RESOURCE_METRICS_COLUMNS",
    "drift_columns", "drift_row_columns", "event_columns", "resource_columns", "struct_columns",
]

EVENT_COLUMNS = [
    "event_id", "timestamp", "schema_version", "request_id", "trace_id", "span_id",
    "service", "environment", "tenant", "user", "region",
    "model", "model_version", "provider", "operation",
    "status", "error_type", "http_status", "finish_reason",
    "latency_ms", "time_to_first_token_ms", "queue_wait_ms", "time_per_output_token_ms",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_hit", "cost_usd",
    "cost_source", "prediction", "confidence", "feedback_score",
    "features_num", "features_cat", "attributes",
    "kafka_partition", "kafka_offset",
]
RESOURCE_COLUMNS = [
    "timestamp", "host", "server", "model", "cpu_util", "memory_util", "memory_bytes",
    "gpu_util", "gpu_memory_util", "kv_cache_util", "queue_length",
]


def _ticks(seconds: float, name: str) -> int:
    """DateTime64(3) ticks of the Unix time ``seconds`` in column ``name``.

    A time the contracts do not allow (``EpochSeconds``: 1970 … 2100, finite) raises
    ValueError, so the sink refuses its row. DateTime64 would take 1900 … 2299, but every
    table's TTL reads its time as a 32-bit DateTime and would delete a row from before 1970
    or after 2106 (less the retention) as it is inserted, without a trace.

    >>> _ticks(1.5, "t")
    1500
    >>> _ticks(-0.001, "t")
    Traceback (most recent call last):
    ...
    ValueError: t: -0.001 s is outside the stored times [0, 4102444800.0]
    """
    if not 0.0 <= seconds <= EPOCH_SECONDS_MAX:  # NaN fails too
        raise ValueError(f"{name}: {seconds!r} s is outside the stored times "
                         f"[0, {EPOCH_SECONDS_MAX}]")
    return round(seconds * 1000)


def event_columns(
    events: Sequence[InferenceEvent], partitions: Sequence[int], offsets: Sequence[int]
) -> list[list]:
    """Column-oriented data for ``EVENT_COLUMNS``; timestamps become DateTime64(3) ticks.

    One pass over the events, appending to every column, is deliberate: on CPython 3.11
    a Struct's attribute read in a loop is a specialised slot load, so this beats
    per-column passes (each re-reads every event from memory), ``attrgetter`` of all
    fields and ``zip(*rows)`` (both 1.1–2× slower, ``benchmarks/sink.py``).

    >>> e = InferenceEvent(event_id="a", timestamp=1.5, model="m", latency_ms=2.0,
    ...                    prediction=3.0, features={"n": 1, "c": "x"})
    >>> cols = dict(zip(EVENT_COLUMNS, event_columns([e], [4], [7]), strict=True))
    >>> cols["timestamp"], cols["prediction"], cols["features_num"], cols["features_cat"]
    ([1500], ['3.0'], [{'n': 1.0}], [{'c': 'x'}])
    """
    cols: list[list] = [[] for _ in EVENT_COLUMNS]
    (event_id, ts, version, request_id, trace_id, span_id, service, environment, tenant, user,
     region, model, model_version, provider, operation, status, error_type, http_status,
     finish_reason, latency, ttft, queue_wait, tpot, input_tokens, output_tokens, cache_read,
     cache_hit, cost, cost_source, prediction, confidence, feedback, f_num, f_cat, attributes,
     part, offset) = cols
    for e, p, o in zip(events, partitions, offsets, strict=True):
        event_id.append(e.event_id)
        ts.append(_ticks(e.timestamp, "timestamp"))
        version.append(e.schema_version)
        request_id.append(e.request_id or "")
        trace_id.append(e.trace_id or "")
        span_id.append(e.span_id or "")
        service.append(e.service)
        environment.append(e.environment)
        tenant.append(e.tenant)
        user.append(e.user)
        region.append(e.region)
        model.append(e.model)
        model_version.append(e.model_version)
        provider.append(e.provider)
        operation.append(e.operation)
        status.append(e.status)
        error_type.append(e.error_type or "")
        http_status.append(e.http_status or 0)
        finish_reason.append(e.finish_reason or "")
        latency.append(e.latency_ms)
        ttft.append(e.time_to_first_token_ms)
        queue_wait.append(e.queue_wait_ms)
        tpot.append(e.time_per_output_token_ms)
        input_tokens.append(e.input_tokens)
        output_tokens.append(e.output_tokens)
        cache_read.append(e.cache_read_tokens)
        cache_hit.append(e.cache_hit)
        cost.append(e.cost_usd)
        cost_source.append(e.cost_source or "")
        prediction.append("" if e.prediction is None else str(e.prediction))
        confidence.append(e.confidence)
        feedback.append(e.feedback_score)
        numeric: dict[str, float] = {}
        categorical: dict[str, str] = {}
        for key, value in e.features.items():
            if isinstance(value, str):
                categorical[key] = value
            else:
                numeric[key] = float(value)
        f_num.append(numeric)
        f_cat.append(categorical)
        attributes.append(e.attributes)
        part.append(p)
        offset.append(o)
    return cols


def resource_columns(samples: Sequence[ResourceSample]) -> list[list]:
    """Column-oriented data for ``RESOURCE_COLUMNS``."""
    cols = [[getattr(s, name) for s in samples] for name in RESOURCE_COLUMNS]
    cols[0] = [_ticks(t, "timestamp") for t in cols[0]]
    return cols


# scores travel with a window for the alert rules; they are stored in the scores tables
METRICS_COLUMNS = [n for n in WindowMetrics.__struct_fields__
                   if n not in ("schema_version", "scores")]
RESOURCE_METRICS_COLUMNS = [
    n for n in ResourceMetrics.__struct_fields__ if n != "schema_version"
]
ALERT_COLUMNS = [n for n in AlertEvent.__struct_fields__ if n != "schema_version"]
_TICKS = {"window_start", "window_end", "starts_at", "ends_at"}


def struct_columns(rows: Sequence[WindowMetrics | ResourceMetrics | AlertEvent | WindowScores],
                   names: list[str]) -> list[list]:
    """Column-oriented data of Structs (times become DateTime64(3) ticks, None stays None)."""
    return [
        [None if (v := getattr(m, n)) is None else _ticks(v, n) for m in rows]
        if n in _TICKS else [getattr(m, n) for m in rows]
        for n in names
    ]


ANOMALY_COLUMNS = ["series_key", "labels", "window_start", "window_end", "requests",
                   "anomaly_score", "anomaly_threshold", "anomalous", "anomaly_warm_up",
                   "anomaly_contributions", "change_points", "drifted", "reference",
                   "reference_version"]
DRIFT_COLUMNS = ["series_key", "labels", "window_start", "window_end", "name", "kind",
                 "statistic", "value", "threshold", "drifted", "reference",
                 "reference_version", "reference_count", "current_count"]


def drift_columns(scores: Sequence[WindowScores]) -> list[list]:
    """Column-oriented rows of ``drift_scores``: one per window, distribution and statistic."""
    return drift_row_columns([(w, d) for w in scores for d in w.drift])


def drift_row_columns(rows: Sequence[tuple[WindowScores, DriftScore]]) -> list[list]:
    """Column-oriented data for ``DRIFT_COLUMNS`` from (window, drift entry) pairs."""
    values = [
        (w.series_key, w.labels, _ticks(w.window_start, "window_start"),
         _ticks(w.window_end, "window_end"),
         d.name, d.kind, d.statistic, d.value, d.threshold, d.drifted, w.reference,
         w.reference_version, d.reference_count, d.current_count)
        for w, d in rows
    ]
    return [list(column) for column in zip(*values, strict=True)] if values else []
