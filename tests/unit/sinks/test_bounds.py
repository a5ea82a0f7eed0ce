"""Every contract bound equals or lies inside the range of the column that stores it.

Derived, not listed: the column types come from the real engine (``DESCRIBE TABLE`` on
embedded chDB after every migration there is), the contract bounds from msgspec's type
information, and the column ↔ field mapping from the sink's own insert lists
(``pipeline/sinks/clickhouse/rows.py``). A new integer field with no upper bound, a narrower
column, or a table the sink writes without a contract behind it fails here.
A value at every bound of ``events`` and ``resources`` is then stored and read back.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from pipeline.config import Settings
from pipeline.quality.records import Fate
from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.rows import (
    EVENT_COLUMNS,
    RESOURCE_COLUMNS,
    event_columns,
    resource_columns,
)
from schemas.alert import AlertEvent
from schemas.audit import AuditEvent
from schemas.event import InferenceEvent, ResourceSample
from schemas.feedback import FeedbackEvent
from schemas.metrics import ResourceMetrics, WindowMetrics
from schemas.quality import QualityWindow
from schemas.scores import DriftScore, WindowScores

# The contract(s) behind each table the sink writes; a column is the field of the same
# name in the first contract that has it (drift_scores: the drift entry, then its window).
CONTRACTS: dict[str, tuple[type[msgspec.Struct], ...]] = {
    "events": (InferenceEvent,),
    "resources": (ResourceSample,),
    "window_metrics": (WindowMetrics,),
    "resource_metrics": (ResourceMetrics,),
    "alerts": (AlertEvent,),
    "anomaly_scores": (WindowScores,),
    "drift_scores": (DriftScore, WindowScores),
    "quality_windows": (QualityWindow,),
    "feedback": (FeedbackEvent, Fate),
    "audit": (AuditEvent,),
}
# Columns whose field has another name: column -> (field, the members of its value union
# that go to this column). rows.py splits features by type into two maps.
RENAMED = {
    ("events", "features_num"): ("features", (mi.FloatType, mi.IntType)),
    ("events", "features_cat"): ("features", (mi.StrType,)),
}
# Where rows.py writes a number as text: any str, int or float fits a String column.
STRINGIFIED = {("events", "prediction"), ("feedback", "label"), ("feedback", "prediction")}
# Columns not from a contract: the Kafka coordinates of the source record.
NOT_FROM_CONTRACTS = {("events", "kafka_partition"), ("events", "kafka_offset"),
                      ("feedback", "label_number"), ("feedback", "fate_rank")}


@dataclass(frozen=True)
class Column:
    """What a column type can hold, derived from its name."""

    kind: str  # int, float, time, str, bool, map, array
    low: float = -math.inf
    high: float = math.inf
    nullable: bool = False
    args: tuple[Column, ...] = ()


def _split_args(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    return [*parts, current.strip()] if current.strip() else parts


# DateTime64's documented range: [1900-01-01 00:00:00, 2299-12-31 23:59:59.99999999].
_DT64_LOW = datetime(1900, 1, 1, tzinfo=UTC).timestamp()
_DT64_HIGH = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()


def column(type_name: str) -> Column:
    """The range of a ClickHouse type as DESCRIBE spells it."""
    match = re.fullmatch(r"(\w+)(?:\((.*)\))?", " ".join(type_name.split()))
    assert match, f"cannot parse column type {type_name!r}"
    name, inner = match.group(1), match.group(2)
    args = _split_args(inner) if inner else []
    if name == "Nullable":
        c = column(args[0])
        return Column(c.kind, c.low, c.high, True, c.args)
    if name == "LowCardinality":
        return column(args[0])
    if m := re.fullmatch(r"(U?)Int(8|16|32|64|128|256)", name):
        bits = int(m.group(2))
        if m.group(1):
            return Column("int", 0, 2**bits - 1)
        return Column("int", -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if name == "Float64":
        return Column("float")
    if name == "Float32":
        return Column("float", -3.4028234663852886e38, 3.4028234663852886e38)
    if name == "DateTime64":
        return Column("time", _DT64_LOW, _DT64_HIGH)
    if name == "DateTime":
        return Column("time", 0, 2**32 - 1)
    if name == "String":
        return Column("str")
    if name == "Bool":
        return Column("bool")
    if name == "Map":
        return Column("map", args=(column(args[0]), column(args[1])))
    if name == "Array":
        return Column("array", args=(column(args[0]),))
    if name == "Tuple":  # named elements: "name Type"
        return Column("tuple", args=tuple((a.split(" ", 1)[0], column(a.split(" ", 1)[1]))
                                         for a in args))
    raise AssertionError(f"column type {type_name!r} has no derivation here: add one")


def narrowed_by_ddl(c: Column, name: str, create_query: str) -> Column:
    """A DateTime64 the table reads as ``toDateTime(col)`` (TTL, partition key) must also fit
    DateTime: past 2106 it wraps, and a TTL would delete the row at once."""
    if c.kind == "time" and re.search(rf"toDateTime\(\s*`?{name}`?\s*\)", create_query):
        return Column("time", max(c.low, 0), min(c.high, 2**32 - 1), c.nullable)
    return c


def _members(t: Any) -> list[Any]:
    while isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.UnionType):
        return [m for u in t.types for m in _members(u)]
    return [t]


def _int_bounds(t: mi.IntType | mi.FloatType) -> tuple[float | None, float | None]:
    low = t.ge if t.ge is not None else (t.gt if t.gt is not None else None)
    high = t.le if t.le is not None else (t.lt if t.lt is not None else None)
    return low, high


def problems(t: Any, c: Column, where: str, stringified: bool = False) -> list[str]:
    """Why a value of contract type ``t`` might not fit column ``c`` (empty: it always fits)."""
    out: list[str] = []
    for m in _members(t):
        if isinstance(m, mi.NoneType):
            continue  # Nullable, or rows.py writes a default: test_none_never_reaches_...
        if isinstance(m, (mi.IntType, mi.FloatType)) and c.kind in ("int", "time", "float"):
            low, high = _int_bounds(m)
            if c.kind == "float" and isinstance(m, mi.FloatType) and c.high == math.inf:
                continue  # Float64 holds every Python float, inf and nan included
            if c.kind == "int" and isinstance(m, mi.FloatType):
                out.append(f"{where}: a float field in an integer column")
                continue
            limit_low, limit_high = (c.low, c.high) if c.kind != "float" else (-(2**53), 2**53)
            if low is None or low < limit_low:
                out.append(f"{where}: lower bound {low} below the column's {limit_low}")
            if high is None or high > limit_high:
                out.append(f"{where}: upper bound {high} above the column's {limit_high}")
        elif isinstance(m, (mi.StrType, mi.LiteralType)) and c.kind == "str":
            if isinstance(m, mi.LiteralType) and not all(isinstance(v, str) for v in m.values):
                out.append(f"{where}: non-text literals in a String column")
        elif ((isinstance(m, (mi.IntType, mi.FloatType)) and c.kind == "str" and stringified)
              or (isinstance(m, mi.BoolType) and c.kind == "bool")):
            continue
        elif isinstance(m, mi.DictType) and c.kind == "map":
            out += problems(m.key_type, c.args[0], f"{where} key")
            out += problems(m.value_type, c.args[1], f"{where} value")
        elif isinstance(m, (mi.ListType, mi.SetType, mi.FrozenSetType)) and c.kind == "array":
            out += problems(m.item_type, c.args[0], f"{where} item")
        elif isinstance(m, mi.StructType) and c.kind == "tuple":
            elements = dict(c.args)
            if set(elements) != {f.name for f in m.fields}:
                out.append(f"{where}: tuple elements {sorted(elements)} are not the fields")
            out += [p for f in m.fields if f.name in elements
                    for p in problems(f.type, elements[f.name], f"{where}.{f.name}")]
        else:
            out.append(f"{where}: {type(m).__name__} cannot be stored in a {c.kind} column")
    return out


def _select(t: Any, kinds: tuple[type, ...]) -> Any:
    """The dict type ``t`` with its value union narrowed to ``kinds``."""
    (d,) = [m for m in _members(t) if isinstance(m, mi.DictType)]
    values = [m for m in _members(d.value_type) if isinstance(m, kinds)]
    assert values, f"no {kinds} member in {d.value_type}"
    return mi.DictType(d.key_type, mi.UnionType(tuple(values)), d.min_length, d.max_length)


def _fields(contracts: tuple[type[msgspec.Struct], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for contract in reversed(contracts):  # the first contract wins
        info = mi.type_info(contract)
        assert isinstance(info, mi.StructType)
        out.update({f.name: f.type for f in info.fields})
    return out


def describe(client: Any, table: str) -> dict[str, tuple[str, str]]:
    """column -> (type, default kind) of ``table`` as the engine has it now."""
    return {r[0]: (r[1], r[2]) for r in client.query(f"DESCRIBE TABLE {table}").result_rows}


def create_query(client: Any, settings: Settings, table: str) -> str:
    return client.query(
        "SELECT create_table_query FROM system.tables WHERE database = {d:String} "
        "AND name = {t:String}", parameters={"d": settings.clickhouse.database, "t": table},
    ).result_rows[0][0]


SINK_TABLES = {t.name: t.columns for t in Batch().tables()}


def test_every_table_the_sink_writes_has_a_contract(store) -> None:
    client, settings = store
    assert set(SINK_TABLES) == set(CONTRACTS)
    existing = {r[0] for r in client.query(
        "SELECT name FROM system.tables WHERE database = {d:String}",
        parameters={"d": settings.clickhouse.database}).result_rows}
    assert set(SINK_TABLES) <= existing
    # the other tables (roll-ups, bookkeeping) are filled by SQL from these, not from Kafka


@pytest.mark.parametrize("table", sorted(CONTRACTS))
def test_the_sink_writes_every_column_that_has_no_default(store, table: str) -> None:
    client, _ = store
    columns = describe(client, table)
    inserted = SINK_TABLES[table]
    assert set(inserted) <= set(columns), f"{table}: inserts columns the table lacks"
    plain = {name for name, (_, default) in columns.items() if not default}
    assert plain <= set(inserted), f"{table}: columns left to their type's default"


@pytest.mark.parametrize("table", sorted(CONTRACTS))
def test_contract_bounds_lie_inside_column_ranges(store, table: str) -> None:
    client, settings = store
    columns = describe(client, table)
    ddl = create_query(client, settings, table)
    fields = _fields(CONTRACTS[table])
    found: list[str] = []
    checked = 0
    for name in SINK_TABLES[table]:
        if (table, name) in NOT_FROM_CONTRACTS:
            continue
        c = narrowed_by_ddl(column(columns[name][0]), name, ddl)
        if (table, name) in RENAMED:
            field, kinds = RENAMED[table, name]
            t = _select(fields[field], kinds)
        else:
            assert name in fields, f"{table}.{name} matches no field of {CONTRACTS[table]}"
            t = fields[name]
        found += problems(t, c, f"{table}.{name} ({columns[name][0]})",
                          (table, name) in STRINGIFIED)
        checked += 1
    assert checked >= 5, "nothing was compared: the mapping is broken"
    assert not found, "\n".join(found)


def test_the_derivation_catches_what_it_should() -> None:
    """The checker itself can fail: the mismatches issue 8 found are reported."""
    u16 = column("UInt16")
    assert problems(mi.IntType(ge=1), u16, "schema_version")  # no upper bound
    assert problems(mi.IntType(ge=1, le=65536), u16, "schema_version")
    assert not problems(mi.IntType(ge=1, le=65535), u16, "schema_version")
    assert problems(mi.IntType(ge=0), column("Nullable(UInt64)"), "memory_bytes")
    dt = narrowed_by_ddl(column("DateTime64(3, 'UTC')"), "ts", "TTL toDateTime(ts) + 1")
    assert problems(mi.FloatType(ge=0.0, le=1e11), dt, "timestamp")
    assert not problems(mi.FloatType(ge=0.0, le=2**32 - 1), dt, "timestamp")
    assert problems(mi.FloatType(ge=0.0, le=5e9), dt, "timestamp")  # past 2106: TTL wraps
    assert not problems(mi.FloatType(ge=0.0, le=5e9), column("DateTime64(3)"), "t")
    assert problems(mi.DictType(mi.StrType(), mi.IntType()), column("Map(String, UInt64)"), "m")
    assert problems(mi.StrType(), column("UInt8"), "s")
    assert not problems(mi.FloatType(), column("Nullable(Float64)"), "f")


def test_none_never_reaches_a_column_that_is_not_nullable(store) -> None:
    """Optional fields of a minimal event / sample go where rows.py writes a default."""
    client, _ = store
    minimal = InferenceEvent(event_id="n", timestamp=1.0, model="m", latency_ms=1.0)
    sample = ResourceSample(timestamp=1.0, host="h")
    for table, names, cols in (
        ("events", EVENT_COLUMNS, event_columns([minimal], [0], [0])),
        ("resources", RESOURCE_COLUMNS, resource_columns([sample])),
    ):
        types = describe(client, table)
        for name, values in zip(names, cols, strict=True):
            if values[0] is None:
                assert types[name][0].startswith("Nullable("), f"{table}.{name} gets None"


# --- values at the bounds, stored and read back -------------------------------------------


def _extreme(t: Any, high: bool) -> Any:
    """The contract's own extreme value of a field (its bound, or its longest text)."""
    for m in _members(t):
        if isinstance(m, (mi.IntType, mi.FloatType)):
            low, top = _int_bounds(m)
            value = top if high else low
            if value is not None:
                return int(value) if isinstance(m, mi.IntType) else float(value)
        if isinstance(m, mi.StrType):
            return "é" * (m.max_length or 300) if high else "x" * (m.min_length or 0)
        if isinstance(m, mi.LiteralType):
            return m.values[-1 if high else 0]
        if isinstance(m, mi.BoolType):
            return high
    return None


