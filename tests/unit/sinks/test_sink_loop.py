"""The sink's loop with a fake consumer and store: the next batch is fetched and decoded
while one is inserted, yet batches commit one at a time, in order, each after its own
insert; a stop fetches nothing more and stores (and commits) what was already fetched.
The cycle collector waits while a batch is decoded or written, and only then.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import msgspec
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.config import Settings
from pipeline.runtime.memory_tuning import COLLECTOR_PAUSED
from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.writer import ClickHouseSink

SETTINGS = Settings()
TP = TopicPartition(SETTINGS.topics.events, 0)


def record(offset: int) -> ConsumerRecord:
    event = {"event_id": f"loop-{offset}", "timestamp": time.time() - 5, "model": "m",
             "latency_ms": 1.0}
    value = msgspec.json.encode(event)
    return ConsumerRecord(TP.topic, 0, offset, 0, 0, None, value, None, 0, len(value),
                          [("content-type", b"application/json")])


class Log:
    """What happened, in order, from the loop and from the insert thread."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def add(self, what: str, offset: int) -> None:
        with self.lock:
            self.lines.append((what, offset))

    def index(self, what: str, offset: int) -> int:
        return self.lines.index((what, offset))


class Consumer:
    """One record per ``getmany``, offsets 0 … n-1; then nothing."""

    def __init__(self, log: Log, n: int) -> None:
        self.log, self.pending = log, [record(i) for i in range(n)]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if not self.pending:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        msg = self.pending.pop(0)
        self.log.add("fetched", msg.offset)
        return {TP: [msg]}

    async def commit(self, offsets: dict) -> None:
        self.log.add("committed", offsets[TP] - 1)


class Producer:
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class Store:
    """Inserts take ``seconds`` each (in the sink's insert thread); ``on_insert`` is
    called as each begins."""

    def __init__(self, log: Log, seconds: float, on_insert: Any = None) -> None:
        self.log, self.seconds, self.on_insert = log, seconds, on_insert

    def insert(self, table: str, columns: list[list], **_: Any) -> None:
        offset = columns[-1][0]  # kafka_offset
        self.log.add("insert", offset)
        if self.on_insert is not None:
            self.on_insert(offset)
        time.sleep(self.seconds)
        self.log.add("stored", offset)


def sink_with(log: Log, store: Store, n: int) -> ClickHouseSink:
    worker = msgspec.structs.replace(SETTINGS.worker, sink_batch_size=1,
                                     sink_flush_seconds=0.05, rollup_interval_seconds=3600)
    sink = ClickHouseSink(msgspec.structs.replace(SETTINGS, worker=worker), store)
    consumer = Consumer(log, n)
    sink.prepare = lambda: None  # type: ignore[method-assign]
    sink._consumer = lambda: consumer  # type: ignore[method-assign]
    sink._producer = lambda: Producer()  # type: ignore[method-assign]
    return sink


async def run_until(sink: ClickHouseSink, log: Log, done: Any, stop: asyncio.Event) -> None:
    task = asyncio.create_task(sink.run(stop))
    for _ in range(500):
        if done() or task.done():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=10)


def test_the_next_batch_is_fetched_during_an_insert_and_commits_stay_in_order() -> None:
    log = Log()
    sink = sink_with(log, Store(log, seconds=0.1), n=4)
    asyncio.run(run_until(sink, log, lambda: ("committed", 3) in log.lines, asyncio.Event()))

    assert [o for what, o in log.lines if what == "committed"] == [0, 1, 2, 3]
    for k in range(4):
        assert log.index("stored", k) < log.index("committed", k)
    for k in range(3):
        # one batch at a time: the next insert begins only after the commit before it
        assert log.index("committed", k) < log.index("insert", k + 1)
        # ... but it was fetched (and decoded) while the batch before was being stored
        assert log.index("fetched", k + 1) < log.index("stored", k)
    assert sink.stats.events == 4 and sink.stats.batches == 4


def test_a_stop_stores_what_was_fetched_and_fetches_nothing_more() -> None:
    log = Log()
    stop = asyncio.Event()
    loop: list[asyncio.AbstractEventLoop] = []

    def on_insert(offset: int) -> None:
        if offset == 1:  # stop while batch 1 is stored and batch 2 is being fetched
            loop[0].call_soon_threadsafe(stop.set)

    sink = sink_with(log, Store(log, seconds=0.2, on_insert=on_insert), n=5)

    async def scenario() -> None:
        loop.append(asyncio.get_running_loop())
        await run_until(sink, log, lambda: False, stop)

    asyncio.run(scenario())
    # batch 2 was fetched while batch 1 was stored: it is stored and committed too
    assert [o for what, o in log.lines if what == "committed"] == [0, 1, 2]
    assert ("fetched", 3) not in log.lines


def test_the_collector_waits_while_a_batch_is_decoded_or_written_and_runs_between() -> None:
    log = Log()
    during: list[bool] = []
    store = Store(log, seconds=0, on_insert=lambda _: during.append(gc.isenabled()))
    sink = sink_with(log, store, n=0)
    batch = Batch()
    assert gc.isenabled()
    sink.collect({TP: [record(0), record(1)]}, batch)
    assert gc.isenabled() and len(batch.events) == 2
    sink.insert(batch)
    assert during == [False] and gc.isenabled()


def test_the_pause_is_shared_and_keeps_a_collector_that_was_off_off() -> None:
    assert gc.isenabled()
    with COLLECTOR_PAUSED:
        with COLLECTOR_PAUSED:  # the loop and the insert thread at once
            assert not gc.isenabled()
        assert not gc.isenabled()  # until the last holder leaves
    assert gc.isenabled()
    gc.disable()
    try:
        with COLLECTOR_PAUSED:
            pass
        assert not gc.isenabled()  # someone else turned it off: not ours to turn on
    finally:
        gc.enable()
