"""The sink never blocks on one bad row: refused rows are isolated, dead-lettered, counted.

The bisection is pure (``pipeline.sinks.clickhouse.isolate``) and tested with a fake insert; the
same path is then run against the real ClickHouse engine (embedded chDB) with rows a
column cannot hold, and against a server-side refusal (a table constraint).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)

from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.isolate import isolate
from pipeline.sinks.clickhouse.writer import ClickHouseSink, refused_by_store
from schemas.event import InferenceEvent

# --- the pure bisection -------------------------------------------------------------------


class FakeStore:
    """Refuses any insert holding a negative row; records every insert call."""

    def __init__(self, transient_after: int | None = None) -> None:
        self.stored: list[int] = []
        self.calls: list[Sequence[int]] = []
        self.transient_after = transient_after

    def insert(self, rows: Sequence[int]) -> None:
        self.calls.append(list(rows))
        if self.transient_after is not None and len(self.calls) > self.transient_after:
            raise ConnectionResetError("store went away")
        bad = [r for r in rows if r < 0]
        if bad:
            raise ValueError(f"value {bad[0]} out of range")
        self.stored.extend(rows)


def data_error(exc: BaseException) -> bool:
    return isinstance(exc, ValueError)


def test_a_clean_batch_is_one_insert() -> None:
    store = FakeStore()
    assert isolate(list(range(100)), store.insert, data_error) == []
    assert len(store.calls) == 1 and store.stored == list(range(100))


def test_nothing_to_insert_inserts_nothing() -> None:
    store = FakeStore()
    assert isolate([], store.insert, data_error) == []
    assert store.calls == []


def test_one_bad_row_is_isolated_in_logarithmic_inserts() -> None:
    n = 1024
    rows = list(range(n))
    rows[700] = -700
    store = FakeStore()
    refused = isolate(rows, store.insert, data_error)
    assert [(r.row, r.error) for r in refused] == [(-700, "ValueError: value -700 out of range")]
    assert sorted(store.stored) == sorted(r for r in rows if r >= 0)
    assert len(store.calls) <= 2 * math.log2(n) + 1


def test_several_bad_rows_keep_their_order_and_every_good_row_is_stored() -> None:
    rows = [1, -2, 3, 4, -5, 6, 7, -8, -9]
    store = FakeStore()
    refused = isolate(rows, store.insert, data_error)
    assert [r.row for r in refused] == [-2, -5, -8, -9]
    assert sorted(store.stored) == [1, 3, 4, 6, 7]


def test_every_row_bad_returns_every_row() -> None:
    store = FakeStore()
    refused = isolate([-1, -2, -3], store.insert, data_error)
    assert [r.row for r in refused] == [-1, -2, -3] and store.stored == []


def test_a_transient_error_is_not_split_but_raised() -> None:
    store = FakeStore(transient_after=0)
    with pytest.raises(ConnectionResetError):
        isolate([1, 2, 3, 4], store.insert, data_error)
    assert len(store.calls) == 1  # no bisection on an outage


def test_a_transient_error_during_bisection_is_raised() -> None:
    store = FakeStore(transient_after=2)
    with pytest.raises(ConnectionResetError):
        isolate([1, -2, 3, 4], store.insert, data_error)


def test_the_error_class_decides_what_is_split() -> None:
    assert refused_by_store(DataError("Unable to create native array for column `x`"))
    assert refused_by_store(DatabaseError("Code: 469. violated", code=469))
    assert refused_by_store(DatabaseError("type mismatch", name="TYPE_MISMATCH"))
    assert refused_by_store(OverflowError("cannot convert float infinity to integer"))
    assert not refused_by_store(OperationalError("Error executing HTTP request"))
    assert not refused_by_store(DatabaseError("Code: 241. memory", code=241))
    assert not refused_by_store(ProgrammingError("Code: 60. no table", code=60))
    assert not refused_by_store(ConnectionRefusedError())
    assert not refused_by_store(TimeoutError())
    assert not refused_by_store(MemoryError())


# --- the real engine ----------------------------------------------------------------------


def event(event_id: str, **fields: Any) -> InferenceEvent:
    base: dict[str, Any] = {"event_id": event_id, "timestamp": time.time() - 5, "model": "m",
                            "latency_ms": 12.0}
    return InferenceEvent(**(base | fields))


def stored_ids(client: Any, prefix: str) -> list[str]:
    rows = client.query(
        "SELECT event_id FROM events FINAL WHERE startsWith(event_id, {p:String}) "
        "ORDER BY event_id", parameters={"p": prefix}).result_rows
    return [r[0] for r in rows]


def test_chdb_stores_the_good_rows_and_refuses_the_out_of_range_one(store) -> None:
    client, settings = store
    sink = ClickHouseSink(settings, client)
    batch = Batch()
    # one message holding a batch of 20 events; event 13 then gets a value UInt16 cannot
    # hold (set after decoding: the contract refuses it since issue 8, the table must too)
    tp = TopicPartition(settings.topics.events, 3)
    sink.collect({tp: [record(tp, 41, [event(f"iso-{i:02d}") for i in range(20)])]}, batch)
    assert len(batch.events) == 20
    batch.events.items[13].schema_version = 65536

    sink.insert(batch)

    assert stored_ids(client, "iso-") == [f"iso-{i:02d}" for i in range(20) if i != 13]
    [refusal] = batch.refused
    assert refusal.table == "events" and refusal.row.event_id == "iso-13"
    assert "schema_version" in refusal.error and "65535" in refusal.error  # the DB's words

    letter = sink.letter(refusal)
    headers = dict(letter.headers)
    assert headers["inferwatch-error-reason"] == b"store_refused"
    assert headers["inferwatch-error-detail"].startswith(b"events: DataError")
    assert headers["inferwatch-source-topic"] == settings.topics.events.encode()
    assert (headers["inferwatch-source-partition"], headers["inferwatch-source-offset"]) == (
        b"3", b"41")
    assert headers["inferwatch-batch-index"] == b"13"
    assert headers["content-type"] == b"application/json"
    assert headers["inferwatch-original-content-type"] == b"application/msgpack"
    assert "content-encoding" not in {k.lower() for k in headers}
    assert headers["x-trace"] == b"abc"  # the producer's own headers are kept
    assert letter.key == b"key-41"
    refused_row = msgspec.json.decode(letter.value)  # as the sink had it, refused value included
    assert (refused_row["event_id"], refused_row["schema_version"]) == ("iso-13", 65536)


def test_a_message_of_one_event_is_dead_lettered_as_it_came(store) -> None:
    client, settings = store
    sink = ClickHouseSink(settings, client)
    batch = Batch()
    tp = TopicPartition(settings.topics.events, 0)
    raw = msgspec.json.encode(event("one-bad"))
    msg = ConsumerRecord(tp.topic, 0, 7, 0, 0, None, raw, None, 0, len(raw),
                         [("content-type", b"application/json")])
    sink.collect({tp: [msg, record(tp, 8, [event("one-good")])]}, batch)
    batch.events.items[0].input_tokens = 1 << 32  # UInt32 cannot hold it

    sink.insert(batch)

    assert stored_ids(client, "one-") == ["one-good"]
    [refusal] = batch.refused
    letter = sink.letter(refusal)
    assert letter.value == raw  # the original bytes, untouched
    headers = dict(letter.headers)
    assert "inferwatch-batch-index" not in headers
    assert b"input_tokens" in headers["inferwatch-error-detail"]


def test_chdb_server_side_refusal_is_isolated_too(store) -> None:
    """A constraint is checked by the engine, not by the client: the same isolation."""
    client, _ = store
    client.command("CREATE TABLE IF NOT EXISTS checked (x UInt8, CONSTRAINT small CHECK x < 10) "
                   "ENGINE = MergeTree ORDER BY x")

    def insert(rows: Sequence[int]) -> None:
        client.insert("checked", [list(rows)], column_names=["x"], column_oriented=True)

    refused = isolate([1, 2, 30, 4, 5], insert, refused_by_store)
    assert [r.row for r in refused] == [30]
    assert "VIOLATED_CONSTRAINT" in refused[0].error
    assert sorted(r[0] for r in client.query("SELECT x FROM checked").result_rows) == [1, 2, 4, 5]


def test_a_retry_after_a_transient_error_skips_the_tables_already_written(store) -> None:
    client, settings = store

    class Flaky:
        """The real client, except the first insert into resources fails as if down."""

        def __init__(self) -> None:
            self.inserts: list[str] = []
            self.failed = False

        def insert(self, table: str, *args: Any, **kw: Any) -> None:
            self.inserts.append(table)
            if table == "resources" and not self.failed:
                self.failed = True
                raise OperationalError("Error executing HTTP request: connection refused")
            client.insert(table, *args, **kw)

    flaky = Flaky()
    sink = ClickHouseSink(settings, flaky)
    batch = Batch()
    events_tp = TopicPartition(settings.topics.events, 1)
    resources_tp = TopicPartition(settings.topics.resources, 1)
    sample = {"timestamp": time.time() - 5, "host": "h1", "cpu_util": 0.5}
    raw = msgspec.json.encode(sample)
    sink.collect({
        events_tp: [record(events_tp, 1, [event("flaky-1")])],
        resources_tp: [ConsumerRecord(resources_tp.topic, 1, 1, 0, 0, None, raw, None, 0,
                                      len(raw), [])],
    }, batch)
    with pytest.raises(OperationalError):
        sink.insert(batch)
    sink.insert(batch)
    assert flaky.inserts == ["events", "resources", "resources"]
    assert batch.refused == []


def test_refused_rows_are_delivered_once_even_when_the_broker_fails_some(store) -> None:
    client, settings = store
    sink = ClickHouseSink(settings, client)
    batch = Batch()
    tp = TopicPartition(settings.topics.events, 2)
    sink.collect({tp: [record(tp, 5, [event(f"dlq-{i}") for i in range(4)])]}, batch)
    for e in batch.events.items[1:3]:
        e.schema_version = 70000
    sink.insert(batch)
    assert [r.row.event_id for r in batch.refused] == ["dlq-1", "dlq-2"]

    class Producer:
        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.attempts = 0

        async def send(self, topic: str, value: bytes, key: bytes | None = None,
                       headers: Any = None) -> asyncio.Future:
            assert topic == settings.topics.dlq
            self.attempts += 1
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            if self.attempts == 2:  # the second letter fails the first time
                future.set_exception(ConnectionResetError("broker away"))
            else:
                self.sent.append(value)
                future.set_result(None)
            return future

    producer = Producer()
    settings_fast = msgspec.structs.replace(
        settings, worker=msgspec.structs.replace(settings.worker, sink_retry_max_seconds=0.01))
    sink.settings = settings_fast
    delivered = asyncio.run(sink._deliver_refused(producer, batch, asyncio.Event()))
    assert delivered
    ids = sorted(msgspec.json.decode(v)["event_id"] for v in producer.sent)
    assert ids == ["dlq-1", "dlq-2"]  # each once, the failed one retried alone
    assert producer.attempts == 3
    assert stored_ids(client, "dlq-") == ["dlq-0", "dlq-3"]



def test_stopping_while_the_dlq_is_down_does_not_report_delivery(store) -> None:
    """No commit without the dead letters: a stop during a broker outage returns False."""
    client, settings = store
    sink = ClickHouseSink(settings, client)
    batch = Batch()
    tp = TopicPartition(settings.topics.events, 5)
    sink.collect({tp: [record(tp, 1, [event("stop-0"), event("stop-1")])]}, batch)
    batch.events.items[1].schema_version = 70000
    sink.insert(batch)
    assert len(batch.refused) == 1

    class Down:
        async def send(self, *args: Any, **kw: Any) -> asyncio.Future:
            raise ConnectionRefusedError("broker down")

    async def scenario() -> bool:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        return await sink._deliver_refused(Down(), batch, stop)

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=10)) is False

def test_refused_rows_are_counted(store) -> None:
    client, settings = store
    sink = ClickHouseSink(settings, client)
    batch = Batch()
    tp = TopicPartition(settings.topics.events, 4)
    sink.collect({tp: [record(tp, 9, [event(f"count-{i}") for i in range(3)])]}, batch)
    batch.events.items[0].http_status = 70000
    sink.insert(batch)

    class Consumer:
        async def commit(self, offsets: dict) -> None:
            self.offsets = offsets

    consumer = Consumer()
    asyncio.run(sink._commit(consumer, batch))
    assert (sink.stats.events, sink.stats.refused) == (2, 1)
    assert consumer.offsets == {tp: 10}


def record(tp: TopicPartition, offset: int, events: list[InferenceEvent]) -> ConsumerRecord:
    """A Kafka record holding ``events`` as one MessagePack batch."""
    value = msgspec.msgpack.encode(events)
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, f"key-{offset}".encode(),
                          value, None, 0, len(value),
                          [("content-type", b"application/msgpack"), ("x-trace", b"abc")])



def _unknown_refusal(rows_of: Callable[[Any], list[str]], client: Any) -> Any:
    """The real client, except a row with event_id 'odd-bad' makes the store fail with an
    error code the sink does not know (neither an outage nor a listed data error)."""

    class Odd:
        def __init__(self) -> None:
            self.calls = 0

        def insert(self, table: str, data: Any, **kw: Any) -> None:
            self.calls += 1
            if table == "events" and "odd-bad" in rows_of(data):
                raise DatabaseError("Code: 999. DB::Exception: something nobody listed")
            client.insert(table, data, **kw)

    return Odd()


def test_a_row_failing_with_an_unknown_error_is_isolated_after_a_few_tries(store) -> None:
    """No error code list is complete: a batch that keeps failing with an error that is
    not an outage is isolated row by row instead of retried forever."""
    client, settings = store
    odd = _unknown_refusal(lambda columns: columns[0], client)
    sink = ClickHouseSink(settings, odd)
    sink._pause = _no_pause  # type: ignore[method-assign]
    batch = Batch()
    tp = TopicPartition(settings.topics.events, 2)
    sink.collect({tp: [record(tp, 5, [event("odd-good1"), event("odd-bad"),
                                      event("odd-good2")])]}, batch)

    assert asyncio.run(sink._insert_until_done(batch, asyncio.Event()))

    assert stored_ids(client, "odd-") == ["odd-good1", "odd-good2"]
    assert [r.row.event_id for r in batch.refused] == ["odd-bad"]
    assert "Code: 999" in batch.refused[0].error
    assert sink.stats.insert_failures == 3  # then isolated, not retried forever


def test_a_store_that_refuses_every_row_alone_is_retried_not_dead_lettered(store) -> None:
    _, settings = store

    class Broken:
        def insert(self, table: str, data: Any, **kw: Any) -> None:
            raise DatabaseError("Code: 998. DB::Exception: the store is unwell")

    sink = ClickHouseSink(settings, Broken())
    sink._pause = _stop_after(6)  # type: ignore[method-assign]
    batch = Batch()
    tp = TopicPartition(settings.topics.events, 2)
    sink.collect({tp: [record(tp, 6, [event("all-1"), event("all-2")])]}, batch)

    assert not asyncio.run(sink._insert_until_done(batch, asyncio.Event()))
    assert batch.refused == []  # nothing dead-lettered for the store's own trouble


async def _no_pause(stop: asyncio.Event, delay: float) -> bool:
    return True


def _stop_after(n: int) -> Callable[[asyncio.Event, float], Any]:
    calls = {"n": 0}

    async def pause(stop: asyncio.Event, delay: float) -> bool:
        calls["n"] += 1
        return calls["n"] < n

    return pause
