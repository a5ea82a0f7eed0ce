"""What Grafana does to a panel's SQL before the ClickHouse data source sends it.

Test support, not product code: Grafana interpolates template variables in the browser,
then the plugin (grafana-clickhouse-datasource, ``pkg/macros``) expands its macros for
the panel's time range and interval. This does both, for the subset our dashboards may
use; any other ``$__`` macro or ``$variable`` is an error, so a dashboard cannot use
something the test did not expand.

>>> r = TimeRange(frm=1_700_000_000.0, to=1_700_003_600.0, interval_s=60)
>>> expand("$__timeFilter(t)", r, {})
't >= toDateTime(1700000000) AND t <= toDateTime(1700003600)'
>>> print(expand("m IN (${model:singlequote}) AND s = '$statistic'", r,
...              {"model": ["a", "b'c"], "statistic": ["js"]}))
m IN ('a','b\\'c') AND s = 'js'
>>> expand("$__timeInterval(window_start)", r, {})
'toStartOfInterval(toDateTime(window_start), INTERVAL 60 second)'
>>> expand("$__nope(x)", r, {})
Traceback (most recent call last):
...
ValueError: unexpanded Grafana macro or variable: $__nope
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["TimeRange", "expand"]


@dataclass(frozen=True)
class TimeRange:
    """The dashboard's time range (Unix seconds) and the panel's interval."""

    frm: float
    to: float
    interval_s: int


def _dt(t: float) -> str:
    return f"toDateTime({int(t)})"


def _dt_ms(t: float) -> str:
    return f"fromUnixTimestamp64Milli({int(t * 1000)})"


def _date(t: float) -> str:
    import datetime

    return f"toDate('{datetime.datetime.fromtimestamp(t, datetime.UTC):%Y-%m-%d}')"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _variables(sql: str, values: Mapping[str, Sequence[str]]) -> str:
    """``${name:singlequote}`` → every selected value quoted; ``${name}``/``$name`` → the
    value as is (single-value variables). Grafana's ``$__`` names are left for macros."""

    def value(name: str, fmt: str | None) -> str:
        if name not in values:
            raise ValueError(f"no value for template variable {name!r}")
        chosen = list(values[name])
        if fmt == "singlequote":
            return ",".join(_quote(v) for v in chosen)
        if fmt is not None:
            raise ValueError(f"format {fmt!r} of ${{{name}}} not expanded by this test")
        if len(chosen) != 1:
            raise ValueError(f"${{{name}}} has {len(chosen)} values; use :singlequote")
        return chosen[0]

    def substitute(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name.startswith("__"):  # Grafana's own: macros, expanded below
            return m.group(0)
        return value(name, m.group(2))

    return re.sub(r"\$\{(\w+)(?::([a-z]+))?\}|\$(\w+)", substitute, sql)


def expand(sql: str, r: TimeRange, values: Mapping[str, Sequence[str]]) -> str:
    """The statement the plugin would send for this range, interval and variable values."""
    sql = _variables(sql, values)
    with_arg = {
        "timeFilter": lambda c: f"{c} >= {_dt(r.frm)} AND {c} <= {_dt(r.to)}",
        "timeFilter_ms": lambda c: f"{c} >= {_dt_ms(r.frm)} AND {c} <= {_dt_ms(r.to)}",
        "dateFilter": lambda c: f"{c} >= {_date(r.frm)} AND {c} <= {_date(r.to)}",
        "timeInterval": lambda c: (f"toStartOfInterval(toDateTime({c}), "
                                   f"INTERVAL {max(r.interval_s, 1)} second)"),
    }
    plain = {
        "fromTime": _dt(r.frm), "toTime": _dt(r.to), "fromTime_ms": _dt_ms(r.frm),
        "toTime_ms": _dt_ms(r.to), "interval_s": str(max(r.interval_s, 1)),
    }
    sql = re.sub(r"\$__(\w+)\(([^()]*)\)",
                 lambda m: with_arg[m.group(1)](m.group(2).strip())
                 if m.group(1) in with_arg else m.group(0), sql)
    sql = re.sub(r"\$__(\w+)\b(?!\()",
                 lambda m: plain.get(m.group(1), m.group(0)), sql)
    left = re.search(r"\$__?\w+", sql)
    if left:
        raise ValueError(f"unexpanded Grafana macro or variable: {left.group(0)}")
    return sql
