"""The sink's insert path with values at, and just past, every bounded column it writes.

For every table the sink writes and every column whose type has a finite range (integers
and DateTime64, through Nullable, LowCardinality and Map values), the range is derived from
the engine's own ``DESCRIBE`` as ``test_bounds.py`` does. Rows take the real path: valid
records of each topic go through ``ClickHouseSink.collect``, then one row per column and
value past its range gets that value, set with ``msgspec.structs.replace`` (which does not
validate, as the contract would refuse it), among valid rows; ``insert`` runs on chDB.
The Kafka coordinates of ``events`` come from the record itself.

Past a bound: the insert does not raise, the valid rows are stored, the bad row is refused
with the table and an error naming the column, and its dead letter says ``store_refused``.
At a bound: the row is stored and reads back equal. Times are the exception to "the
column's range": DateTime64 holds 1900 … 2299 and a table's TTL reads its time as a 32-bit
DateTime, but the sink stores only the contracts' ``EpochSeconds`` (1970 … 2100), because a
later time would be deleted by the TTL on insert, without a trace. So a time is pushed past
both the column's range and that one, and stored at the bounds of that one (a TTL-read time
at 1970 is kept recent: retention deletes it at once, by design).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.config import Settings
from pipeline.quality.records import Fate, OutcomeBatch
from pipeline.sinks.clickhouse.batch import Batch, Refusal
from pipeline.sinks.clickhouse.writer import ClickHouseSink
from schemas.bounds import EPOCH_SECONDS_MAX
from schemas.feedback import FeedbackEvent
from schemas.metrics import CONTRACT_HEADER
from schemas.quality import QUALITY_CONTRACT
from schemas.scores import DriftScore
from tests.unit.sinks.test_bounds import (
    SINK_TABLES,
    Column,
    column,
    create_query,
    describe,
    narrowed_by_ddl,
)

# Where each table's rows sit in a Batch, and the column that tells this test's rows apart.
ROWS = {"events": "events", "resources": "resources", "window_metrics": "windows",
        "resource_metrics": "host_windows", "alerts": "alerts", "anomaly_scores": "scores",
        "drift_scores": "scores", "quality_windows": "quality_windows", "feedback": "fates",
        "audit": "audit"}
IDENTITY = {"events": "event_id", "resources": "host", "window_metrics": "series_key",
            "resource_metrics": "host", "alerts": "rule", "anomaly_scores": "series_key",
            "drift_scores": "series_key", "quality_windows": "series_key",
            "feedback": "feedback_id", "audit": "target"}
KAFKA = ("kafka_partition", "kafka_offset")  # events columns from the record, not the contract
DERIVED = {("feedback", "fate_rank")}  # computed by the sink from the status (0 … 3)


@dataclass(frozen=True)
class Bounded:
    """A column with a finite range: the range of its scalar, and the maps around it."""

    name: str
    range: Column  # kind "int" or "time"
    maps: int  # 0: the column itself; 1: Map(_, scalar); 2: Map(_, Map(_, scalar))
    ttl: bool  # a time the table reads as DateTime (TTL, partition key)

    def wrap(self, value: Any) -> Any:
        for _ in range(self.maps):
            value = {"k": value}
        return value

    def past(self) -> list[float]:
        c = self.range
        if c.kind == "int":
            return [c.low - 1, c.high + 1]
        column_past = {c.low - 0.001, math.floor(c.high) + 1}  # one tick below, next second
        sink_past = {-0.001, EPOCH_SECONDS_MAX + 0.001}  # what rows.py stores, see above
        return [*sorted(column_past | sink_past), -math.inf, math.inf, math.nan]

    def bounds(self) -> tuple[float, float]:
        c = self.range
        if c.kind == "int":
            return c.low, c.high
        return max(c.low, 0.0), min(c.high, EPOCH_SECONDS_MAX)


def bounded(client: Any, settings: Settings, table: str) -> list[Bounded]:
    types = describe(client, table)
    ddl = create_query(client, settings, table)
    out = []
    for name in SINK_TABLES[table]:
        if (table, name) in DERIVED:
            continue
        wide = column(types[name][0])
        c, maps = narrowed_by_ddl(wide, name, ddl), 0
        while c.kind == "map":
            c, maps = c.args[1], maps + 1
        assert not (c.kind == "array" and c.args[0].kind in ("int", "time")), (
            f"{table}.{name}: arrays of bounded values need a case here")
        if c.kind in ("int", "time"):
            assert not (maps and c.kind == "time"), f"{table}.{name}: times in a map"
            out.append(Bounded(name, c, maps, c.kind == "time" and c != wide))
    return out


def _value(table: str, ident: str, now: float) -> tuple[dict[str, Any], list]:
    """A valid message of ``table``'s contract whose identity column is ``ident``."""
    window = {"window_start": now - 60, "window_end": now - 50}
    if table == "events":
        return {"event_id": ident, "timestamp": now - 5, "model": "m", "latency_ms": 1.0}, []
    if table == "resources":
        return {"host": ident, "timestamp": now - 5, "cpu_util": 0.5}, []
    if table == "window_metrics":
        return {"series_key": ident, "requests": 3} | window, []
    if table == "resource_metrics":
        return {"host": ident, "samples": 3} | window, [(CONTRACT_HEADER, b"ResourceMetrics")]
    if table == "quality_windows":
        return ({"series_key": ident, "basis": "inference_time", "inferences": 3} | window,
                [(CONTRACT_HEADER, QUALITY_CONTRACT)])
    if table == "feedback":  # a fate in an outcome batch (msgpack, see _encode)
        feedback = {"feedback_id": ident, "event_id": "e", "timestamp": now - 5,
                    "kind": "satisfaction", "satisfaction": 1.0}
        return {"feedback": feedback, "status": "joined", "series_key": "model=m",
                "inference_time": now - 9}, []
    if table == "audit":  # the id is 32 hex digits: the target tells this test's rows apart
        return {"id": hashlib.sha256(ident.encode()).hexdigest()[:32], "at": now - 5,
                "actor": "tester", "action": "silence.add", "target": ident,
                "source": "cli"}, []
    if table == "alerts":
        fingerprint = hashlib.sha256(ident.encode()).hexdigest()[:16]
        return {"fingerprint": fingerprint, "rule": ident, "state": "firing",
                "severity": "warning", "starts_at": now - 50} | window, []
    drift = [{"name": "latency_ms", "kind": "numeric", "statistic": "psi", "value": 0.1,
              "threshold": 0.2, "drifted": False, "reference_count": 5, "current_count": 5}]
    return {"series_key": ident, "drift": drift if table == "drift_scores" else []} | window, []


