"""The SQL behind the dashboard's pages: plain functions returning one bounded statement.

Every statement aggregates in ClickHouse and ends in a ``LIMIT``, so a page costs the
same with 10 or 1,000 series: the Overview (the view shared with ``inferwatch top`` and
Grafana, :mod:`pipeline.views.overview`) sorts and pages in SQL, a chart reads at most
a few thousand points. Values from the browser never reach SQL unquoted: strings go
through :func:`~pipeline.sinks.clickhouse.sql.literal`, sort columns and ranges are
checked against fixed lists.

Which table answers a time range: the windows (``window_metrics``) up to
:data:`WINDOW_RANGE_MAX` seconds, the minute roll-up up to a day, the hourly roll-up
beyond (percentiles merged from the roll-ups' DDSketch states, never averaged).

>>> literal("it's")
"'it\\\\'s'"
>>> parse_range("1h")
3600
>>> "LIMIT 50 OFFSET 0" in overview(parse_range("15m"))
True
"""

from __future__ import annotations

import re

from pipeline.sinks.clickhouse.sql import literal
from pipeline.views.overview import LABEL

__all__ = [
    "RANGES",
    "WINDOW_RANGE_MAX",
    "alert_timeline",
    "overview",
    "parse_filter",
    "parse_range",
    "series_anomaly",
    "series_drift",
    "series_metrics",
    "series_resources",
    "sparklines",
    "split_filter",
]

# Time-range picker: label -> seconds (last 15 minutes to 30 days).
RANGES: dict[str, int] = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400,
                          "7d": 7 * 86400, "30d": 30 * 86400}
WINDOW_RANGE_MAX = 21600  # up to 6 h the charts read every window; beyond, the roll-ups
MAX_PAGE_SIZE = 500
SPARK_POINTS = 30


def parse_range(text: str) -> int:
    """Seconds of a picker range (``15m`` … ``30d``); ``ValueError`` for anything else."""
    if text not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    return RANGES[text]


def parse_filter(text: str) -> str:
    """A SQL condition on ``labels``/``series_key`` from a filter box.

    Space-separated terms, all must hold: ``name=value`` (label equals), ``name!=value``,
    ``name=~regex`` (anchored), or a bare word (substring of the series key, any case).

    >>> parse_filter("model=gpt-chat chat")
    "labels['model'] = 'gpt-chat' AND positionCaseInsensitive(series_key, 'chat') > 0"
    """
    terms = []
    for term in text.split():
        found = re.match(r"^([^=!~]+)(=~|!=|=)(.*)$", term)
        if found and LABEL.match(found.group(1)):
            name, op, value = found.groups()
            label = f"labels[{literal(name)}]"
            if op == "=~":
                terms.append(f"match({label}, {literal('^(?:' + value + ')$')})")
            else:
                terms.append(f"{label} {op} {literal(value)}")
        else:
            terms.append(f"positionCaseInsensitive(series_key, {literal(term)}) > 0")
    return " AND ".join(terms) or "1"


def _since(seconds: int, column: str = "window_start") -> str:
    return f"{column} >= now64(3) - toIntervalSecond({int(seconds)})"


def split_filter(text: str) -> tuple[dict[str, str], str]:
    """A filter box as the shared view's exact label filters (``name=value`` terms) and
    a SQL condition on ``series_key`` for the rest (``!=``, ``=~``, bare words).

    >>> split_filter("model=gpt-chat chat")
    ({'model': 'gpt-chat'}, "positionCaseInsensitive(series_key, 'chat') > 0")
    """
    exact: dict[str, str] = {}
    rest = []
    for term in text.split():
        found = re.match(r"^([^=!~]+)(=~|!=|=)(.*)$", term)
        if found and LABEL.match(found.group(1)):
            name, op, value = found.groups()
            if op == "=":
                exact[name] = value
                continue
            # series keys are name=value pairs joined by "|" (pipeline.windows.profile)
            pattern = f"(^|\\|){re.escape(name)}=" + ("(?:" + value + ")" if op == "=~"
                                                       else re.escape(value)) + "(\\||$)"
            rest.append(f"{'NOT ' if op == '!=' else ''}match(series_key, {literal(pattern)})")
        else:
            rest.append(f"positionCaseInsensitive(series_key, {literal(term)}) > 0")
    return exact, " AND ".join(rest) or "1"


def overview(seconds: int, *, sort: str = "requests_per_s", descending: bool = True,
             label_filter: str = "", page: int = 0, size: int = 50) -> str:
    """One page of the shared Overview (:func:`pipeline.views.overview_sql`: each series'
    latest closed window, flags over the last ``seconds``, firing alerts), sorted and
    paged in SQL; ``total`` counts the series that match the filter."""
    from pipeline.views.overview import OVERVIEW_COLUMNS, overview_sql

    if sort not in {c.name for c in OVERVIEW_COLUMNS}:
        raise ValueError(f"sort must be one of {', '.join(c.name for c in OVERVIEW_COLUMNS)}")
    size = max(1, min(int(size), MAX_PAGE_SIZE))
    page = max(0, int(page))
    exact, rest = split_filter(label_filter)
    inner = overview_sql(lookback_seconds=int(seconds), filters=exact, sort=sort,
                         descending=descending)
    return f"""
SELECT *, count() OVER () AS total FROM (
{inner}
) WHERE {rest}
LIMIT {size} OFFSET {page * size}"""


