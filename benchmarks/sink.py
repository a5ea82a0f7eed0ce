"""Sink micro-benchmark: decode → columns → insert of ``events``, no Kafka, per stage.

N simulated events (``pipeline.dev.simulate``) are encoded as the publisher sends them
(JSON arrays of 500 events per message) and go, 10,000 events per insert as in the
worker's sink batches, through the sink's three stages:

  * decode  — ``ClickHouseSink.collect`` (``decode_events`` per message into msgspec
    Structs, plus each row's Kafka source);
  * columns — Structs → the ``events`` columns;
  * insert  — the columns into a fresh embedded chDB with the migrations applied.

Variants, timed in the same run, alternating order, several repetitions (ratios only
mean something within one run: the machine is shared):

  * ``per_event`` — ``pipeline.sinks.clickhouse.rows.event_columns`` (what the sink runs:
    one loop appending to 36 lists) + ``client.insert`` (Native, clickhouse-connect);
  * ``rows``      — the very same, timed again: an A/A test, how far apart two identical
    variants land is the run's noise.

A candidate goes in ``VARIANTS`` beside them; it must store exactly what ``per_event``
stores (checked, column by column). Measured and dropped so far (RESULTS.md, the two
"Sink" sections): ``attrgetter`` + ``zip`` columns, pyarrow via ``insert_arrow``,
``JSONColumns``, a pyarrow Table read by chDB's ``Python()`` table function, and a
Native block written by hand with numpy (the last two at commit 7d7b97b).

Then the Native insert split in two: clickhouse-connect serialising in Python, and the
store taking the Native bytes (into ``events``, and into a ``Null`` table: parse only).

Usage:  .venv/bin/python benchmarks/sink.py [--events 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings  # noqa: E402
from pipeline.dev.simulate import TrafficModel  # noqa: E402
from pipeline.sdk.wire import encode_events  # noqa: E402
from pipeline.sinks.clickhouse.client import apply_migrations, connect  # noqa: E402
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS, event_columns  # noqa: E402
from pipeline.sinks.clickhouse.writer import Batch, ClickHouseSink  # noqa: E402
from pipeline.sources.codec import decode_events  # noqa: E402
from schemas.event import InferenceEvent  # noqa: E402

MESSAGE_EVENTS = 500  # events per Kafka message, as benchmarks/ingest.py publishes
INSERT_EVENTS = 10_000  # events per insert, as the worker's sink batches there
HEADERS = [("content-type", b"application/json")]
SETTINGS = Settings()
TP = TopicPartition(SETTINGS.topics.events, 0)


def messages(n: int) -> list[ConsumerRecord]:
    """``n`` simulated events as Kafka records of ``MESSAGE_EVENTS`` events each (JSON)."""
    traffic = TrafficModel(seed=11, id_prefix="sink-bench")
    events = [r for _, r in traffic.stream(n / 60, 60.0, time.time() - 120, resources=False)]
    events = events[:n]
    values = [encode_events(events[i:i + MESSAGE_EVENTS])
              for i in range(0, len(events), MESSAGE_EVENTS)]
    return [ConsumerRecord(TP.topic, TP.partition, offset, 0, 0, None, value, None, 0,
                           len(value), HEADERS) for offset, value in enumerate(values)]


# --- insert variants: (client, table, columns) → None --------------------------------------

def insert_native(client: Any, table: str, cols: list[list]) -> None:
    client.insert(table, cols, column_names=EVENT_COLUMNS, column_oriented=True)


# --- the timed run ---------------------------------------------------------------------------

Columns = Callable[[Sequence[InferenceEvent], Sequence[int], Sequence[int]], list[list]]
Insert = Callable[[Any, str, list[list]], None]
VARIANTS: dict[str, tuple[Columns, Insert]] = {
    "per_event": (event_columns, insert_native),
    "rows": (event_columns, insert_native),
}
STAGES = ("decode", "columns", "insert")


def one_insert(client: Any, table: str, records: list[ConsumerRecord], columns: Columns,
               insert: Insert) -> tuple[float, float, float]:
    """Seconds of each stage for one insert's records, on the sink's own decode path."""
    sink = ClickHouseSink(SETTINGS, client)
    t0 = time.perf_counter()
    batch = Batch()
    sink.collect({TP: records}, batch)
    events, records = batch.events.items, batch.events.records
    t1 = time.perf_counter()
    cols = columns(events, [r.partition for r in records], [r.offset for r in records])
    t2 = time.perf_counter()
    insert(client, table, cols)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def measure(client: Any, data: list[ConsumerRecord], names: list[str],
            repeat: int) -> dict[str, list[list[float]]]:
    """Per variant and repetition, seconds per stage over all of ``data``.

    Variants take turns insert by insert (in a new random order each time), each into its
    own copy of ``events``, so a burst of load on the shared machine falls on all of them.
    """
    per_insert = max(1, INSERT_EVENTS // MESSAGE_EVENTS)
    chunks = [data[i:i + per_insert] for i in range(0, len(data), per_insert)]
    tables = {name: f"events_{name}" for name in names}
    for table in tables.values():
        client.command(f"CREATE TABLE IF NOT EXISTS {table} AS events")
    spent = {name: [[0.0] * len(STAGES) for _ in range(repeat)] for name in names}
    rng = random.Random(9)
    for rep in range(repeat):
        for table in tables.values():
            client.command(f"TRUNCATE TABLE {table}")
        gc.collect()
        for chunk in chunks:
            order = rng.sample(names, len(names))
            for name in order:
                gc.collect()  # nobody pays for the garbage of the variant before it
                stages = one_insert(client, tables[name], chunk, *VARIANTS[name])
                for i, seconds in enumerate(stages):
                    spent[name][rep][i] += seconds
    return spent


def insert_breakdown(client: Any, data: list[ConsumerRecord], repeat: int) -> dict[str, float]:
    """Seconds (medians over ``repeat``) of the insert's two halves over all of ``data``:
    clickhouse-connect serialising the columns to Native in Python (its private
    ``_transform``, as ``client.insert`` does), and the store taking those Native bytes
    (``raw_insert``) into a copy of ``events`` and into a ``Null`` table (parse only)."""
    per_insert = max(1, INSERT_EVENTS // MESSAGE_EVENTS)
    blobs: list[bytes] = []
    serialise: list[float] = []
    for _ in range(repeat):
        spent, blobs = 0.0, []
        for i in range(0, len(data), per_insert):
            batch = Batch()
            ClickHouseSink(SETTINGS, client).collect({TP: data[i:i + per_insert]}, batch)
            cols = event_columns(batch.events.items, [0] * len(batch.events),
                                 [0] * len(batch.events))
            gc.collect()
            t0 = time.perf_counter()
            context = client.create_insert_context("events", column_names=EVENT_COLUMNS,
                                                   data=cols, column_oriented=True)
            body = b"".join(client._transform.build_insert(context))
            spent += time.perf_counter() - t0
            blobs.append(body.split(b"\n", 1)[1])  # less the INSERT statement
        serialise.append(spent)
    client.command("CREATE TABLE IF NOT EXISTS events_engine AS events")
    client.command("CREATE TABLE IF NOT EXISTS events_null AS events ENGINE = Null")
    engine: dict[str, list[float]] = {"events_engine": [], "events_null": []}
    for _ in range(repeat):
        client.command("TRUNCATE TABLE events_engine")
        for table in engine:
            gc.collect()
            t0 = time.perf_counter()
            for blob in blobs:
                client.raw_insert(table, EVENT_COLUMNS, blob, fmt="Native")
            engine[table].append(time.perf_counter() - t0)
    return {"serialise (Python, Native)": statistics.median(serialise),
            "store: Native bytes → events": statistics.median(engine["events_engine"]),
            "store: Native bytes → Null table (parse only)": statistics.median(
                engine["events_null"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated; the first is the reference of the ratios")
    args = parser.parse_args()
    names = args.variants.split(",")

    data = messages(args.events)
    limits = SETTINGS.limits
    n = sum(len(decode_events(r.value, HEADERS, limits, time.time()).events) for r in data)
    with tempfile.TemporaryDirectory(prefix="sink-bench-") as home:
        settings = Settings(home=home)
        client = connect(settings)
        apply_migrations(client, settings)
        for name in names:  # warm up, and check every variant stores every row
            client.command(f"CREATE TABLE IF NOT EXISTS events_{name} AS events")
            one_insert(client, f"events_{name}", data[:4], *VARIANTS[name])
        spent = measure(client, data, names, args.repeat)
        halves = insert_breakdown(client, data, args.repeat)
        columns = ", ".join(f"`{c}`" for c in EVENT_COLUMNS)
        reference = None
        for name in names:
            stored = client.query(f"SELECT {columns} FROM events_{name} FINAL "
                                  "ORDER BY event_id").result_rows
            if len(stored) != n:
                raise SystemExit(f"{name} stored {len(stored)} of {n} events")
            if reference is None:
                reference = stored
            elif stored != reference:
                raise SystemExit(f"{name} stored other values than {names[0]}")
        client.close()

    base = spent[names[0]]
    print(f"# sink micro-benchmark: {n} events, {len(data)} messages of {MESSAGE_EVENTS}, "
          f"{INSERT_EVENTS} per insert, {args.repeat} repetitions, variants interleaved "
          f"insert by insert; Python {platform.python_version()}, {platform.machine()}")
    print(f"| variant | {' | '.join(STAGES)} | total | sink events/s | "
          f"total vs {names[0]} | {' | '.join(f'{s} vs {names[0]}' for s in STAGES)} |")
    print("|---" * (4 + 2 * len(STAGES)) + "|")
    for name in names:
        runs = spent[name]
        stage = [statistics.median(r[i] for r in runs) * 1e8 / n for i in range(len(STAGES))]
        total = statistics.median(sum(r) for r in runs)
        # ratios per repetition (same conditions), then their median: > 1 means faster
        speedup = statistics.median(sum(b) / sum(r) for b, r in zip(base, runs, strict=True))
        by_stage = [statistics.median(b[i] / r[i] for b, r in zip(base, runs, strict=True))
                    for i in range(len(STAGES))]
        print(f"| {name} | {' | '.join(f'{v:.0f} ms' for v in stage)} | "
              f"{total * 1e8 / n:.0f} ms | {n / total:,.0f} | {speedup:.2f}× | "
              f"{' | '.join(f'{v:.2f}×' for v in by_stage)} |")
    print(f"(ms per 100k events, medians over repetitions; ratios: {names[0]} time / variant "
          "time per repetition, median; > 1 is faster)")
    print("\n| the Native insert, split | ms per 100k events |\n|---|---|")
    for what, seconds in halves.items():
        print(f"| {what} | {seconds * 1e8 / n:.0f} |")


if __name__ == "__main__":
    main()
