"""Schema-generated, mutated and hostile traffic through a real broker and a running worker.

Inference events on the events topic and feedback on the feedback topic, at once.
Conservation per element: every element of every message produced is stored once or
dead-lettered once (never both, never twice, never lost), its dead letter naming the
topic, partition, offset and batch index it came from. Events are stored in ``events``,
feedback in ``feedback FINAL`` whatever its fate in the join (elements that share a
``feedback_id`` are one feedback: stored once between them). Afterwards the worker is
alive and still storing and dead-lettering on every partition of both topics, feedback
that finds its inference has the fate the join gives it, and no consumer group
(processing, sink, quality intake, quality join) is left behind on any partition.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema

from pipeline.sinks.clickhouse.query import run_query
from pipeline.sources.codec import decode_events
from schemas.event import InferenceEvent
from schemas.export import json_schema
from schemas.feedback import FeedbackEvent
from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

JSON_H = [("content-type", b"application/json")]
MSGPACK_H = [("content-type", b"application/msgpack")]
GZIP_H = [*JSON_H, ("content-encoding", b"gzip")]
GZIP_MSGPACK_H = [*MSGPACK_H, ("content-encoding", b"gzip")]
SCHEMA = json_schema(InferenceEvent)  # what `inferwatch schema export` writes
PROPERTIES = SCHEMA["$defs"]["InferenceEvent"]["properties"]
FEEDBACK_SCHEMA = json_schema(FeedbackEvent)
FEEDBACK_PROPERTIES = FEEDBACK_SCHEMA["$defs"]["FeedbackEvent"]["properties"]
WAIT_FOR_INFERENCE = 5.0  # feedback nobody inferred is "unmatched" (and stored) this soon
DROP = object()  # a field left out of a record


class Message:
    """One produced message: its key names it (``m<i>`` events, ``f<i>`` feedback).

    Its elements are identified by ``ids``: by default ``<prefix><i>-<j>``; feedback
    names each element by the ``feedback_id`` it carries (None: none that could be
    stored), so elements that share one are one feedback.
    """

    def __init__(self, i: int, value: bytes | None, headers: list, elements: int,
                 compress: bool = False, partition: int | None = None, prefix: str = "m",
                 ids: list[str | None] | None = None, tag: str = "") -> None:
        self.i, self.value, self.headers, self.elements = i, value, headers, elements
        self.compress, self.partition, self.prefix, self.tag = compress, partition, prefix, tag
        self.ids = ids if ids is not None else [f"{prefix}{i}-{j}" for j in range(elements)]
        assert len(self.ids) == elements
        self.sent: tuple[int, int] | None = None  # (partition, offset) the broker gave it

    @property
    def key(self) -> bytes:
        return f"{self.prefix}{self.i}".encode()


def schema_drawn(schema: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` records drawn from an exported JSON Schema by hypothesis-jsonschema."""
    drawn: list[dict[str, Any]] = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(from_schema(schema))
    def collect(record: dict[str, Any]) -> None:
        drawn.append(record)

    collect()
    return drawn[:n]


def mutations(properties: dict[str, Any]) -> list[tuple[str, Any]]:
    """For every field, values its schema forbids: wrong type, past each bound, null."""
    out: list[tuple[str, Any]] = []
    for name, prop in properties.items():
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
    drawn = schema_drawn(SCHEMA, 300)
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
    for name, bad in mutations(PROPERTIES):
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
    i = len(messages)  # inferences the feedback of join_feedback() finds, by either id
    add(msgspec.json.encode([event(i, j, request_id=f"req-m{i}-{j}", prediction="spam",
                                   confidence=0.8) for j in range(4)]),
        JSON_H, 4, tag="joinable")
    i = len(messages)  # 3 MB sent with Kafka compression: its dead letter cannot fit
    add(msgspec.json.encode([event(i, 0, attributes={"pad": "a" * 100})] * 1)
        + b" " * (3 << 20), JSON_H, 1, compress=True)
    i = len(messages)  # a bad element too big for the DLQ inside a compressed batch
    add(msgspec.json.encode([event(i, 0), {"event_id": "big", "pad": "b" * (2 << 20)}]),
        JSON_H, 2, compress=True)
    return messages


KINDS = {"label": "label", "satisfaction": "satisfaction", "business": "value"}


