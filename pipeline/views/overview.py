"""The Overview: one row per series with its current figures, flags and firing alerts.

What each column means (shared by ``inferwatch top``, the web UI and Grafana's Overview):

* the figures — requests/s, p50 and p99 latency, p99 time to first token, error rate,
  tokens/s (input + output), cost per hour, SLO compliance — are those of the series'
  **latest closed window** (``window_metrics FINAL``, newest version): exact for that
  window, never percentiles averaged across windows. ``window_end`` says which window.
* the flags look back ``lookback`` seconds (default 300) from the newest window end in
  the store (not the wall clock, so a stopped pipeline shows its last state and says
  when): ``drifted`` lists the distributions that drifted in any window of that span,
  ``anomaly`` is the highest anomaly score (NULL while the scorer warms up),
  ``anomalous`` whether any window reached its threshold, ``change_points`` the metrics
  whose change-point detector fired.
* ``firing`` lists the rules whose alert on the series is firing now (its latest
  transition, whatever its age), silenced and inhibited ones left out (they are muted on
  purpose; ``inferwatch alerts`` shows them).

Only series with a window in the lookback are listed. Label filters match the series
labels exactly (``model=gpt-chat``); the SQL is built from the catalogue below and
validated names, and every value is quoted, so a filter cannot change the statement.

>>> sql = overview_sql(filters={"model": "gpt-chat"}, sort="p99_ms", limit=5)
>>> "labels['model'] = 'gpt-chat'" in sql and sql.rstrip().endswith("LIMIT 5")
True
>>> overview_sql(filters={"model": "x' OR 1=1 --"}).count("'x\\\\' OR 1=1 --'")
1
>>> overview_sql(sort="nope")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown column 'nope'; one of: series_key, model, ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.sinks.clickhouse.sql import literal

__all__ = ["DEFAULT_LOOKBACK_SECONDS", "LABEL", "OVERVIEW_COLUMNS", "Column", "overview_sql"]

DEFAULT_LOOKBACK_SECONDS = 300
LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")  # a label name a filter may use

Kind = Literal["text", "number", "percent", "time", "flag", "list"]


@dataclass(frozen=True)
class Column:
    """One Overview column: its result name, SQL over the joined sources, how to show it.

    ``sql`` reads the aliases ``w`` (latest window), ``s`` (scores over the lookback)
    and ``a`` (firing alerts). ``digits`` is the decimals a display shows.
    """

    name: str
    sql: str
    title: str
    kind: Kind = "number"
    digits: int = 1
    unit: str = ""


_SECONDS = "(dateDiff('millisecond', w.window_start, w.window_end) / 1000)"

OVERVIEW_COLUMNS: tuple[Column, ...] = (
    Column("series_key", "w.series_key", "series", "text"),
    Column("model", "w.labels['model']", "model", "text"),
    Column("model_version", "w.labels['model_version']", "version", "text"),
    Column("operation", "w.labels['operation']", "operation", "text"),
    Column("window_end", "w.window_end", "as of", "time"),
    Column("requests_per_s", "w.request_rate_per_s", "req/s", digits=2),
    Column("p50_ms", "w.latency_p50_ms", "p50", unit="ms"),
    Column("p99_ms", "w.latency_p99_ms", "p99", unit="ms"),
    Column("ttft_p99_ms", "w.ttft_p99_ms", "ttft p99", unit="ms"),
    Column("error_rate", "w.error_rate", "errors", "percent", digits=2),
    Column("tokens_per_s",
           f"(w.input_tokens_sum + w.output_tokens_sum) / {_SECONDS}", "tok/s"),
    Column("cost_per_hour_usd", f"w.cost_usd_sum / {_SECONDS} * 3600", "$/h", digits=2),
    Column("slo_compliance", "w.slo_compliance", "SLO", "percent", digits=1),
    Column("drifted", "if(empty(s.series_key), [], s.drifted)", "drift", "list"),
    Column("anomaly", "if(empty(s.series_key), NULL, s.anomaly)", "anomaly", digits=2),
    Column("anomalous", "if(empty(s.series_key), false, s.anomalous)", "anom", "flag"),
    Column("change_points", "if(empty(s.series_key), [], s.change_points)", "change",
           "list"),
    Column("firing", "if(empty(a.series_key), [], a.firing)", "firing alerts", "list"),
)
_BY_NAME = {c.name: c for c in OVERVIEW_COLUMNS}


def overview_sql(*, lookback_seconds: int = DEFAULT_LOOKBACK_SECONDS,
                 filters: Mapping[str, str] | None = None, sort: str = "series_key",
                 descending: bool | None = None, limit: int | None = None,
                 where: Sequence[str] = ()) -> str:
    """The Overview as one read-only ``SELECT`` (tables of the default database).

    ``sort`` is a column name; ``descending`` defaults to True for numbers and flags
    (worst first) and False for text. ``filters`` maps series label names to values.
    ``where`` adds conditions on ``w`` written by the caller, not by a user (Grafana's
    template variables: ``w.labels['model'] IN (${model:singlequote})``).
    """
    if sort not in _BY_NAME:
        raise ValueError(f"unknown column {sort!r}; one of: {', '.join(_BY_NAME)}")
    if not (isinstance(lookback_seconds, int) and lookback_seconds > 0):
        raise ValueError(f"lookback_seconds must be a positive integer, got {lookback_seconds!r}")
    if limit is not None and not (isinstance(limit, int) and limit > 0):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    where = list(where)
    for name, value in (filters or {}).items():
        if not LABEL.match(name):
            raise ValueError(f"not a label name: {name!r}")
        where.append(f"w.labels[{literal(name)}] = {literal(value)}")
    if descending is None:
        descending = _BY_NAME[sort].kind not in ("text",)
    since = (f"(SELECT max(window_end) FROM window_metrics) - "
             f"INTERVAL {lookback_seconds} SECOND")
    select = ",\n       ".join(f"{c.sql} AS {c.name}" for c in OVERVIEW_COLUMNS)
    order = f"{sort} {'DESC' if descending else 'ASC'} NULLS LAST"
    if sort != "series_key":
        order += ", series_key"  # ties in a stable order: rows do not jump between refreshes
    return f"""WITH
latest AS (
    SELECT * FROM window_metrics FINAL
    WHERE window_end >= {since}
    ORDER BY series_key, window_start DESC
    LIMIT 1 BY series_key
),
scores AS (
    SELECT series_key,
           arraySort(arrayDistinct(arrayFlatten(groupArray(drifted)))) AS drifted,
           max(anomaly_score) AS anomaly,
           max(anomalous) AS anomalous,
           arraySort(arrayDistinct(arrayFlatten(groupArray(change_points)))) AS change_points
    FROM anomaly_scores FINAL
    WHERE window_end >= {since}
    GROUP BY series_key
),
firing AS (
    SELECT series_key, arraySort(groupArray(rule)) AS firing
    FROM (
        SELECT fingerprint, any(series_key) AS series_key, any(rule) AS rule,
               argMax((state, silenced OR inhibited),
                      (window_end, state = 'resolved', recorded_at)) AS last
        FROM alerts FINAL
        GROUP BY fingerprint
    )
    WHERE last.1 = 'firing' AND NOT last.2
    GROUP BY series_key
)
SELECT {select}
FROM latest AS w
LEFT JOIN scores AS s ON s.series_key = w.series_key
LEFT JOIN firing AS a ON a.series_key = w.series_key
{"WHERE " + " AND ".join(where) if where else ""}
ORDER BY {order}
{f"LIMIT {limit}" if limit else ""}
"""
