"""The window metrics agree everywhere they are written down.

A metric of a window appears in four places: the ``WindowMetrics`` contract, the
finalisation that fills it (``WindowProfile.finalize``), the ``window_metrics`` table
(migration 0003) and, for the metrics kept over long ranges, the roll-ups (migration 0004
and the refresh SQL of ``pipeline/sinks/clickhouse/rollups.py``). They are tied together
here rather than generated from one list: the contract must stay a statically declared
Struct (evolution rules, exported JSON Schema) and migrations are append-only SQL.

Column types come from the real engine (embedded chDB, every migration applied), not from
reading the SQL. A new field without a column, a column without a field, a field the
finalisation forgets, a window metric with no decision about roll-ups, or a roll-up
column the refresh leaves to its default fails here.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import msgspec
import msgspec.inspect as mi
import numpy as np

from pipeline.sinks.clickhouse.rollups import _COLUMNS as ROLLUP_INSERTED
from pipeline.sinks.clickhouse.rollups import refresh_rollups
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS, METRICS_COLUMNS, event_columns
from pipeline.windows import WindowProfile, series_key
from pipeline.windows.sketch import DEFAULT_RELATIVE_ACCURACY
from schemas import InferenceEvent, WindowMetrics

# Fields that travel on inferwatch.metrics but are not window_metrics columns: the
# contract version, and the scores (stored in the scores tables).
NOT_STORED = {"schema_version", "scores"}
FIELDS: dict[str, mi.Field] = {f.name: f for f in mi.type_info(WindowMetrics).fields}
STORED = [name for name in FIELDS if name not in NOT_STORED]

# Window metrics kept in the roll-ups: roll-up column -> the WindowMetrics fields it mirrors
# (one field for a count or sum, the percentile fields for a quantilesDD state).
ROLLED_UP: dict[str, tuple[str, ...]] = {
    "requests": ("requests",),
    "errors": ("errors",),
    "input_tokens": ("input_tokens_sum",),
    "output_tokens": ("output_tokens_sum",),
    "cost_usd": ("cost_usd_sum",),
    "latency_ms": ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms"),
    "ttft_ms": ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms"),
    "output_tokens_q": ("output_tokens_p50", "output_tokens_p99"),
}
# Window metrics the roll-ups do not keep, each with the reason. A new field must land in
# ROLLED_UP or here: a decision, not an accident.
NOT_ROLLED_UP: dict[str, str] = {
    **dict.fromkeys(("series_key", "labels", "window_start", "window_end", "version"),
                    "identity: roll-ups key on bucket and label columns"),
    **dict.fromkeys(("request_rate_per_s", "error_rate", "output_tokens_per_s"),
                    "a ratio of rolled-up sums, computed at query time"),
    "cost_per_request_usd": "mean over requests that reported a cost: the roll-ups keep no "
                            "count of those, so cost_usd / requests is not the same number",
    "cache_hit_rate": "hits over requests that reported cache_hit: the roll-ups keep "
                      "cache_hits but no count of reporting requests",
    "errors_by_type": "per-window breakdown, read from window_metrics",
    "latency_max_ms": "per-window only",
    **dict.fromkeys(("queue_wait_p50_ms", "queue_wait_p99_ms", "tpot_p50_ms", "tpot_p99_ms",
                     "input_tokens_p50", "input_tokens_p99"), "per-window percentile only"),
    **dict.fromkeys(("slo_latency_ms", "slo_compliance"),
                    "depends on the SLO threshold configured when the window closed"),
    **dict.fromkeys(("feedback_mean", "feedback_count", "feature_usage"), "per-window only"),
    "late_events": "window bookkeeping",
    "sketch_relative_accuracy": "the roll-ups' accuracy is a parameter of their states "
                                "(checked below)",
}
ROLLUP_TABLES = ("rollup_1m", "rollup_1h")


# --------------------------------------------------------------------------- the store
def describe(client: Any, table: str) -> dict[str, tuple[str, str]]:
    """column -> (type, default kind: '', DEFAULT, MATERIALIZED, ALIAS) as the engine has it."""
    return {r[0]: (r[1], r[2]) for r in client.query(f"DESCRIBE TABLE {table}").result_rows}


def _unwrap(t: Any) -> tuple[Any, bool]:
    """(the type without None and metadata, whether None was allowed)."""
    if isinstance(t, mi.Metadata):
        return _unwrap(t.type)
    if isinstance(t, mi.UnionType):
        rest = [m for m in t.types if not isinstance(m, mi.NoneType)]
        assert len(rest) == 1, f"unexpected union {t}"
        return _unwrap(rest[0])[0], len(rest) < len(t.types)
    return t, False


def _inner(column_type: str, wrapper: str) -> str | None:
    prefix = f"{wrapper}("
    return column_type[len(prefix):-1] if column_type.startswith(prefix) else None


def _split(args: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in args:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    return [*parts, current.strip()]


def compatible(t: Any, column_type: str) -> bool:
    """Whether a value of msgspec type ``t`` belongs in a column of ``column_type``, with
    ``Nullable`` exactly when the type allows None."""
    t, optional = _unwrap(t)
    inner = _inner(column_type, "Nullable")
    if (inner is not None) != optional:
        return False
    column_type = inner or column_type
    column_type = _inner(column_type, "LowCardinality") or column_type
    if isinstance(t, mi.IntType):
        return re.fullmatch(r"U?Int(8|16|32|64|128|256)", column_type) is not None
    if isinstance(t, mi.FloatType):  # times are float seconds in the contracts
        return column_type in ("Float32", "Float64") or column_type.startswith("DateTime64(")
    if isinstance(t, mi.StrType):
        return column_type == "String"
    if isinstance(t, mi.BoolType):
        return column_type == "Bool"
    if isinstance(t, mi.DictType) and (args := _inner(column_type, "Map")) is not None:
        key, value = _split(args)
        return compatible(t.key_type, key) and compatible(t.value_type, value)
    return False


def test_the_type_check_can_fail() -> None:
    assert compatible(FIELDS["latency_p99_ms"].type, "Nullable(Float64)")
    assert not compatible(FIELDS["latency_p99_ms"].type, "Float64")  # None has nowhere to go
    assert not compatible(FIELDS["requests"].type, "Nullable(UInt64)")  # never None
    assert not compatible(FIELDS["requests"].type, "Float64")
    assert compatible(FIELDS["feature_usage"].type, "Map(String, Map(String, UInt64))")
    assert not compatible(FIELDS["feature_usage"].type, "Map(String, Map(String, String))")
    assert compatible(FIELDS["window_start"].type, "DateTime64(3, 'UTC')")


# --------------------------------------------------------------------------- (a) contract ↔ table
def test_every_stored_field_is_a_column_of_a_compatible_type(store) -> None:
    columns = describe(store, "window_metrics")
    assert set(FIELDS) >= NOT_STORED and NOT_STORED.isdisjoint(columns)
    assert set(METRICS_COLUMNS) == set(STORED)  # what the sink inserts
    missing = [name for name in STORED if name not in columns]
    assert not missing, f"WindowMetrics fields without a window_metrics column: {missing}"
    wrong = [f"{name}: {FIELDS[name].type} -> {columns[name][0]}" for name in STORED
             if not compatible(FIELDS[name].type, columns[name][0])]
    assert not wrong, "\n".join(wrong)


def test_every_plain_column_is_a_field(store) -> None:
    columns = describe(store, "window_metrics")
    plain = {name for name, (_, default) in columns.items() if not default}
    assert plain == set(STORED), f"columns without a field: {sorted(plain - set(STORED))}"
    derived = set(columns) - plain
    assert derived >= {"model", "emitted_at"}  # labels['model'], the insert time


# --------------------------------------------------------------------------- (b) finalisation
START = 1_700_000_000.0
ALPHA = 0.02  # not the default: the profile's accuracy must reach the metrics


def _full_events() -> list[InferenceEvent]:
    """Events reporting every field a window metric is computed from."""
    return [
        InferenceEvent(
            event_id=f"e{i}", timestamp=START + 1 + i / 10, model="m", latency_ms=100.0 + 10 * i,
            time_to_first_token_ms=20.0 + i, queue_wait_ms=1.0 + i,
            time_per_output_token_ms=5.0 + i, input_tokens=100 + i, output_tokens=10 + i,
            cache_hit=i % 2 == 0, cost_usd=0.001 * (i + 1), feedback_score=i % 3 / 2,
            status="error" if i % 4 == 0 else "ok", error_type="timeout" if i % 4 == 0 else None,
            attributes={"app_feature": "chat" if i % 2 else "search"},
        )
        for i in range(12)
    ]


def test_a_window_with_every_kind_of_data_sets_every_field() -> None:
    profile = WindowProfile(ALPHA)
    profile.add_events(_full_events(), slo_ms=150.0, usage_attributes=("app_feature",))
    profile.add_late(2)
    labels = {"model": "m"}
    metrics = profile.finalize(series_key(labels), labels, START, START + 10.0, version=3,
                               slo_ms=150.0)
    left = [f.name for f in FIELDS.values() if f.name in STORED and not f.required
            and getattr(metrics, f.name) == (f.default if f.default is not mi.NODEFAULT
                                             else f.default_factory())]
    assert not left, f"left at their defaults although the window had the data: {left}"
    assert metrics.sketch_relative_accuracy == ALPHA and metrics.version == 3


def test_a_window_with_only_latencies_leaves_the_other_optional_fields_none() -> None:
    """"No data" is None, never 0 (schemas/metrics.py): only the latency-derived fields
    and the SLO threshold are set by a window of bare events."""
    profile = WindowProfile()
    profile.add_events([InferenceEvent(event_id=f"e{i}", timestamp=START + 1, model="m",
                                       latency_ms=100.0 + i) for i in range(5)], slo_ms=150.0)
    metrics = profile.finalize("model=m", {"model": "m"}, START, START + 10.0, version=1,
                               slo_ms=150.0)
    optional = [name for name in STORED if _unwrap(FIELDS[name].type)[1]]
    assert len(optional) > 10
    for name in optional:
        expected = name.startswith(("latency_", "slo_"))
        assert (getattr(metrics, name) is not None) == expected, name


# --------------------------------------------------------------------------- (c) roll-ups
def test_every_window_metric_is_rolled_up_or_says_why_not() -> None:
    mirrored = [f for fields in ROLLED_UP.values() for f in fields]
    assert len(mirrored) == len(set(mirrored))
    assert set(mirrored).isdisjoint(NOT_ROLLED_UP)
    unclassified = set(STORED) - set(mirrored) - set(NOT_ROLLED_UP)
    assert not unclassified, f"window metrics neither rolled up nor excused: {unclassified}"
    assert set(mirrored) | set(NOT_ROLLED_UP) <= set(STORED)


def _percentile(field: str) -> float:
    """latency_p95_ms -> 0.95"""
    match = re.search(r"_p(\d+)(_|$)", field)
    assert match, field
    digits = match.group(1)
    return int(digits) / 10 ** len(digits)


def _quantiles_dd(column_type: str) -> tuple[float, tuple[float, ...]] | None:
    """(relative accuracy, levels) of a quantilesDD state column, else None."""
    match = re.fullmatch(r"AggregateFunction\(quantilesDD\(([^)]*)\), .*\)", column_type)
    if match is None:
        return None
    accuracy, *levels = (float(x) for x in match.group(1).split(","))
    return accuracy, tuple(levels)


def test_rollup_tables_hold_the_mirrored_metrics_at_the_same_levels(store) -> None:
    tables = {t: describe(store, t) for t in ROLLUP_TABLES}
    assert tables["rollup_1m"] == tables["rollup_1h"]  # hours are merged minutes
    columns = tables["rollup_1m"]
    for column, fields in ROLLED_UP.items():
        assert column in columns, f"roll-up column {column} is missing"
        assert all(f in FIELDS for f in fields)
        state = _quantiles_dd(columns[column][0])
        if len(fields) == 1 and "_p" not in fields[0]:  # a count or a sum
            assert state is None, column
            assert compatible(_unwrap(FIELDS[fields[0]].type)[0], columns[column][0]), column
        else:  # the same percentiles as the window, at the windows' default accuracy
            assert state is not None, f"{column}: {columns[column][0]}"
            accuracy, levels = state
            assert accuracy == DEFAULT_RELATIVE_ACCURACY, column
            assert levels == tuple(_percentile(f) for f in fields), f"{column}: {levels}"


def test_the_refresh_writes_every_rollup_column(store) -> None:
    inserted = [c.strip() for c in ROLLUP_INSERTED.split(",")]
    assert len(inserted) == len(set(inserted))
    for table in ROLLUP_TABLES:
        columns = describe(store, table)
        assert set(inserted) <= set(columns), table
        plain = {name for name, (_, default) in columns.items() if not default}
        assert plain <= set(inserted), f"{table}: columns the refresh leaves to their default"


def test_a_rolled_up_minute_agrees_with_the_window_metrics_of_its_events(store) -> None:
    """The same events, as one 60 s window and as one roll-up minute and hour: equal counts
    and sums, percentiles within each side's accuracy of the exact value."""
    minute = (int(time.time()) // 60 - 5) * 60  # recent: the roll-ups' TTL keeps it
    events = [msgspec.structs.replace(e, timestamp=minute + 1 + i)
              for i, e in enumerate(_full_events() * 4)]
    events = [msgspec.structs.replace(e, event_id=f"r{i}") for i, e in enumerate(events)]
    store.insert("events", event_columns(events, [0] * len(events), list(range(len(events)))),
                 column_names=list(EVENT_COLUMNS), column_oriented=True)
    while not refresh_rollups(store, store.database).done:
        pass
    profile = WindowProfile()
    profile.add_events(events, slo_ms=150.0)
    window = profile.finalize("model=m", {"model": "m"}, minute, minute + 60.0, version=1,
                              slo_ms=150.0)
    exact = {
        "latency_ms": [e.latency_ms for e in events],
        "ttft_ms": [e.time_to_first_token_ms for e in events],
        "output_tokens_q": [e.output_tokens for e in events],
    }
    for table, unit in (("rollup_1m", 60), ("rollup_1h", 3600)):
        selects = []
        for column, fields in ROLLED_UP.items():
            if len(fields) == 1 and "_p" not in fields[0]:
                selects.append(f"sum({column})")
            else:
                levels = ", ".join(str(_percentile(f)) for f in fields)
                selects.append(f"quantilesDDMerge({DEFAULT_RELATIVE_ACCURACY}, {levels})"
                               f"({column})")
        row = store.query(f"SELECT {', '.join(selects)} FROM {table} FINAL "
                          f"WHERE bucket = toDateTime({minute // unit * unit}, 'UTC') "
                          "AND model = 'm'").result_rows[0]
        for value, (column, fields) in zip(row, ROLLED_UP.items(), strict=True):
            if len(fields) == 1 and "_p" not in fields[0]:
                mine = getattr(window, fields[0])
                assert math.isclose(value, mine, rel_tol=1e-9), f"{table}.{column}"
                continue
            ordered = np.sort(np.asarray(exact[column], dtype=np.float64))
            for got, field in zip(value, fields, strict=True):
                truth = ordered[math.floor(_percentile(field) * (len(ordered) - 1))]
                for who, estimate in ((f"{table}.{column}", got), (field, getattr(window, field))):
                    assert abs(estimate - truth) <= 1.01 * DEFAULT_RELATIVE_ACCURACY * truth, \
                        f"{who} at {_percentile(field)}: {estimate} vs exact {truth}"