def _topic(settings: Settings, table: str) -> str:
    topics = settings.topics
    return {"events": topics.events, "resources": topics.resources, "alerts": topics.alerts,
            "anomaly_scores": topics.scores, "drift_scores": topics.scores,
            "feedback": topics.outcomes, "audit": topics.audit}.get(table, topics.metrics)


def _encode(table: str, value: dict[str, Any]) -> bytes:
    """The record's bytes: JSON, or for feedback the join's msgpack outcome batch."""
    if table != "feedback":
        return msgspec.json.encode(value)
    fate = Fate(msgspec.convert(value["feedback"], FeedbackEvent), value["status"],
                value["series_key"], value["inference_time"])
    return msgspec.msgpack.encode(OutcomeBatch(0, 1, fate.series_key, fates=[fate]))


def _put(table: str, row: Any, name: str, value: Any) -> Any:
    """``row`` with field ``name`` set to ``value``, unvalidated (a drift field: its entry)."""
    if table == "drift_scores" and name in DriftScore.__struct_fields__:
        return msgspec.structs.replace(
            row, drift=[msgspec.structs.replace(row.drift[0], **{name: value})])
    if table == "feedback" and name in FeedbackEvent.__struct_fields__:
        return msgspec.structs.replace(
            row, feedback=msgspec.structs.replace(row.feedback, **{name: value}))
    return msgspec.structs.replace(row, **{name: value})


def _identity(table: str, refusal: Refusal) -> str:
    row = refusal.row[0] if isinstance(refusal.row, tuple) else refusal.row  # drift: its window
    return _ident(table, row)


def _ident(table: str, row: Any) -> str:
    return row.feedback.feedback_id if table == "feedback" else getattr(row, IDENTITY[table])