def build_feedback(now: float) -> list[Message]:
    """Feedback: schema-drawn, every field mutated, the contract's own rules broken,
    hostile bytes and encodings, mixed batches and one feedback sent many times."""
    rng = random.Random(12)
    messages: list[Message] = []

    def add(value: bytes | None, ids: list[str | None], headers: list = JSON_H,
            **kw: Any) -> None:
        messages.append(Message(len(messages), value, headers, len(ids), prefix="f",
                                ids=ids, **kw))

    def fb(j: int = 0, of: str | None = None, **fields: Any) -> dict[str, Any]:
        """A valid feedback ``of`` a kind, element ``j`` of the next message, for nobody's
        inference; ``fields`` override, DROP leaves one out."""
        i = len(messages)
        kind = of or list(KINDS)[j % 3]
        value = {"label": rng.choice(["spam", "ham", 2.5, 0]), "satisfaction": rng.random(),
                 "business": round(rng.uniform(-50, 500), 2)}[kind]
        record = {"feedback_id": f"f{i}-{j}", "event_id": f"nobody-{i}-{j}",
                  "timestamp": now - rng.uniform(0, 300), "kind": kind, KINDS[kind]: value,
                  "source": "fuzz", **fields}
        return {k: v for k, v in record.items() if v is not DROP}

    def fid(record: Any) -> str | None:
        """The feedback id an element would be stored under, if any."""
        found = record.get("feedback_id") if isinstance(record, dict) else None
        return found if isinstance(found, str) else None

    def one(record: dict[str, Any], headers: list = JSON_H, **kw: Any) -> None:
        """A message of one record (not an array)."""
        encode = msgspec.msgpack.encode if headers is MSGPACK_H else msgspec.json.encode
        add(encode(record), [fid(record)], headers, **kw)

    # 1. schema-drawn feedback, as batches of 20: JSON, MessagePack and gzip
    drawn = [dict(f) for f in schema_drawn(FEEDBACK_SCHEMA, 100)]
    for start in range(0, len(drawn), 20):
        i = len(messages)
        chunk = drawn[start:start + 20]
        for j, f in enumerate(chunk):
            f["feedback_id"] = f"f{i}-{j}"
            if j % 5:  # most in the accepted window; the rest keep their drawn time
                f["timestamp"] = now - rng.uniform(0, 300)
            elif now - 40 * 86400 < f["timestamp"] < now + 7200:
                f["timestamp"] = now  # away from the edges both roles judge by their clock
        ids: list[str | None] = [f["feedback_id"] for f in chunk]
        try:
            if start % 60 == 0:
                add(msgspec.msgpack.encode(chunk), ids, MSGPACK_H)
            elif start % 60 == 20:
                add(gzip.compress(msgspec.json.encode(chunk)), ids, GZIP_H)
            else:
                add(msgspec.json.encode(chunk), ids)
        except OverflowError:  # a drawn extra field holds an int MessagePack cannot carry
            add(msgspec.json.encode(chunk), ids)

    # 2. every field mutated past its schema, on feedback of the kind it carries
    for name, bad in mutations(FEEDBACK_PROPERTIES):
        kind = {v: k for k, v in KINDS.items()}.get(name)
        one({**fb(0, kind), name: bad})

    # 3. the rules of the contract broken one by one, and its edges (valid: stored)
    over_attributes = {f"k{k}": "v" for k in range(33)}
    for kind, fields in [
        (None, {"feedback_id": DROP}), (None, {"timestamp": DROP}), (None, {"kind": DROP}),
        (None, {"event_id": DROP}), (None, {"event_id": ""}),
        (None, {"event_id": DROP, "request_id": ""}),
        (None, {"event_id": None, "request_id": None}),
        (None, {"feedback_id": ""}), (None, {"feedback_id": 5}),
        (None, {"feedback_id": ["f"]}), (None, {"feedback_id": "f" * 129}),
        (None, {"kind": "Label"}), (None, {"kind": ""}), (None, {"kind": 1}),
        (None, {"kind": "rating"}), (None, {"timestamp": "now"}),
        (None, {"timestamp": True}), (None, {"timestamp": now + 10**7}),
        (None, {"timestamp": now - 60 * 86400}), (None, {"timestamp": -1}),
        (None, {"attributes": {"k": 1}}), (None, {"attributes": {"": "v"}}),
        (None, {"attributes": {"k" * 65: "v"}}), (None, {"attributes": over_attributes}),
        (None, {"source": "s" * 300_000}), (None, {"schema_version": 0}),
        ("label", {"label": DROP}), ("label", {"label": None}), ("label", {"label": True}),
        ("label", {"label": [1]}), ("label", {"label": {"a": 1}}),
        ("label", {"label": 1e16}), ("label", {"label": "x" * 257}),
        ("label", {"satisfaction": 0.5}), ("label", {"value": 1.0}),
        ("label", {"satisfaction": 0.5, "value": 1.0}),
        ("satisfaction", {"satisfaction": DROP}), ("satisfaction", {"satisfaction": -0.01}),
        ("satisfaction", {"satisfaction": 1.0000001}), ("satisfaction", {"satisfaction": 2}),
        ("satisfaction", {"satisfaction": "0.5"}), ("satisfaction", {"satisfaction": True}),
        ("satisfaction", {"satisfaction": [0.5]}), ("satisfaction", {"label": "spam"}),
        ("satisfaction", {"value": 1.0}), ("business", {"value": DROP}),
        ("business", {"value": "9.99"}), ("business", {"value": -1e15 - 2}),
        ("business", {"label": 1}), ("business", {"satisfaction": 1.0}),
        # the edges, inside: stored
        ("label", {"label": ""}), ("label", {"label": 0}), ("label", {"label": -1e15}),
        ("label", {"label": "x" * 256}), ("label", {"label": "\x00é\u2028🙂"}),
        ("label", {"satisfaction": None, "value": None}),
        ("satisfaction", {"satisfaction": 0}), ("satisfaction", {"satisfaction": 1}),
        ("business", {"value": 0}), ("business", {"value": 1e15}),
        (None, {"event_id": DROP, "request_id": "r" * 256}), (None, {"request_id": "both"}),
        (None, {"schema_version": 65535}), (None, {"source": "s" * 128}),
        (None, {"attributes": {f"k{k}": "v" * 256 for k in range(32)}}),
        (None, {"unknown": {"a": [[[[{"b": None}]]]]}, "timestamp": int(now)}),
        (None, {"feedback_id": "f" * 128}),
    ]:
        one(fb(0, kind, **fields))
    for kind, name, raw in [  # numbers JSON can write but no float holds; bad escapes
            ("satisfaction", "satisfaction", b"1e999"), ("satisfaction", "satisfaction", b"NaN"),
            ("label", "timestamp", b"1e999"), ("business", "value", b"-1e999"),
            ("label", "label", b"1e400"), ("label", "source", b'"\\ud800"'),
            ("label", "feedback_id", b'"\\ud800x"'), ("label", "label", b"99" * 200)]:
        record = fb(0, kind, **{name: DROP})
        add(msgspec.json.encode(record)[:-1] + f',"{name}":'.encode() + raw + b"}",
            [fid(record)])

    # 4. hostile bytes, encodings and sizes (each a fresh valid feedback ``g`` at most)
    deep = b"[" * 3000 + b"]" * 3000
    now_dt = datetime.datetime.now(datetime.UTC)
    hostile: list[tuple[Callable[[dict[str, Any]], bytes | None], list, int]] = [
        (lambda g: b"[" * 1000 + b"]" * 1000, JSON_H, 1),
        (lambda g: b"[" * 200_000 + b"]" * 200_000, JSON_H, 1),
        (lambda g: b"\x91" * 300_000 + b"\x90", MSGPACK_H, 1),
        (lambda g: msgspec.json.encode({**g, "x": 0})[:-3] + b":" + deep + b"}", JSON_H, 1),
        (lambda g: msgspec.json.encode([g])[:-2] + b',"attributes":' + deep + b"}]",
         JSON_H, 1),
        (lambda g: b'{"feedback_id":' + b"[" * 9000, JSON_H, 1),
        (lambda g: os.urandom(512), JSON_H, 1), (lambda g: os.urandom(512), MSGPACK_H, 1),
        (lambda g: os.urandom(512), GZIP_H, 1), (lambda g: b"\x00" * 64, GZIP_H, 1),
        (lambda g: b'{"feedback_id": "x"}', MSGPACK_H, 1),
        (lambda g: msgspec.msgpack.encode(g), JSON_H, 1),
        (lambda g: msgspec.json.encode(g), MSGPACK_H, 1),
        (lambda g: msgspec.json.encode(g).replace(b'"fuzz"', b'"\xff\xfe"'), JSON_H, 1),
        (lambda g: msgspec.json.encode(g).replace(b'"fuzz"', b'"\xed\xa0\x80"'), JSON_H, 1),
        (lambda g: msgspec.msgpack.encode({**g, "source": b"\xff\xfe"}), MSGPACK_H, 1),
        (lambda g: msgspec.msgpack.encode({**g, "source": msgspec.msgpack.Ext(5, b"x")}),
         MSGPACK_H, 1),
        (lambda g: msgspec.msgpack.encode({**g, "timestamp": now_dt}), MSGPACK_H, 1),
        (lambda g: msgspec.msgpack.encode({1: 2, **g}), MSGPACK_H, 1),
        (lambda g: msgspec.json.encode(g), [("content-type", b"text/xml")], 1),
        (lambda g: msgspec.json.encode(g), [*JSON_H, ("content-encoding", b"br")], 1),
        (lambda g: gzip.compress(msgspec.json.encode([g] * 3))[:-12], GZIP_H, 1),
        (lambda g: gzip.compress(b"[" + b"0," * ((4 << 20) - 2) + b"0]", 9), GZIP_H, 1),
        (lambda g: b"[" + b"1," * 10_000 + b"1]", JSON_H, 1),  # past the batch limit
        (lambda g: None, JSON_H, 1), (lambda g: b"", MSGPACK_H, 1),
        (lambda g: b"[]", JSON_H, 0), (lambda g: b"\x90", MSGPACK_H, 0),
        (lambda g: b"null", JSON_H, 1), (lambda g: b'""', JSON_H, 1),
        (lambda g: b"{}", JSON_H, 1), (lambda g: b"0", JSON_H, 1),
        (lambda g: msgspec.json.encode(g), [], 1),  # no content type: JSON, stored
    ]
    for make, headers, n in hostile:
        g = fb(0)
        value = make(g)
        embeds = g["feedback_id"].encode() in (value or b"")
        add(value, [g["feedback_id"] if embeds else None] * n, headers)
    # 2 MB of label, sent with Kafka compression: oversize, its dead letter a reference
    add(msgspec.json.encode(fb(0, "label", label="x" * (2 << 20))), [None], compress=True)

    # 5. mixed batches: each valid element stored, each bad one dead-lettered alone
    mixed = [fb(0), {"x": 1}, 5, fb(3, "satisfaction", satisfaction=1.5), fb(4), None, [],
             "feedback", fb(8, timestamp=now + 10**7), fb(9, "label", value=3.0), fb(10),
             fb(11, request_id="r", event_id=DROP), fb(12, timestamp=now - 60 * 86400),
             fb(13, "business", value=DROP), fb(14)]
    add(msgspec.json.encode(mixed), [fid(r) for r in mixed])
    mixed = [fb(0), fb(1, feedback_id=7), fb(2, "satisfaction", satisfaction=-1), fb(3)]
    add(msgspec.msgpack.encode(mixed), [fid(r) for r in mixed], MSGPACK_H)
    mixed = [fb(j) for j in range(6)] + [{**fb(6), "kind": None}]
    add(gzip.compress(msgspec.msgpack.encode(mixed)), [fid(r) for r in mixed],
        GZIP_MSGPACK_H)
    batch = [fb(j) for j in range(10)]  # a multi-member gzip of a valid batch: stored whole
    raw = msgspec.json.encode(batch)
    add(gzip.compress(raw[:70]) + gzip.compress(raw[70:]), [fid(r) for r in batch], GZIP_H)

    # 6. one feedback sent many times: in one batch, across messages and encodings, for
    #    another inference, and once valid beside an invalid copy; each stored once
    twice = fb(0)
    batch = [twice, fb(1), twice]
    add(msgspec.json.encode(batch), [fid(r) for r in batch])
    one(twice, MSGPACK_H)
    add(gzip.compress(msgspec.json.encode([twice])), [twice["feedback_id"]], GZIP_H)
    elsewhere = fb(0)
    one(elsewhere)
    one({**elsewhere, "event_id": "nobody-else", "timestamp": now - 5})
    one({**{k: v for k, v in elsewhere.items() if k != "event_id"},
         "request_id": "req-nobody"})
    spoilt = fb(0, "satisfaction")
    batch = [{**spoilt, "satisfaction": 2.0}, spoilt, {**spoilt, "kind": "label"}]
    add(msgspec.json.encode(batch), [fid(r) for r in batch])
    many = fb(0)
    add(msgspec.json.encode([many] * 50), [many["feedback_id"]] * 50)
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


