"""Schema-generated, mutated and hostile traffic through a real broker and a running worker.

Conservation per element: every element of every message produced is stored once or
dead-lettered once (never both, never twice, never lost); afterwards the worker is
alive and still storing and dead-lettering on every partition, and neither consumer
group (processing, sink) is left behind on any partition of the events topic.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema

from pipeline.sinks.clickhouse.query import run_query
from schemas.event import InferenceEvent
from schemas.export import json_schema
from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

JSON_H = [("content-type", b"application/json")]
MSGPACK_H = [("content-type", b"application/msgpack")]
GZIP_H = [*JSON_H, ("content-encoding", b"gzip")]
SCHEMA = json_schema(InferenceEvent)  # what `inferwatch schema export` writes
PROPERTIES = SCHEMA["$defs"]["InferenceEvent"]["properties"]


class Message:
    """One produced message: its key names it, its elements are ``m<i>-<j>``."""

    def __init__(self, i: int, value: bytes | None, headers: list, elements: int,
                 compress: bool = False, partition: int | None = None) -> None:
        self.i, self.value, self.headers, self.elements = i, value, headers, elements
        self.compress, self.partition = compress, partition

    @property
    def key(self) -> bytes:
        return f"m{self.i}".encode()


def schema_events(n: int) -> list[dict[str, Any]]:
    """``n`` events drawn from the exported JSON Schema by hypothesis-jsonschema."""
    drawn: list[dict[str, Any]] = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(from_schema(SCHEMA))
    def collect(event: dict[str, Any]) -> None:
        drawn.append(event)

    collect()
    return drawn[:n]


def mutations(now: float) -> list[tuple[str, Any]]:
    """For every field, values its schema forbids: wrong type, past each bound, null."""
    out: list[tuple[str, Any]] = []
    for name, prop in PROPERTIES.items():
        options = prop.get("anyOf", [prop])
        kinds = {o.get("type") for o in options}
        out.append((name, {"nested": [1, 2]} if "object" not in kinds else [1, 2]))
        if "null" not in kinds:
            out.append((name, None))
        for option in options:
            if "maximum" in option:
                out.append((name, option["maximum"] * 10 + 1))
            if "minimum" in option:
                out.append((name, option["minimum"] - 1))
            if "maxLength" in option:
                out.append((name, "x" * (option["maxLength"] + 1)))
            if "maxProperties" in option:
                out.append((name, {f"k{k}": "v" for k in range(option["maxProperties"] + 1)}))
    return out


def build_traffic(now: float, partitions: int) -> list[Message]:
    rng = random.Random(11)
    messages: list[Message] = []

    def add(value: bytes | None, headers: list = JSON_H, elements: int = 1, **kw: Any) -> int:
        messages.append(Message(len(messages), value, headers, elements, **kw))
        return len(messages) - 1

    def event(i: int, j: int, **fields: Any) -> dict[str, Any]:
        return {"event_id": f"m{i}-{j}", "timestamp": now - rng.uniform(0, 300),
                "model": f"fz-{j % 3}", "latency_ms": rng.uniform(1, 900), **fields}

    # 1. schema-generated events, as batches of 20, in both encodings
    drawn = schema_events(300)
    for start in range(0, len(drawn), 20):
        i = len(messages)
        chunk = drawn[start:start + 20]
        for j, e in enumerate(chunk):
            e["event_id"] = f"m{i}-{j}"
            if j % 5:  # most in the accepted window; the rest keep their drawn time
                e["timestamp"] = now - rng.uniform(0, 300)
            elif now - 40 * 86400 < e["timestamp"] < now + 7200:
                e["timestamp"] = now  # away from the edges both roles judge by their clock
        try:  # half as MessagePack, unless a drawn extra field holds an int it cannot carry
            value, headers = ((msgspec.json.encode(chunk), JSON_H) if start % 40
                              else (msgspec.msgpack.encode(chunk), MSGPACK_H))
        except OverflowError:
            value, headers = msgspec.json.encode(chunk), JSON_H
        add(value, headers, len(chunk))

    # 2. every field mutated past its schema, one event per message
    for name, bad in mutations(now):
        i = len(messages)
        add(msgspec.json.encode({**event(i, 0), name: bad}))

    # 3. the hostile corpus
    good = event(len(messages), 0)
    deep = b"[" * 3000 + b"]" * 3000
    for value, headers, n in [
        (b"[" * 1000 + b"]" * 1000, JSON_H, 1),
        (b"[" * 200_000 + b"]" * 200_000, JSON_H, 1),
        (b"\x91" * 1000 + b"\x90", MSGPACK_H, 1),
        (b"\x91" * 300_000 + b"\x90", MSGPACK_H, 1),
        (msgspec.json.encode({**good, "x": 0})[:-3] + b":" + deep + b"}", JSON_H, 1),
        (b'{"event_id":' + b"[" * 9000, JSON_H, 1),
        (os.urandom(512), JSON_H, 1), (os.urandom(512), MSGPACK_H, 1),
        (os.urandom(512), GZIP_H, 1), (b'{"event_id": "x"}', MSGPACK_H, 1),
        (b"[]", JSON_H, 0), (b"\x90", MSGPACK_H, 0), (None, JSON_H, 1), (b"", MSGPACK_H, 1),
        (gzip.compress(b"[" + b"0," * ((4 << 20) - 2) + b"0]", 9), GZIP_H, 1),  # bomb
        (b'{"event_id":"a","timestamp":1e999,"model":"m","latency_ms":1}', JSON_H, 1),
        (b'{"event_id":"a","timestamp":1,"model":"m","latency_ms":' + b"9" * 5000 + b"}",
         JSON_H, 1),
        (msgspec.json.encode(good).replace(b'"fz-0"', b'"\xff\xfe"'), JSON_H, 1),
        (msgspec.json.encode(good), [("content-type", b"text/xml")], 1),
        (msgspec.json.encode(good), [*JSON_H, ("content-encoding", b"br")], 1),
        (b"\x00" * 64, GZIP_H, 1),
    ]:
        add(value, headers, n)
    for bound in (65535, 65536, 2**32, 2**64):  # schema_version at and past its column
        i = len(messages)
        add(msgspec.json.encode(event(i, 0, schema_version=bound)))
    i = len(messages)  # tokens, status and cost at their bounds: stored
    add(msgspec.json.encode(event(i, 0, input_tokens=100_000_000, output_tokens=0,
                                  cache_read_tokens=100_000_000, http_status=599,
                                  cost_usd=1_000_000.0, confidence=1.0, feedback_score=0.0)))
    i = len(messages)  # a mixed batch: the good elements stored, each bad one alone
    mixed = [event(i, 0), {"x": 1}, 5, event(i, 3, latency_ms=-1), event(i, 4),
             event(i, 5, timestamp=now + 10**7), event(i, 6, status="maybe"), event(i, 7)]
    add(msgspec.json.encode(mixed), JSON_H, len(mixed))
    i = len(messages)  # a multi-member gzip of a valid batch: stored whole
    batch = msgspec.json.encode([event(i, j) for j in range(10)])
    add(gzip.compress(batch[:50]) + gzip.compress(batch[50:]), GZIP_H, 10)
    i = len(messages)  # 3 MB sent with Kafka compression: its dead letter cannot fit
    add(msgspec.json.encode([event(i, 0, attributes={"pad": "a" * 100})] * 1)
        + b" " * (3 << 20), JSON_H, 1, compress=True)
    i = len(messages)  # a bad element too big for the DLQ inside a compressed batch
    add(msgspec.json.encode([event(i, 0), {"event_id": "big", "pad": "b" * (2 << 20)}]),
        JSON_H, 2, compress=True)
    return messages


def probes(first: int, now: float, partitions: int) -> list[Message]:
    """Per partition, a valid batch and a bad message: proof each is still served."""
    out = []
    for p in range(partitions):
        i = first + len(out)
        batch = [{"event_id": f"m{i}-{j}", "timestamp": now, "model": "probe",
                  "latency_ms": 5.0} for j in range(25)]
        out.append(Message(i, msgspec.json.encode(batch), JSON_H, 25, partition=p))
        out.append(Message(i + 1, b"{broken", JSON_H, 1, partition=p))
    return out


async def produce(bootstrap: str, topic: str, messages: list[Message]) -> None:
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=16 << 20)
    packed = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                              compression_type="gzip", max_request_size=16 << 20)
    await plain.start()
    await packed.start()
    try:
        futures = []
        for m in messages:
            producer = packed if m.compress else plain
            futures.append(await producer.send(topic, m.value, key=m.key, headers=m.headers,
                                               partition=m.partition))
        await asyncio.gather(*futures)
    finally:
        await plain.stop()
        await packed.stop()


async def produce_to(bootstrap: str, records: dict[str, list[tuple[bytes, bytes | None]]]
                     ) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value, key=key)
                               for topic, items in records.items() for key, value in items])
    finally:
        await producer.stop()


async def read_to_end(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of ``topic`` up to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[Any] = []
        while True:
            positions = [await consumer.position(tp) for tp in parts]
            if all(pos >= ends[tp] for pos, tp in zip(positions, parts, strict=True)):
                return records
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()


async def lagging(bootstrap: str, topic: str, partitions: int,
                  groups: list[str]) -> dict[str, dict]:
    """Per group, the events partitions whose committed offset is short of the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        out = {}
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            behind = {tp.partition: (committed[tp].offset if tp in committed else None, end)
                      for tp, end in ends.items()
                      if end and (tp not in committed or committed[tp].offset < end)}
            if behind:
                out[group] = behind
        return out
    finally:
        await consumer.stop()
        await admin.close()


