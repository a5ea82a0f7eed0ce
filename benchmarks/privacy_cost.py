"""Cost of the privacy settings: ingest redaction in the decoder, stage 1 and the sink, and
pseudonymisation in the SDK's ``emit``, each against the same work without them, same run.

Ingest (``privacy.drop_attributes`` / ``redact_attributes`` / ``drop_features``, applied in
``decode_events``, so stage 1, the sink and the quality intake pay it once each):

* ``off``: nothing configured, the default: the decoder's one ``redaction is not None``;
* ``hit``: ``drop_attributes=[client_ip]``, ``redact_attributes=[email]``,
  ``drop_features=[zip]``, and every event carries all three (the worst case: every event
  is rewritten);
* ``miss``: three rules naming keys no event has (the scan alone).

Traffic: ``pipeline.dev.simulate.synthetic`` (seed 7, the default models: 2 attributes and
2–4 features per event), each event given ``client_ip``, ``email`` and a ``zip`` feature,
as JSON arrays of 500 events per message and as single-event messages. Timed: CPU seconds
(``time.process_time``) of ``decode_events`` over every message; of stage 1
(``PartialStage.on_batch``, built as the worker builds it, 10 records per call, a fresh
stage per pass); of the sink's ``collect`` (decode → column rows, no insert). Each variant
once per round, in turn, ``--rounds`` rounds, median; the worker's GC settings
(``tune_gc``).

SDK (``privacy.pseudonymize``, applied in ``Producer.emit`` on the caller's thread, spans
included): ``emit()`` of ready events that carry a ``user`` and an ``email`` attribute, with
``[]`` (off), ``[user]`` and a key, ``[user, attributes.email]`` and a key, and ``[user]``
without a key (the field dropped); a producer aimed at a closed port (nothing is sent, the
buffer holds everything).

Usage:  .venv/bin/python benchmarks/privacy_cost.py [--events 100000] [--rounds 5] [--quick]
Progress to stderr, markdown to stdout, everything to ``benchmarks/out/privacy_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import ConsumerRecord, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import (  # noqa: E402
    KafkaSettings,
    PrivacySettings,
    Settings,
    load_settings,
)
from pipeline.dev.simulate import synthetic  # noqa: E402
from pipeline.runtime.memory_tuning import tune_gc  # noqa: E402
from pipeline.runtime.stage import Record  # noqa: E402
from pipeline.runtime.worker import stages  # noqa: E402
from pipeline.sdk.producer import Producer  # noqa: E402
from pipeline.sinks.clickhouse.batch import Batch  # noqa: E402
from pipeline.sinks.clickhouse.writer import ClickHouseSink  # noqa: E402
from pipeline.sources.codec import decode_events  # noqa: E402
from pipeline.sources.redaction import Redaction  # noqa: E402
from schemas.event import InferenceEvent  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
HEADERS = (("content-type", b"application/json"),)
KEY = "benchmark-key-0123456789abcdef0123456789"  # not a secret: a fixed test key
INGEST = {
    "off": PrivacySettings(),
    "hit": PrivacySettings(drop_attributes=["client_ip"], redact_attributes=["email"],
                           drop_features=["zip"]),
    "miss": PrivacySettings(drop_attributes=["ssn"], redact_attributes=["phone"],
                            drop_features=["dob"]),
}
SDK = {
    "off": ([], KEY),
    "user": (["user"], KEY),
    "user+email": (["user", "attributes.email"], KEY),
    "user, no key": (["user"], ""),
}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def workload(n: int, start: float) -> list[InferenceEvent]:
    events: list[InferenceEvent] = []
    for i, (_, record) in enumerate(synthetic(7, 1_000.0, n / 1_000.0 + 5, start,
                                              resources=False)):
        if len(events) == n:
            break
        if isinstance(record, InferenceEvent):
            record.attributes = {**record.attributes, "client_ip": f"10.0.{i % 256}.{i % 97}",
                                 "email": f"user{i % 5000}@example.com"}
            record.features = {**record.features, "zip": f"{10000 + i % 900}"}
            events.append(record)
    return events


def messages(events: Sequence[InferenceEvent], per_message: int) -> list[bytes]:
    enc = msgspec.json.Encoder()
    if per_message == 1:
        return [enc.encode(e) for e in events]
    return [enc.encode(list(events[i:i + per_message]))
            for i in range(0, len(events), per_message)]


def cpu(fn: Callable[[], Any]) -> float:
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def decode_pass(values: list[bytes], settings: Settings, wall: float) -> float:
    rules = Redaction.from_settings(settings.privacy)
    limits = settings.limits

    def go() -> None:
        for value in values:
            decode_events(value, HEADERS, limits, wall, InferenceEvent, None, redaction=rules)
    return cpu(go)


def stage_pass(values: list[bytes], settings: Settings, wall: float) -> float:
    first, _, _ = stages(settings)
    topic = settings.topics.events
    for p in range(settings.topics.partitions):
        first.on_assign(topic, p, {})
    records = [Record(topic, 0, i, None, v, HEADERS) for i, v in enumerate(values)]
    calls = [records[i:i + 10] for i in range(0, len(records), 10)]
    total = 0.0
    for call in calls:
        c0 = time.process_time()
        first.on_batch(topic, 0, call, wall)
        total += time.process_time() - c0
    return total


def sink_pass(values: list[bytes], settings: Settings, wall: float) -> float:
    sink = ClickHouseSink(settings)  # no client: collect() decodes into rows only
    tp = TopicPartition(settings.topics.events, 0)
    records = [ConsumerRecord(tp.topic, 0, i, 0, 0, None, v, None, 0, len(v), list(HEADERS))
               for i, v in enumerate(values)]
    batch = Batch()
    return cpu(lambda: sink.collect({tp: records}, batch))


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def sdk_pass(events: list[InferenceEvent], fields: list[str], key: str) -> float:
    os.environ["INFERWATCH_PSEUDONYM_KEY"] = key
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=closed_port()),
                        privacy=PrivacySettings(pseudonymize=fields))
    producer = Producer(settings, buffer_size=len(events) + 1)
    try:
        def go() -> None:
            for event in events:
                producer.emit(event)
        spent = cpu(go)
        assert producer.stats.buffered == len(events), producer.stats
        return spent
    finally:
        producer.close(timeout=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20,000 events, 3 rounds")
    parser.add_argument("--out", type=Path, default=OUT / "privacy_cost.json")
    args = parser.parse_args()
    for name in ("pipeline.sdk", "aiokafka"):  # the closed port's retries, the no-key warning
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if args.quick:
        args.events, args.rounds = 20_000, 3
    load0 = os.getloadavg()[0]
    base = load_settings(environ={})
    wall = time.time()
    events = workload(args.events, wall - args.events / 1_000.0 - 10)
    n = len(events)
    batched, single = messages(events, 500), messages(events, 1)
    say(f"{n} events, {len(batched)} batched messages, {len(single)} single; "
        f"{sum(map(len, batched)) / n:.0f} B of JSON per event")
    tune_gc()
    settings = {name: msgspec.structs.replace(base, privacy=p) for name, p in INGEST.items()}
    sdk_events = [msgspec.structs.replace(e, user=f"user-{i % 5000}@example.com")
                  for i, e in enumerate(events[:min(n, 50_000)])]

    parts: dict[str, tuple[Callable[[Settings], float], Sequence[str]]] = {
        "decode_events, batched": (lambda s: decode_pass(batched, s, wall), INGEST),
        "decode_events, single-event messages": (lambda s: decode_pass(single, s, wall),
                                                 INGEST),
        "stage 1 (PartialStage), batched": (lambda s: stage_pass(batched, s, wall),
                                            ("off", "hit")),
        "sink collect (decode → rows), batched": (lambda s: sink_pass(batched, s, wall),
                                                  ("off", "hit")),
    }
    timings: dict[str, dict[str, list[float]]] = {p: {v: [] for v in vs}
                                                  for p, (_, vs) in parts.items()}
    sdk: dict[str, list[float]] = {v: [] for v in SDK}
    for r in range(args.rounds):
        for part, (run, variants) in parts.items():
            for variant in variants:
                timings[part][variant].append(run(settings[variant]) / n * 1e6)
        for variant, (fields, key) in SDK.items():
            sdk[variant].append(sdk_pass(sdk_events, fields, key) / len(sdk_events) * 1e6)
        say(f"round {r + 1}/{args.rounds} done")
    os.environ.pop("INFERWATCH_PSEUDONYM_KEY", None)
    load1 = os.getloadavg()[0]

    def ratio(rows: dict[str, list[float]], variant: str) -> float:
        return statistics.median(v / o for v, o in zip(rows[variant], rows["off"], strict=True))

    print(f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, "
          f"Python {platform.python_version()}, msgspec {msgspec.__version__}; load average "
          f"{load0:.1f} at the start, {load1:.1f} at the end. {n} events, {args.rounds} rounds.")
    print()
    print("| part | variant | CPU µs / event (median) | rounds | × off (median of ratios) |")
    print("|---|---|---|---|---|")
    report: dict[str, Any] = {"events": n, "rounds": args.rounds, "load": [load0, load1],
                              "ingest": {}, "sdk": {}}
    for part, rows in timings.items():
        for variant, values in rows.items():
            med = statistics.median(values)
            spread = f"{min(values):.3f}–{max(values):.3f}"
            x = "1.00" if variant == "off" else f"{ratio(rows, variant):.3f}"
            print(f"| {part} | {variant} | {med:.3f} | {spread} | {x} |")
        report["ingest"][part] = rows
    for variant, values in sdk.items():
        med = statistics.median(values)
        x = "1.00" if variant == "off" else f"{ratio(sdk, variant):.3f}"
        print(f"| SDK `emit()` | {variant} | {med:.3f} | {min(values):.3f}–{max(values):.3f} "
              f"| {x} |")
    report["sdk"] = sdk
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