def feedback_probes(first: int, now: float, partitions: int) -> list[Message]:
    """Per feedback partition, a valid batch (for nobody) and a bad message."""
    out = []
    for p in range(partitions):
        i = first + len(out)
        batch = [{"feedback_id": f"f{i}-{j}", "event_id": f"probe-{i}-{j}", "timestamp": now,
                  "kind": "satisfaction", "satisfaction": 1.0} for j in range(10)]
        out.append(Message(i, msgspec.json.encode(batch), JSON_H, 10, partition=p,
                           prefix="f"))
        out.append(Message(i + 1, b"{broken", JSON_H, 1, partition=p, prefix="f",
                           ids=[None]))
    return out


def join_feedback(i: int, now: float, inferences: Message) -> tuple[Message, dict[str, str]]:
    """Feedback for the inferences of ``inferences`` (which the intake has passed on),
    and the fate the join gives each: first of a kind joined, a second label a repeat,
    a feedback id again a duplicate (its row stays joined), an unknown one unmatched."""
    e = [f"m{inferences.i}-{j}" for j in range(inferences.elements)]

    def f(j: int, kind: str, value: Any, **ref: str) -> dict[str, Any]:
        return {"feedback_id": f"f{i}-{j}", **ref, "timestamp": now, "kind": kind,
                KINDS[kind]: value, "source": "review"}

    first = f(0, "label", "spam", event_id=e[0])
    records = [first, f(1, "label", "ham", event_id=e[0]), first,
               f(3, "satisfaction", 0.0, event_id=e[0]), f(4, "business", 10.0, event_id=e[0]),
               f(5, "business", 2.5, event_id=e[0]),
               f(6, "label", "spam", request_id=f"req-{e[1]}"),
               f(7, "satisfaction", 1.0, event_id=e[2], request_id=f"req-{e[2]}"),
               f(8, "label", "spam", event_id="never-inferred"),
               f(9, "satisfaction", 2.0, event_id=e[3]),  # out of range: dead-lettered
               f(10, "label", "ham", event_id=e[3])]
    fates = {f"f{i}-{j}": fate for j, fate in [
        (0, "joined"), (1, "repeat"), (3, "joined"), (4, "joined"), (5, "joined"),
        (6, "joined"), (7, "joined"), (8, "unmatched"), (10, "joined")]}
    message = Message(i, msgspec.json.encode(records), JSON_H, len(records), prefix="f",
                      ids=[r["feedback_id"] for r in records])
    return message, fates


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
        for m, sent in zip(messages, await asyncio.gather(*futures), strict=True):
            m.sent = (sent.partition, sent.offset)
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
    """Every element stored once or dead-lettered once: the list of violations.

    ``stored`` holds the ids in the store, ``letters`` the whole DLQ; the dead letters
    from ``topic`` must name the partition and offset their message was sent to, and
    the index of the element when it is one of a batch. Elements that share an id (one
    feedback sent again) are one: stored once between them if any of them is not
    dead-lettered, else each dead-lettered once. An element without an id (nothing of it
    could be stored) is dead-lettered once.
    """
    by_key = {m.key: m for m in messages}
    whole: Counter[int] = Counter()
    parts: dict[int, Counter[int]] = defaultdict(Counter)
    problems = []
    for record in letters:
        head = dict(record.headers)
        if head.get("inferwatch-source-topic") != topic.encode():
            continue
        message = by_key.get(record.key)
        if message is None:
            problems.append(f"dead letter with unknown key {record.key!r}")
            continue
        where = (int(head["inferwatch-source-partition"]), int(head["inferwatch-source-offset"]))
        if message.sent is not None and where != message.sent:
            problems.append(f"{message.key.decode()}: dead letter names {where}, "
                            f"it was sent to {message.sent}")
        index = head.get("inferwatch-batch-index")
        if index is None:
            whole[message.i] += 1
        else:
            parts[message.i][int(index)] += 1
    copies = Counter(stored)
    problems += [f"{x!r} stored {n}x" for x, n in copies.items() if n > 1]
    elements: dict[str, list[tuple[str, int]]] = defaultdict(list)  # id -> (element, letters)
    for m in messages:
        name = m.key.decode()
        if whole[m.i] > 1 or (whole[m.i] and parts[m.i]):
            problems.append(f"{name}: dead-lettered whole {whole[m.i]}x, elements "
                            f"{dict(parts[m.i])}")
        if stray := set(parts[m.i]) - set(range(m.elements)):
            problems.append(f"{name}: dead letters of elements it has not: {sorted(stray)}")
        lettered = dict.fromkeys(range(m.elements), whole[m.i]) if whole[m.i] else parts[m.i]
        for j, x in enumerate(m.ids):
            n = lettered.get(j, 0)
            if n > 1:
                problems.append(f"{name}[{j}]: dead-lettered {n}x")
            if x is None:
                if not n:
                    problems.append(f"{name}[{j}] (no id): neither stored nor dead-lettered")
            else:
                elements[x].append((f"{name}[{j}]", n))
    for x, sent in elements.items():
        kept = [e for e, n in sent if not n]
        if copies[x] and not kept:
            problems.append(f"{x!r}: stored and dead-lettered ({[e for e, _ in sent]})")
        elif kept and not copies[x]:
            problems.append(f"{x!r}: neither stored nor dead-lettered ({kept})")
    problems += [f"{x!r}: stored, never sent" for x in copies if x not in elements]
    return problems


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    pipeline = Pipeline(kafka_bootstrap, tmp_path,
                        INFERWATCH_QUALITY__WAIT_FOR_INFERENCE_SECONDS=str(WAIT_FOR_INFERENCE))
    yield pipeline
    pipeline.close()