def write(store: tuple[Any, Settings], table: str,
          rows: dict[str, dict[str, Any]]) -> tuple[ClickHouseSink, Batch]:
    """Collect one record per row (``ident -> {column: value}``), set the values, insert."""
    client, settings = store
    sink = ClickHouseSink(settings, client)
    sink.prepare()  # as the sink's run does: quiet clickhouse-connect's serialisation tracebacks
    now = time.time()
    records: dict[TopicPartition, list[ConsumerRecord]] = {}
    for offset, (ident, values) in enumerate(rows.items()):
        value, headers = _value(table, ident, now)
        raw = _encode(table, value)
        tp = TopicPartition(_topic(settings, table), values.get("kafka_partition", offset % 3))
        msg = ConsumerRecord(tp.topic, tp.partition, values.get("kafka_offset", offset), 0, 0,
                             ident.encode(), raw, None, 0, len(raw),
                             [("content-type", b"application/json"), *headers])
        records.setdefault(tp, []).append(msg)
    batch = Batch()
    sink.collect(records, batch)
    assert batch.rejected == 0 and not batch.letters, "a valid record was rejected"
    decoded: Any = getattr(batch, ROWS[table])
    assert len(decoded) == len(rows)
    for i, row in enumerate(decoded.items):
        for name, value in rows[_ident(table, row)].items():
            if name not in KAFKA:
                row = _put(table, row, name, value)
        decoded.items[i] = row
    sink.insert(batch)  # must not raise: every refusal is isolated
    return sink, batch


def stored(client: Any, table: str, prefix: str) -> list[str]:
    ident = IDENTITY[table]
    return [r[0] for r in client.query(
        f"SELECT {ident} FROM {table} FINAL WHERE startsWith({ident}, {{p:String}}) "
        f"ORDER BY {ident}", parameters={"p": prefix}).result_rows]


TABLES = sorted(ROWS)


def test_every_table_the_sink_writes_is_covered() -> None:
    assert set(TABLES) == set(SINK_TABLES)


@pytest.mark.parametrize("table", TABLES)
def test_a_value_past_a_column_range_is_refused_alone_and_dead_lettered(store, table) -> None:
    client, settings = store
    columns = bounded(client, settings, table)
    assert columns, f"{table}: no bounded column found, the derivation is broken"
    prefix = f"past-{table}-"
    bad = {f"{prefix}{b.name}-{i}": (b.name, b.wrap(v))
           for b in columns for i, v in enumerate(b.past())}
    good = [f"{prefix}ok-{i}" for i in range(4)]
    order = list(bad)
    order[len(order) // 2:len(order) // 2] = good[1:3]  # valid rows first, between and last
    rows = {ident: dict([bad[ident]]) if ident in bad else {}
            for ident in [good[0], *order, good[3]]}

    sink, batch = write(store, table, rows)

    assert stored(client, table, prefix) == sorted(good)
    refused = {_identity(table, r): r for r in batch.refused if r.table == table}
    assert sorted(refused) == sorted(bad), "every bad row refused, no valid one"
    for ident, refusal in refused.items():
        name, value = bad[ident]
        assert name in refusal.error, f"{ident} = {value!r}: {refusal.error}"
        assert refusal.error.split(":")[0] in ("DataError", "ValueError"), refusal.error
        headers = dict(sink.letter(refusal).headers)
        assert headers["inferwatch-source-topic"] == _topic(settings, table).encode()
        assert headers["inferwatch-error-reason"] == b"store_refused"
        assert headers["inferwatch-error-detail"].startswith(f"{table}: ".encode())
    # a window's own fields are refused by both scores tables; nothing valid anywhere
    assert {_identity(table, r) for r in batch.refused} <= set(bad)


@pytest.mark.parametrize("table", TABLES)
def test_a_value_at_every_column_bound_is_stored_and_read_back(store, table) -> None:
    client, settings = store
    columns = bounded(client, settings, table)
    prefix = f"bound-{table}-"
    rows: dict[str, dict[str, Any]] = {}
    for side in (0, 1):
        rows[f"{prefix}{side}"] = {b.name: b.wrap(b.bounds()[side]) for b in columns
                                   if side or not b.ttl}
    if all(b.ttl for b in columns):  # audit: its one bounded column is the TTL's time,
        del rows[f"{prefix}0"]  # whose low bound the TTL would delete on insert

    _, batch = write(store, table, rows)

    assert [(r.table, r.error) for r in batch.refused] == []
    ident = IDENTITY[table]
    select = ", ".join(f"toUnixTimestamp64Milli({b.name})" if b.range.kind == "time"
                       else b.name for b in columns)
    for key, sent in rows.items():
        got = client.query(f"SELECT {select} FROM {table} FINAL WHERE {ident} = {{i:String}}",
                           parameters={"i": key}).result_rows
        assert len(got) == 1, f"{key} not stored"
        for b, value in zip(columns, got[0], strict=True):
            if b.name not in sent:
                continue
            expected = round(sent[b.name] * 1000) if b.range.kind == "time" else sent[b.name]
            assert value == expected, f"{table}.{b.name}: stored {value!r}, sent {expected!r}"
    assert columns and all(rows.values()), "nothing was pushed to a bound"