def account(messages: list[Message], stored: list[str], letters: list[Any],
            topic: str) -> list[str]:
    """Every element stored once or dead-lettered once: the list of violations."""
    by_key = {m.key: m for m in messages}
    letters = [r for r in letters
               if dict(r.headers).get("inferwatch-source-topic") == topic.encode()]
    kept: dict[int, Counter[int]] = defaultdict(Counter)
    for event_id in stored:
        i, j = event_id.removeprefix("m").split("-")
        kept[int(i)][int(j)] += 1
    whole: Counter[int] = Counter()
    parts: dict[int, Counter[int]] = defaultdict(Counter)
    problems = []
    for record in letters:
        message = by_key.get(record.key)
        if message is None:
            problems.append(f"dead letter with unknown key {record.key!r}")
            continue
        index = dict(record.headers).get("inferwatch-batch-index")
        if index is None:
            whole[message.i] += 1
        else:
            parts[message.i][int(index)] += 1
    for m in messages:
        if whole[m.i]:
            if whole[m.i] > 1 or kept[m.i] or parts[m.i]:
                problems.append(f"m{m.i}: dead-lettered whole {whole[m.i]}x, also stored "
                                f"{dict(kept[m.i])} / elements {dict(parts[m.i])}")
            continue
        both = set(kept[m.i]) & set(parts[m.i])
        twice = {j for j, n in (kept[m.i] + parts[m.i]).items() if n > 1}
        missing = set(range(m.elements)) - set(kept[m.i]) - set(parts[m.i])
        if both or twice or missing:
            problems.append(f"m{m.i}: stored and dead-lettered {sorted(both)}, twice "
                            f"{sorted(twice)}, missing {sorted(missing)}")
    return problems


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    pipeline = Pipeline(kafka_bootstrap, tmp_path)
    yield pipeline
    pipeline.close()