def sparklines(series_keys: list[str], seconds: int) -> str:
    """The p99 latency of the last windows of each listed series (one page's worth),
    over the range before the newest window in the store (the Overview's anchor)."""
    keys = ", ".join(literal(k) for k in series_keys) or "''"
    return f"""
SELECT series_key, arrayMap(x -> x.2, arraySlice(arraySort(groupArray(
           (window_start, ifNull(latency_p99_ms, nan)))), -{SPARK_POINTS})) AS spark
FROM window_metrics FINAL
WHERE series_key IN ({keys})
  AND window_start >= (SELECT max(window_end) FROM window_metrics)
                      - toIntervalSecond({int(seconds)})
GROUP BY series_key LIMIT {len(series_keys) + 1}"""


def series_metrics(series_key: str, labels: dict[str, str], seconds: int) -> str:
    """The series' chart points over the range, one row per window (up to 6 h) or per
    roll-up bucket (minute up to a day, hour beyond), same columns either way."""
    if seconds <= WINDOW_RANGE_MAX:
        return f"""
SELECT toUnixTimestamp64Milli(window_start) / 1000 AS t,
       toFloat64(window_end) - toFloat64(window_start) AS seconds,
       requests, request_rate_per_s AS requests_per_s,
       latency_p50_ms, latency_p90_ms, latency_p99_ms, ttft_p50_ms, ttft_p99_ms,
       error_rate, errors_by_type, output_tokens_per_s AS tokens_per_s,
       cost_usd_sum / (toFloat64(window_end) - toFloat64(window_start)) * 3600 AS cost_per_hour,
       cache_hit_rate, slo_compliance
FROM window_metrics FINAL
WHERE series_key = {literal(series_key)} AND {_since(seconds)}
ORDER BY window_start LIMIT 5000"""
    table, step = ("rollup_1m", 60) if seconds <= 86400 else ("rollup_1h", 3600)
    conds = [f"bucket >= now() - toIntervalSecond({int(seconds)})"]
    for name in ("model", "model_version", "operation", "tenant"):
        if name in labels:
            conds.append(f"{name} = {literal(labels[name])}")
    return f"""
SELECT toUnixTimestamp(bucket) AS t, {step} AS seconds, sum(requests) AS requests,
       requests / {step} AS requests_per_s,
       quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(latency_ms) AS lq,
       lq[1] AS latency_p50_ms, lq[2] AS latency_p90_ms, lq[4] AS latency_p99_ms,
       quantilesDDMerge(0.01, 0.5, 0.9, 0.99)(ttft_ms) AS tq,
       tq[1] AS ttft_p50_ms, tq[3] AS ttft_p99_ms,
       if(requests > 0, sum(errors) / requests, NULL) AS error_rate,
       map() AS errors_by_type, sum(output_tokens) / {step} AS tokens_per_s,
       sum(cost_usd) / {step} * 3600 AS cost_per_hour,
       if(requests > 0, sum(cache_hits) / requests, NULL) AS cache_hit_rate,
       NULL AS slo_compliance
FROM {table} FINAL
WHERE {' AND '.join(conds)}
GROUP BY bucket ORDER BY bucket LIMIT 5000"""


def series_drift(series_key: str, seconds: int) -> str:
    """Drift per window × distribution × statistic, with the reference it was measured
    against: the heat map's cells (the newest 20,000)."""
    return f"""
SELECT toUnixTimestamp64Milli(window_start) / 1000 AS t, name, statistic, value, threshold,
       drifted, reference, reference_version, reference_count, current_count
FROM drift_scores FINAL
WHERE series_key = {literal(series_key)} AND {_since(seconds)}
ORDER BY window_start DESC, name, statistic LIMIT 20000"""


def series_anomaly(series_key: str, seconds: int) -> str:
    """Anomaly score, its per-metric contributions and the change points per window."""
    return f"""
SELECT toUnixTimestamp64Milli(window_start) / 1000 AS t, anomaly_score, anomaly_threshold,
       anomalous, anomaly_warm_up, anomaly_contributions, change_points, drifted
FROM anomaly_scores FINAL
WHERE series_key = {literal(series_key)} AND {_since(seconds)}
ORDER BY window_start LIMIT 5000"""


def series_resources(labels: dict[str, str], seconds: int) -> str:
    """Utilisation of the hosts serving the series' model, per window (mean over hosts;
    the queue length is the largest host's)."""
    return f"""
SELECT toUnixTimestamp64Milli(window_start) / 1000 AS t, count() AS hosts,
       avg(cpu_util_mean) AS cpu_util, avg(memory_util_mean) AS memory_util,
       avg(gpu_util_mean) AS gpu_util, avg(kv_cache_util_mean) AS kv_cache_util,
       max(queue_length_max) AS queue_length_max
FROM resource_metrics FINAL
WHERE model = {literal(labels.get('model', ''))} AND {_since(seconds)}
GROUP BY window_start ORDER BY window_start LIMIT 5000"""


def series_labels(series_key: str) -> str:
    """The labels of one series (from its newest window)."""
    return (f"SELECT argMax(labels, window_start) AS labels FROM window_metrics "
            f"WHERE series_key = {literal(series_key)}")


def alert_timeline(seconds: int, label_filter: str = "", limit: int = 500) -> str:
    """Alert transitions (firing, resolved; reminders left out) newest first."""
    limit = max(1, min(int(limit), 2000))
    return f"""
SELECT toUnixTimestamp64Milli(window_end) / 1000 AS t, fingerprint, rule, state, severity,
       series_key, labels, annotations, value, threshold,
       toUnixTimestamp64Milli(starts_at) / 1000 AS starts_at,
       if(ends_at IS NULL, NULL, toUnixTimestamp64Milli(ends_at) / 1000) AS ends_at,
       silenced, silenced_by, inhibited
FROM alerts FINAL
WHERE NOT repeat AND {_since(seconds, 'window_end')} AND ({parse_filter(label_filter)})
ORDER BY window_end DESC, fingerprint LIMIT {limit}"""