def test_hostile_and_generated_traffic_is_conserved_and_stalls_nothing(pipe: Pipeline) -> None:
    settings_ = pipe.settings
    bootstrap, topics = settings_.kafka.bootstrap_servers, settings_.topics
    app = settings_.worker.app_id
    now = time.time()
    worker = pipe.start_worker()
    traffic = build_traffic(now, topics.partitions)  # while the worker starts
    pipe.wait_sink_ready(worker)
    asyncio.run(produce(bootstrap, topics.events, traffic))
    feedback = build_feedback(time.time())  # while the worker takes the events
    asyncio.run(produce(bootstrap, topics.feedback, feedback))

    def stored() -> list[str]:
        rows = run_query(settings_, "SELECT event_id FROM events FINAL "
                                    "WHERE match(event_id, '^m[0-9]+-[0-9]+$')").rows
        return [r[0] for r in rows]

    def fates() -> dict[str, list[str]]:
        """Each stored feedback id's statuses (one, unless stored twice)."""
        out: dict[str, list[str]] = defaultdict(list)
        for feedback_id, status in run_query(
                settings_, "SELECT feedback_id, status FROM feedback FINAL").rows:
            out[feedback_id].append(status)
        return out

    def stored_feedback() -> list[str]:
        return [x for x, statuses in fates().items() for _ in statuses]

    def dead_letters() -> list[Any]:
        return asyncio.run(read_to_end(bootstrap, topics.dlq, topics.partitions))

    def check(events: list[Message], feedback: list[Message]) -> list[str]:
        letters = dead_letters()
        return (account(events, stored(), letters, topics.events)
                + account(feedback, stored_feedback(), letters, topics.feedback))

    def settle(events: list[Message], feedback: list[Message], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        problems = ["not checked"]
        while time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker died:\n{pipe.log(worker)}"
            problems = check(events, feedback)
            if not problems:
                time.sleep(2.0)  # anything twice would show up now
                return check(events, feedback)
            time.sleep(2.0)
        return problems

    def caught_up(checks: list[tuple[str, list[str]]], timeout: float) -> dict[str, dict]:
        """Until every group committed to the end of its topics: what is still behind."""
        deadline = time.monotonic() + timeout
        while True:
            behind = {f"{group} on {topic}": lag for topic, groups in checks
                      for group, lag in asyncio.run(
                          lagging(bootstrap, topic, topics.partitions, groups)).items()}
            if not behind or time.monotonic() > deadline:
                return behind
            time.sleep(1.0)

    problems = settle(traffic, feedback, timeout=240)
    assert not problems, "\n".join(problems[:20]) + "\n" + pipe.log(worker)

    # not vacuous: most schema-drawn events stored, every class of rejection seen
    letters = dead_letters()
    reasons = Counter(dict(r.headers)["inferwatch-error-reason"].decode() for r in letters)
    assert len(stored()) >= 200, reasons
    assert set(reasons) >= {"malformed", "schema", "empty", "batch_too_large", "oversize",
                            "stale_timestamp", "future_timestamp", "unsupported_content_type",
                            "unsupported_content_encoding", "decompression_failed"}, reasons
    assert "internal" not in reasons, reasons
    # and the same for feedback: most of it stored (for nobody: unmatched), each rejection
    from_feedback = Counter(dict(r.headers)["inferwatch-error-reason"].decode()
                            for r in letters if dict(r.headers)["inferwatch-source-topic"]
                            == topics.feedback.encode())
    assert len(fates()) >= 120, from_feedback
    assert set(from_feedback) >= {
        "malformed", "schema", "empty", "batch_too_large", "oversize", "stale_timestamp",
        "future_timestamp", "unsupported_content_type", "unsupported_content_encoding",
        "decompression_failed"}, from_feedback
    # what was dead-lettered is invalid read again (a copy of a feedback sent again too;
    # the big hostile values, none of them a record, are not worth reading twice)
    valid = [(r.key, dict(r.headers).get("inferwatch-batch-index")) for r in letters
             if dict(r.headers)["inferwatch-source-topic"] == topics.feedback.encode()
             and len(r.value or b"") < 65536
             and decode_events(r.value, r.headers, settings_.limits, time.time(),
                               FeedbackEvent).events]
    assert not valid, f"valid feedback dead-lettered: {valid}"

    # the oversized dead letters went as bounded references, with the original key
    truncated = [r for r in letters if "inferwatch-truncated" in dict(r.headers)]
    big_feedback = next(m for m in feedback if m.compress)
    assert {r.key for r in truncated} >= {traffic[-2].key, traffic[-1].key, big_feedback.key}
    for record in truncated:
        reference = json.loads(record.value)
        assert reference["size"] > 900 * 1024 and len(reference["sha256"]) == 64

    # still alive, still storing and dead-lettering, on every partition; feedback for
    # inferences the quality intake has passed on gets the fate the join gives it
    assert worker.poll() is None, pipe.log(worker)
    behind = caught_up([(topics.events, [f"{app}-quality-intake"])], timeout=60)
    assert not behind, f"uncommitted: {behind}\n{pipe.log(worker)}"
    extra = probes(len(traffic), time.time(), topics.partitions)
    joinable = next(m for m in traffic if m.tag == "joinable")
    joined, expected_fates = join_feedback(len(feedback), time.time(), joinable)
    extra_feedback = [joined, *feedback_probes(len(feedback) + 1, time.time(),
                                               topics.partitions)]
    asyncio.run(produce(bootstrap, topics.events, extra))
    asyncio.run(produce(bootstrap, topics.feedback, extra_feedback))
    problems = settle(traffic + extra, feedback + extra_feedback, timeout=120)
    assert not problems, "\n".join(problems[:20]) + "\n" + pipe.log(worker)
    assert worker.poll() is None, pipe.log(worker)
    final = fates()
    assert {x: final.get(x) for x in expected_fates} == {
        x: [fate] for x, fate in expected_fates.items()}, pipe.log(worker)
    # a feedback sent again keeps the fate of its first copy, never only "duplicate"
    assert not [x for x, statuses in final.items() if statuses == ["duplicate"]], final

    # no group is left behind on any partition (offsets committed to the end)
    behind = caught_up([
        (topics.events, [f"{app}-stage1", f"{app}-sink", f"{app}-quality-intake"]),
        (topics.feedback, [f"{app}-quality-intake"]),
        (topics.joins, [f"{app}-quality-join"]),
    ], timeout=60)
    assert not behind, f"uncommitted: {behind}\n{pipe.log(worker)}"
    log = pipe.log(worker)
    assert "RecursionError" not in log and "Agent crashed" not in log, log

    # strangers on our own topics (partials, metrics, scores, alerts, joins): each
    # dead-lettered once, by the one role that owns it, and the worker goes on
    garbage = [b"[" * 5000 + b"]" * 5000, os.urandom(300), b'{"series_key": 5}', None]
    own = [topics.partials, topics.metrics, topics.scores, topics.alerts, topics.joins]
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
