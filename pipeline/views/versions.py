"""Two versions of one model side by side: the per-version figures and their comparison.

:func:`versions_sql` gathers, for one model over a time range, one row per
``model_version`` with what :mod:`pipeline.quality.compare` needs (columns
:data:`VERSION_COLUMNS`); :func:`compare_versions` turns two of those rows into one
:class:`~pipeline.quality.compare.Difference` per metric of :data:`METRICS`.

Where the figures come from, all by **inference time** in ``[start, end)``:

* inferences, errors (``status = 'error'``) and latency (mean, sample variance, count of
  ``latency_ms``, errors included) from ``events FINAL``, by event time;
* classification outcomes, satisfaction and thumbs-down from ``feedback FINAL``, rows
  with ``status = 'joined'`` (counted by the quality windows too) whose inference time
  is in the range. A label is a classification outcome unless it and the prediction are
  both numbers (a regression error, as in the quality windows; stored as ``label_number``
  set and a ``prediction`` text that parses as a number); it is correct when the label
  text equals the prediction text as stored (``pipeline.sinks.clickhouse.quality_rows``).
  Thumbs-down is a satisfaction below ``thumbs_down_below`` (``quality.thumbs_down_below``).

A feedback row's version comes from its ``series_key``, the series its inference was
counted in: every joined feedback has one (a feedback may name its inference by request
id only, so joining to ``events`` by ``event_id`` would miss some). The key is split
into its ``name=value`` parts with a regular expression that honours the backslash
escapes of :func:`pipeline.windows.profile.series_key`; the model and label filters are
then exact comparisons with parts escaped the same way in Python, and the version is the
``model_version`` part, unescaped. Label filters therefore have to be series labels
(``metrics.series_labels``): events are filtered on the column of that name, else on
``attributes[name]``, as series labels are read.

Every user-given value is quoted (:func:`pipeline.sinks.clickhouse.sql.literal`) and label
names are checked, so no value can change the statement.

>>> sql = versions_sql("clf", 0, 3600, filters={"operation": "classify"})
>>> "model = 'clf'" in sql and "'operation=classify'" in sql
True
>>> versions_sql("it's", 0, 60).count("'model=it\\\\'s'")
1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.quality.compare import (
    COMPARED_METRICS,
    Difference,
    compare_means,
    compare_rates,
)
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS
from pipeline.sinks.clickhouse.sql import literal
from pipeline.views.overview import LABEL
from pipeline.windows.profile import series_key

__all__ = ["METRICS", "VERSION_COLUMNS", "Metric", "UnknownVersionError", "compare_versions",
           "versions_sql"]

# one row per model_version, these columns in this order
VERSION_COLUMNS = (
    "model_version", "inferences", "errors", "latency_n", "latency_mean", "latency_var",
    "labelled", "correct", "satisfaction_n", "satisfaction_mean", "satisfaction_var",
    "thumbs_down",
)
# the name=value parts of a series key: runs of plain characters and escape pairs
_PARTS = r"(?s)(?:[^\\|]|\\.)+"
_UNESCAPE = r"(?s)\\(.)"
_VERSION_PART = "model_version="


@dataclass(frozen=True)
class Metric:
    """One compared metric: how it is compared and which columns of a version row it reads.

    A ``rate`` is ``k`` of ``n``; a ``mean`` is ``mean`` and sample variance ``var`` of ``n``
    observations. ``unit`` and ``digits`` say how a display shows it (rates as percents).
    """

    name: str
    kind: Literal["rate", "mean"]
    higher_is_worse: bool
    n: str
    k: str = ""
    mean: str = ""
    var: str = ""
    unit: str = ""
    digits: int = 2


C = COMPARED_METRICS  # kind and direction of each metric live there
METRICS: tuple[Metric, ...] = (
    Metric("error_rate", *C["error_rate"], n="inferences", k="errors"),
    Metric("latency_ms", *C["latency_ms"], n="latency_n", mean="latency_mean",
           var="latency_var", unit="ms", digits=1),
    Metric("accuracy", *C["accuracy"], n="labelled", k="correct"),
    Metric("satisfaction", *C["satisfaction"], n="satisfaction_n", mean="satisfaction_mean",
           var="satisfaction_var", digits=3),
    Metric("thumbs_down_rate", *C["thumbs_down_rate"], n="satisfaction_n", k="thumbs_down"),
)
_METRIC_NAMES = tuple(m.name for m in METRICS)


class UnknownVersionError(ValueError):
    """A compared version has no row: no inference and no feedback in the range."""


def _time(seconds: float, name: str) -> str:
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{name} must be finite Unix seconds >= 0, got {seconds!r}")
    return f"fromUnixTimestamp64Milli(toInt64({round(seconds * 1000)}), 'UTC')"


def _event_label(name: str) -> str:
    """An event's value of series label ``name``, as ``series_labels`` reads it."""
    if name in EVENT_COLUMNS:
        return f"ifNull(toString({name}), '')"
    return f"attributes[{literal(name)}]"


