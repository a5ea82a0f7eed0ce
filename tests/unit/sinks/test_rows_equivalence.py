"""``event_columns`` stores exactly what the contract says, column by column.

The expected row is written out once per event below, plainly, as the specification
(the sink's builder is tuned for speed, this is not). Simulated traffic and hand-made
edge cases (every optional field absent, integer features, a numeric prediction, times
at both bounds and on a rounding tie) are built both ways, compared as columns, and
stored through the sink's real path (``collect`` → ``insert`` on chDB) beside the same
rows inserted from the specification: every column reads back identical.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.dev.simulate import TrafficModel
from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS, event_columns
from pipeline.sinks.clickhouse.writer import ClickHouseSink
from schemas.bounds import EPOCH_SECONDS_MAX
from schemas.event import InferenceEvent


def expected_row(e: InferenceEvent, partition: int, offset: int) -> dict[str, Any]:
    """One ``events`` row as the contract defines it (the specification)."""
    row = {name: getattr(e, name) for name in EVENT_COLUMNS if hasattr(e, name)}
    row |= {
        "timestamp": round(e.timestamp * 1000),
        "request_id": e.request_id or "", "trace_id": e.trace_id or "",
        "span_id": e.span_id or "", "error_type": e.error_type or "",
        "finish_reason": e.finish_reason or "", "http_status": e.http_status or 0,
        "cost_source": e.cost_source or "",
        "prediction": "" if e.prediction is None else str(e.prediction),
        "features_num": {k: float(v) for k, v in e.features.items() if not isinstance(v, str)},
        "features_cat": {k: v for k, v in e.features.items() if isinstance(v, str)},
        "kafka_partition": partition, "kafka_offset": offset,
    }
    assert set(row) == set(EVENT_COLUMNS)
    return row


def expected_columns(events: list[InferenceEvent], partitions: list[int],
                     offsets: list[int]) -> list[list]:
    rows = [expected_row(*r) for r in zip(events, partitions, offsets, strict=True)]
    return [[r[name] for r in rows] for name in EVENT_COLUMNS]


def edge_events() -> list[InferenceEvent]:
    full = dict(request_id="r", trace_id="t" * 32, span_id="s" * 16, service="svc",
                environment="prod", tenant="acme", user="u1", region="eu", model_version="2",
                provider="p", operation="chat", status="error", error_type="timeout",
                http_status=504, finish_reason="length", time_to_first_token_ms=1.25,
                queue_wait_ms=0.0, time_per_output_token_ms=3.5, input_tokens=0,
                output_tokens=100_000_000, cache_read_tokens=7, cache_hit=False,
                cost_usd=1e-9, cost_source="given", confidence=1.0, feedback_score=0.0,
                attributes={"k": "", "deployment": "canary"})
    return [
        InferenceEvent(event_id="edge-bare", timestamp=1.0, model="m", latency_ms=0.0),
        InferenceEvent(event_id="edge-full", timestamp=1_700_000_000.123, model="m",
                       latency_ms=86_400_000.0, prediction=0.1,
                       features={"n": 3, "f": -1e15, "c": "x", "e": ""}, **full),
        InferenceEvent(event_id="edge-zero", timestamp=0.0, model="m", latency_ms=1.0,
                       prediction=1e15, features={"only_num": 2.5}),
        InferenceEvent(event_id="edge-max", timestamp=EPOCH_SECONDS_MAX, model="m",
                       latency_ms=1.0, prediction="7", features={"only_cat": "7"}),
        InferenceEvent(event_id="edge-tie", timestamp=1_700_000_000.0005, model="m",
                       latency_ms=1.0, prediction=-0.0, http_status=100),
    ]


def simulated(n: int) -> list[InferenceEvent]:
    traffic = TrafficModel(seed=3, id_prefix="equiv")
    start = time.time() - 120
    return [r for _, r in traffic.stream(n / 30, 30.0, start, resources=False)][:n]


def test_columns_equal_the_specification_for_simulated_and_edge_events() -> None:
    events = simulated(2_000) + edge_events()
    partitions = [i % 7 for i in range(len(events))]
    offsets = [10 * i for i in range(len(events))]
    got = event_columns(events, partitions, offsets)
    want = expected_columns(events, partitions, offsets)
    for name, g, w in zip(EVENT_COLUMNS, got, want, strict=True):
        assert g == w, name
        # same types too: 1 == 1.0 would hide an int where ClickHouse expects a float
        assert [type(v) for v in g] == [type(v) for v in w], name


def test_no_events_give_empty_columns() -> None:
    assert event_columns([], [], []) == [[] for _ in EVENT_COLUMNS]


@pytest.mark.parametrize("seconds", [-0.001, EPOCH_SECONDS_MAX + 0.001, float("nan"),
                                     float("inf")])
def test_a_time_outside_the_stored_range_is_refused_by_name(seconds: float) -> None:
    bad = msgspec.structs.replace(edge_events()[0], timestamp=seconds)  # does not validate
    with pytest.raises(ValueError, match=r"timestamp: .* outside the stored times"):
        event_columns([edge_events()[1], bad], [0, 0], [0, 1])


def test_kafka_coordinates_must_match_the_events() -> None:
    with pytest.raises(ValueError):
        event_columns(edge_events()[:2], [0], [0, 1])


def test_a_batch_stored_by_the_sink_reads_back_as_the_specification(store) -> None:
    client, settings = store
    client.command("CREATE TABLE IF NOT EXISTS events_spec AS events")
    # Times of 1970 or 2023 would be deleted on insert by the table's TTL (by design, see
    # test_sink_insert_bounds.py): the edge cases are stored recent, 2100 excepted.
    recent = time.time() - 60
    edges = [e if e.timestamp == EPOCH_SECONDS_MAX
             else msgspec.structs.replace(e, timestamp=recent + i / 7)
             for i, e in enumerate(edge_events())]
    events = simulated(3_000) + edges
    tp = TopicPartition(settings.topics.events, 5)
    records = []
    for i, first in enumerate(range(0, len(events), 500)):
        value = msgspec.json.encode(events[first:first + 500])
        records.append(ConsumerRecord(tp.topic, tp.partition, 100 + i, 0, 0, None, value, None,
                                      0, len(value), [("content-type", b"application/json")]))
    sink = ClickHouseSink(settings, client)
    batch = Batch()
    settings.limits.max_future_seconds = 1e10  # 2100 is a valid contract, far ahead
    sink.collect({tp: records}, batch)
    assert len(batch.events) == len(events) and batch.rejected == 0
    sink.insert(batch)
    assert batch.refused == []

    decoded = batch.events.items  # as the sink decoded them (msgspec: ints became floats)
    partitions = [r.partition for r in batch.events.records]
    offsets = [r.offset for r in batch.events.records]
    client.insert("events_spec", expected_columns(decoded, partitions, offsets),
                  column_names=EVENT_COLUMNS, column_oriented=True)

    def read(table: str) -> list[tuple]:
        names = ", ".join(f"`{n}`" for n in EVENT_COLUMNS)
        return client.query(f"SELECT {names} FROM {table} ORDER BY event_id").result_rows

    stored, spec = read("events"), read("events_spec")
    assert len(stored) == len(spec) == len(events)
    for name, got, want in zip(EVENT_COLUMNS, zip(*stored, strict=True), zip(*spec, strict=True),
                               strict=True):
        assert got == want, name