def _at_bounds(contract: type[msgspec.Struct], high: bool, **fixed: Any) -> Any:
    """A decoded instance of ``contract`` with every scalar field at its bound."""
    info = mi.type_info(contract)
    values = {f.name: _extreme(f.type, high) for f in info.fields}
    values = {k: v for k, v in values.items() if v is not None} | fixed
    return msgspec.json.decode(msgspec.json.encode(values), type=contract)  # validated


def _full_maps() -> dict[str, Any]:
    numeric = {f"n{i:02d}" + "k" * 61: 1e15 if i % 2 else -1e15 for i in range(32)}
    text = {f"c{i:02d}" + "k" * 61: "é" * 256 for i in range(32)}
    return {"features": numeric | text,
            "attributes": {f"a{i:02d}" + "k" * 61: "é" * 256 for i in range(32)}}


@pytest.mark.parametrize("high", [False, True], ids=["low", "high"])
def test_events_at_every_bound_are_stored_and_read_back(store, high: bool) -> None:
    client, _ = store
    # the timestamp bound is the contract's, but the TTL would expire a 1970 row at once
    # and the test reads it back after insert: keep it inside the retention window
    stamp = float(int(time.time())) if not high else None
    fixed: dict[str, Any] = {"event_id": f"bound-{high}"} | _full_maps()
    if stamp is not None:
        fixed["timestamp"] = stamp
    event = _at_bounds(InferenceEvent, high, **fixed)
    client.insert("events", event_columns([event], [0], [2**63 - 1]),
                  column_names=EVENT_COLUMNS, column_oriented=True)
    rows = client.query("SELECT * EXCEPT ingested_at FROM events WHERE event_id = {e:String}",
                        parameters={"e": event.event_id}).named_results()
    row = next(iter(rows))
    expected = dict(zip(EVENT_COLUMNS, (c[0] for c in event_columns([event], [0], [2**63 - 1])),
                        strict=True))
    for name, value in expected.items():
        got = row[name]
        if name == "timestamp":
            got = round(got.replace(tzinfo=UTC).timestamp() * 1000)
        assert got == value, f"{name}: stored {got!r}, sent {value!r}"
    assert event.schema_version == (65535 if high else 1)  # the bound itself went through


@pytest.mark.parametrize("high", [False, True], ids=["low", "high"])
def test_resource_samples_at_every_bound_are_stored_and_read_back(store, high: bool) -> None:
    client, _ = store
    fixed = {"host": f"bound-{high}"}
    if not high:
        fixed["timestamp"] = float(int(time.time()))
    sample = _at_bounds(ResourceSample, high, **fixed)
    client.insert("resources", resource_columns([sample]), column_names=RESOURCE_COLUMNS,
                  column_oriented=True)
    row = next(iter(client.query(
        "SELECT * EXCEPT ingested_at FROM resources WHERE host = {h:String}",
        parameters={"h": sample.host}).named_results()))
    for name, value in zip(RESOURCE_COLUMNS, (c[0] for c in resource_columns([sample])),
                           strict=True):
        got = row[name]
        if name == "timestamp":
            got = round(got.replace(tzinfo=UTC).timestamp() * 1000)
        assert got == value, f"{name}: stored {got!r}, sent {value!r}"
    if high:
        assert sample.memory_bytes == 2**63 - 1