def versions_sql(model: str, start: float, end: float, *,
                 filters: Mapping[str, str] | None = None,
                 thumbs_down_below: float = 0.5) -> str:
    """One read-only ``SELECT``: a row per version of ``model`` with figures of the
    inferences made in ``[start, end)`` (Unix seconds), columns :data:`VERSION_COLUMNS`.

    ``filters`` maps series label names (``operation``, ``tenant``) to exact values.
    """
    since, until = _time(start, "start"), _time(end, "end")
    if not 0.0 < thumbs_down_below <= 1.0:
        raise ValueError(f"thumbs_down_below must be in (0, 1], got {thumbs_down_below!r}")
    events = [f"model = {literal(model)}", f"timestamp >= {since}", f"timestamp < {until}"]
    parts = [series_key({"model": model})]
    for name, value in (filters or {}).items():
        if not LABEL.match(name) or name in ("model", "model_version"):
            raise ValueError(f"not a label to filter on: {name!r}")
        events.append(f"{_event_label(name)} = {literal(value)}")
        parts.append(series_key({name: value}))
    has = " AND ".join(f"has(parts, {literal(p)})" for p in parts)
    classified = ("kind = 'label' AND NOT (label_number IS NOT NULL "
                  "AND toFloat64OrNull(prediction) IS NOT NULL)")
    rated = "kind = 'satisfaction' AND isFinite(ifNull(satisfaction, nan))"
    return f"""SELECT model_version,
       sum(n_inferences) AS inferences, sum(n_errors) AS errors,
       sum(n_latency) AS latency_n, sum(latency_avg) AS latency_mean,
       sum(latency_varsamp) AS latency_var,
       sum(n_labelled) AS labelled, sum(n_correct) AS correct,
       sum(n_satisfaction) AS satisfaction_n, sum(satisfaction_avg) AS satisfaction_mean,
       sum(satisfaction_varsamp) AS satisfaction_var, sum(n_thumbs_down) AS thumbs_down
FROM (
    SELECT toString(model_version) AS model_version,
           count() AS n_inferences, countIf(status = 'error') AS n_errors,
           count() AS n_latency, avg(latency_ms) AS latency_avg,
           if(count() > 1, varSamp(latency_ms), 0) AS latency_varsamp,
           toUInt64(0) AS n_labelled, toUInt64(0) AS n_correct,
           toUInt64(0) AS n_satisfaction, toFloat64(0) AS satisfaction_avg,
           toFloat64(0) AS satisfaction_varsamp, toUInt64(0) AS n_thumbs_down
    FROM events FINAL
    WHERE {" AND ".join(events)}
    GROUP BY model_version
    UNION ALL
    SELECT model_version,
           toUInt64(0), toUInt64(0), toUInt64(0), toFloat64(0), toFloat64(0),
           countIf({classified}),
           countIf({classified} AND label = prediction),
           countIf({rated}),
           if(countIf({rated}) > 0, ifNull(avgIf(satisfaction, {rated}), 0), 0),
           if(countIf({rated}) > 1, ifNull(varSampIf(satisfaction, {rated}), 0), 0),
           countIf({rated} AND satisfaction < {float(thumbs_down_below)!r})
    FROM (
        SELECT kind, label, label_number, prediction, satisfaction,
               extractAll(series_key, {literal(_PARTS)}) AS parts,
               replaceRegexpAll(
                   substring(arrayFirst(p -> startsWith(p, {literal(_VERSION_PART)}), parts),
                             {len(_VERSION_PART) + 1}),
                   {literal(_UNESCAPE)}, '\\\\1') AS model_version
        FROM feedback FINAL
        WHERE status = 'joined' AND kind IN ('label', 'satisfaction')
          AND inference_time >= {since} AND inference_time < {until}
    )
    WHERE {has}
    GROUP BY model_version
)
GROUP BY model_version
ORDER BY model_version
"""


def compare_versions(rows: Sequence[Mapping[str, Any]], baseline: str, candidate: str, *,
                     level: float = 0.95, min_n: int | None = None,
                     margin: Mapping[str, float] | None = None) -> list[Difference]:
    """One :class:`Difference` (candidate minus baseline) per metric of :data:`METRICS`.

    ``rows`` are records of :func:`versions_sql` (by column name). ``min_n`` is the fewest
    observations per side for a verdict (default: 100 for rates, 30 for means);
    ``margin`` maps metric names to the smallest difference that counts, in the metric's
    unit (a proportion for rates). A version with no row raises
    :class:`UnknownVersionError` naming the versions there are.

    >>> row = dict.fromkeys(VERSION_COLUMNS, 0)
    >>> rows = [{**row, "model_version": "v1", "inferences": 1000, "errors": 10},
    ...         {**row, "model_version": "v2", "inferences": 1000, "errors": 40}]
    >>> [(d.metric, d.verdict) for d in compare_versions(rows, "v1", "v2")][:2]
    [('error_rate', 'worse'), ('latency_ms', 'insufficient_data')]
    >>> compare_versions(rows, "v1", "v3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.views.versions.UnknownVersionError: ... of version 'v3' ...; versions there: v1, v2
    """
    unknown = sorted(set(margin or {}) - set(_METRIC_NAMES))
    if unknown:
        raise ValueError(f"no metric {unknown[0]!r} to give a margin; one of: "
                         f"{', '.join(_METRIC_NAMES)}")
    by_version = {str(r["model_version"]): r for r in rows}
    for version in (baseline, candidate):
        if version not in by_version:
            there = ", ".join(sorted(by_version)) or "none"
            raise UnknownVersionError(f"no inference or feedback of version {version!r} in "
                                      f"the range; versions there: {there}")
    base, cand = by_version[baseline], by_version[candidate]
    out = []
    for m in METRICS:
        options: dict[str, Any] = {"higher_is_worse": m.higher_is_worse, "level": level,
                                   "margin": float((margin or {}).get(m.name, 0.0))}
        if min_n is not None:
            options["min_n"] = min_n
        if m.kind == "rate":
            out.append(compare_rates(m.name, int(base[m.k]), int(base[m.n]), int(cand[m.k]),
                                     int(cand[m.n]), **options))
        else:
            out.append(compare_means(m.name, base[m.mean], base[m.var], int(base[m.n]),
                                     cand[m.mean], cand[m.var], int(cand[m.n]), **options))
    return out