def test_hostile_and_generated_traffic_is_conserved_and_stalls_nothing(pipe: Pipeline) -> None:
    settings_ = pipe.settings
    bootstrap, topics = settings_.kafka.bootstrap_servers, settings_.topics
    now = time.time()
    traffic = build_traffic(now, topics.partitions)
    worker = pipe.start_worker()
    pipe.wait_sink_ready(worker)
    asyncio.run(produce(bootstrap, topics.events, traffic))

    def stored() -> list[str]:
        rows = run_query(settings_, "SELECT event_id FROM events FINAL "
                                    "WHERE match(event_id, '^m[0-9]+-[0-9]+$')").rows
        return [r[0] for r in rows]

    def dead_letters() -> list[Any]:
        return asyncio.run(read_to_end(bootstrap, topics.dlq, topics.partitions))

    def settle(messages: list[Message], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        problems = ["not checked"]
        while time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker died:\n{pipe.log(worker)}"
            problems = account(messages, stored(), dead_letters(), topics.events)
            if not problems:
                time.sleep(2.0)  # anything twice would show up now
                return account(messages, stored(), dead_letters(), topics.events)
            time.sleep(2.0)
        return problems

    problems = settle(traffic, timeout=240)
    assert not problems, "\n".join(problems[:20]) + "\n" + pipe.log(worker)

    # not vacuous: most schema-drawn events stored, every class of rejection seen
    letters = dead_letters()
    reasons = Counter(dict(r.headers)["inferwatch-error-reason"].decode() for r in letters)
    assert len(stored()) >= 200, reasons
    assert set(reasons) >= {"malformed", "schema", "empty", "batch_too_large", "oversize",
                            "stale_timestamp", "future_timestamp", "unsupported_content_type",
                            "unsupported_content_encoding", "decompression_failed"}, reasons
    assert "internal" not in reasons, reasons

    # the oversized dead letters went as bounded references, with the original key
    truncated = [r for r in letters if "inferwatch-truncated" in dict(r.headers)]
    assert {r.key for r in truncated} >= {traffic[-2].key, traffic[-1].key}
    for record in truncated:
        reference = json.loads(record.value)
        assert reference["size"] > 900 * 1024 and len(reference["sha256"]) == 64

    # still alive, still storing and dead-lettering, on every partition
    assert worker.poll() is None, pipe.log(worker)
    extra = probes(len(traffic), time.time(), topics.partitions)
    asyncio.run(produce(bootstrap, topics.events, extra))
    problems = settle(traffic + extra, timeout=120)
    assert not problems, "\n".join(problems[:20]) + "\n" + pipe.log(worker)
    assert worker.poll() is None, pipe.log(worker)

    # neither group is left behind on any partition (offsets committed to the end)
    groups = [f"{settings_.worker.app_id}-stage1", f"{settings_.worker.app_id}-sink"]
    deadline = time.monotonic() + 60
    behind = asyncio.run(lagging(bootstrap, topics.events, topics.partitions, groups))
    while behind and time.monotonic() < deadline:
        time.sleep(2.0)
        behind = asyncio.run(lagging(bootstrap, topics.events, topics.partitions, groups))
    assert not behind, f"uncommitted: {behind}\n{pipe.log(worker)}"
    log = pipe.log(worker)
    assert "RecursionError" not in log and "Agent crashed" not in log, log

    # strangers on our own topics (partials, metrics, scores, alerts): each dead-lettered
    # once, by the one role that owns it, and the worker goes on
    garbage = [b"[" * 5000 + b"]" * 5000, os.urandom(300), b'{"series_key": 5}', None]
    own = [topics.partials, topics.metrics, topics.scores, topics.alerts]
    asyncio.run(produce_to(bootstrap, {
        topic: [(f"s{n}-{k}".encode(), value) for k, value in enumerate(garbage)]
        for n, topic in enumerate(own)}))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"the worker died:\n{pipe.log(worker)}"
        strays = Counter((dict(r.headers)["inferwatch-source-topic"], r.key)
                         for r in dead_letters() if r.key and r.key.startswith(b"s"))
        if len(strays) == len(own) * len(garbage):
            break
        time.sleep(1.0)
    assert len(strays) == len(own) * len(garbage), strays
    assert set(strays.values()) == {1}, strays
    assert {t.decode() for t, _ in strays} == set(own)
