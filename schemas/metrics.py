"""Windowed metric contracts: published on ``inferwatch.metrics``, stored in ClickHouse.

One :class:`WindowMetrics` per (series, window) and one :class:`ResourceMetrics` per
(host, server, model, window). ``version`` is 1 for the first result of a window; a late
correction of the same window is published again with a higher version, so readers keep the
highest version per key (ClickHouse: ``ReplacingMergeTree(version)``).

Percentiles come from mergeable DDSketches with relative accuracy
``sketch_relative_accuracy``. A ``pXX`` field estimates the value at 0-based rank
``floor(q * (n - 1))`` of the window's sorted values, within that fraction of it: the
rank ClickHouse's ``quantileDD`` uses (``quantileExact`` picks rank ``floor(q * n)``, so
with n = 50, our p99 is the second largest value and ``quantileExact(0.99)`` the largest;
see the README, "What a percentile means here").
Fields that had no data in the window are ``None`` (not 0): "no TTFT reported" is not
"TTFT of zero".

Evolution rules as for the event contract: new fields get defaults, types never change.

>>> import msgspec
>>> m = WindowMetrics(series_key="model=m", labels={"model": "m"}, window_start=0.0,
...                   window_end=10.0, version=1, requests=3, request_rate_per_s=0.3)
>>> msgspec.json.decode(msgspec.json.encode(m), type=WindowMetrics) == m
True
"""

from __future__ import annotations

import msgspec

from schemas.bounds import Count, EpochSeconds, Version

__all__ = ["CONTRACT_HEADER", "METRICS_SCHEMA_VERSION", "ResourceMetrics", "WindowMetrics"]

METRICS_SCHEMA_VERSION = 1


# Kafka header on inferwatch.metrics naming the value's contract: WindowMetrics or ResourceMetrics.
CONTRACT_HEADER = "inferwatch-contract"

class WindowMetrics(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Request metrics of one series over one closed event-time window.

    ``series_key`` is the stable string form of ``labels`` (see
    ``pipeline.windows.series_key``). Times are Unix seconds, durations milliseconds.
    Rates are per second of window length; ``error_rate`` and ``slo_compliance`` are
    fractions of ``requests``.
    """

    schema_version: int = METRICS_SCHEMA_VERSION

    # identity
    series_key: str
    labels: dict[str, str] = {}
    window_start: EpochSeconds
    window_end: EpochSeconds
    version: Version = 1

    # traffic and errors
    requests: Count = 0
    request_rate_per_s: float = 0.0
    errors: Count = 0
    errors_by_type: dict[str, Count] = {}
    error_rate: float = 0.0

    # latency, milliseconds
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p90_ms: float | None = None
    ttft_p99_ms: float | None = None
    queue_wait_p50_ms: float | None = None
    queue_wait_p99_ms: float | None = None
    tpot_p50_ms: float | None = None  # time per output token
    tpot_p99_ms: float | None = None

    # usage and cost
    input_tokens_sum: Count = 0
    input_tokens_p50: float | None = None
    input_tokens_p99: float | None = None
    output_tokens_sum: Count = 0
    output_tokens_p50: float | None = None
    output_tokens_p99: float | None = None
    output_tokens_per_s: float = 0.0
    cache_hit_rate: float | None = None  # None when no event reported cache_hit
    cost_usd_sum: float = 0.0
    cost_per_request_usd: float | None = None  # mean over requests that reported a cost

    # SLO and quality
    slo_latency_ms: float | None = None  # the latency threshold slo_compliance used
    slo_compliance: float | None = None  # share of requests with latency <= threshold
    feedback_mean: float | None = None
    feedback_count: Count = 0
    feature_usage: dict[str, dict[str, Count]] = {}  # attribute name -> value -> count

    # bookkeeping
    late_events: Count = 0
    sketch_relative_accuracy: float = 0.01

    # the window's drift and anomaly scores as alert-rule variables (drift.js.<name>,
    # anomaly_score, …); the full scores are the WindowScores on inferwatch.scores
    scores: dict[str, float] = {}


class ResourceMetrics(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Resource utilisation of one model server over one window: exact means and maxes.

    Utilisations are fractions in [0, 1]; ``None`` when no sample reported the field.
    """

    schema_version: int = METRICS_SCHEMA_VERSION

    host: str
    server: str = ""
    model: str = ""
    window_start: EpochSeconds
    window_end: EpochSeconds
    version: Version = 1
    samples: Count = 0

    cpu_util_mean: float | None = None
    cpu_util_max: float | None = None
    memory_util_mean: float | None = None
    memory_util_max: float | None = None
    gpu_util_mean: float | None = None
    gpu_util_max: float | None = None
    kv_cache_util_mean: float | None = None
    kv_cache_util_max: float | None = None
    queue_length_mean: float | None = None
    queue_length_max: float | None = None
