"""Cost of TLS + SASL on the batched ingest path: plaintext against SASL_SSL (SCRAM-SHA-512),
one broker, one run.

The project's KRaft broker in its secured mode (``LocalKafka(secure=True)``: SASL_SSL,
the standard authorizer and ACLs) with a second, PLAINTEXT listener on the same broker,
so both transports meet the same broker process, disk, topic layout and ACL checks
(the plaintext principal, ``User:ANONYMOUS``, gets the same literal/prefixed ACLs as the
SASL users; nobody is a super user). Per leg, a fresh 6-partition topic and the same
pre-generated events:

* produce — the producer SDK (``pipeline.sdk.Producer``: JSON, 500 events per message,
  ``acks=all``, one message in flight) from the first ``emit`` to the end of ``flush``;
* consume — a bare aiokafka consumer that decodes every message with msgspec (the
  transport-bound case: TLS is the largest share here);
* stage 1 — the same consumer feeding the worker's stage 1 (``PartialStage.on_batch``:
  decode, validate, window sketches), in this process, without Kafka writes.

Each is timed in events per second, with the CPU time of this process and of the broker
(``/proc/<pid>/stat``, 10 ms ticks) per event. A warm-up round with a tenth of the events
comes first and is not counted. Rounds alternate which transport goes first; the table
gives medians over rounds and the median of the per-round ratios SASL_SSL / plaintext.
Compression is the SDK's default (gzip) and none (every byte encrypted: TLS's worst case).

Usage:  .venv/bin/python benchmarks/secure_ingest.py [--events 200000] [--passes 2]
            [--rounds 5] [--port 19122] [--compression gzip,none]
Ports: ``--port`` SASL_SSL, +1 controller, +2 PLAINTEXT (127.0.0.1). The broker's home
(``benchmarks/out/secure-kafka-<port>``) is made afresh, with a new CA and new passwords,
and removed at the end; the figures go to ``benchmarks/out/secure_ingest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import KafkaSettings, Settings, load_settings  # noqa: E402
from pipeline.dev.kafka import LocalKafka  # noqa: E402
from pipeline.dev.secure import (  # noqa: E402
    ADMIN,
    DESCRIBE,
    PREFIXED,
    PRODUCER,
    READ,
    TOPIC,
    WORKER,
    WRITE,
    Acl,
    create_acls,
)
from pipeline.dev.simulate import TrafficModel  # noqa: E402
from pipeline.runtime.kafka import client_options, ensure_topics  # noqa: E402
from pipeline.sdk import Producer  # noqa: E402
from schemas.event import InferenceEvent  # noqa: E402

BATCH = 500
LEGS = ("produce", "consume", "stage1")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, every thread included (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall time, this process's CPU and the broker's CPU between start() and stop()."""

    def __init__(self, broker_pid: int) -> None:
        self.pid = broker_pid

    def start(self) -> None:
        self.t0, self.c0, self.b0 = time.perf_counter(), time.process_time(), \
            _cpu_seconds(self.pid)

    def stop(self, events: int) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        return {"events_per_s": events / wall, "wall_s": wall,
                "client_cpu_us": (time.process_time() - self.c0) / events * 1e6,
                "broker_cpu_us": (_cpu_seconds(self.pid) - self.b0) / events * 1e6}


def generate(n: int) -> list[InferenceEvent]:
    traffic = TrafficModel(seed=11, id_prefix=f"sec-{uuid.uuid4().hex[:6]}")
    records = traffic.stream(n / 60, 60.0, time.time() - 120, resources=False)
    return [r for _, r in records if isinstance(r, InferenceEvent)][:n]


def produce(settings: Settings, topic: str, events: list[InferenceEvent], passes: int,
            compression: str, meter: Meter) -> dict[str, float]:
    """``events`` ``passes`` times through one SDK producer (the buffer holds one pass)."""
    producer = Producer(settings, topic=topic, batch_size=BATCH, linger=0.005,
                        buffer_size=len(events) + 1,
                        compression=None if compression == "none" else compression)
    total = len(events) * passes
    try:
        meter.start()
        for _ in range(passes):
            for event in events:
                producer.emit(event)
            if not producer.flush(timeout=600):
                raise RuntimeError(f"producer did not deliver: {producer.stats}")
        result = meter.stop(total)
        if producer.stats.sent != total:
            raise RuntimeError(f"sent {producer.stats.sent} of {total}")
        return result
    finally:
        producer.close(timeout=10)


async def consume(settings: Settings, topic: str, expected: int, meter: Meter,
                  stage1: bool) -> dict[str, float]:
    """Read ``topic`` from the start until ``expected`` events; timed from the first
    fetched batch (the connection and SASL handshake are left out: they are once per
    client, not per event)."""
    decode = msgspec.json.Decoder(InferenceEvent | list[InferenceEvent]).decode
    stage = None
    if stage1:
        from pipeline.runtime.worker import stages

        stage = stages(msgspec.structs.replace(
            settings, topics=msgspec.structs.replace(settings.topics, events=topic)))[0]
        for p in range(settings.topics.partitions):
            stage.on_assign(topic, p, {})
    consumer = AIOKafkaConsumer(topic, **client_options(settings.kafka), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    seen, started = 0, False
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batch and not started:
                meter.start()
                started = True
            for tp, messages in batch.items():
                if stage is not None:
                    stage.on_batch(tp.topic, tp.partition, messages, time.time())
                    seen = stage.counts.events + sum(stage.counts.rejected.values())
                else:
                    for m in messages:
                        out = decode(m.value)
                        seen += len(out) if isinstance(out, list) else 1
        return meter.stop(seen)
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=2,
                        help="times the events are sent per leg (a longer leg, less noise)")
    parser.add_argument("--port", type=int, default=19122)
    parser.add_argument("--compression", default="gzip,none")
    parser.add_argument("--legs", default=",".join(LEGS),
                        help="produce always runs (the others read what it wrote)")
    args = parser.parse_args()
    compressions = args.compression.split(",")
    legs = ["produce", *(leg for leg in args.legs.split(",") if leg != "produce")]

    out = ROOT / "benchmarks" / "out"
    home = out / f"secure-kafka-{args.port}"
    shutil.rmtree(home, ignore_errors=True)
    kafka = LocalKafka.private(home, args.port, secure=True, plaintext_port=args.port + 2,
                               say=say)
    kafka.up(timeout=120)
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench.sec-{tag}."
    base = load_settings(environ={"INFERWATCH_HOME": str(home / "client"),
                                  "INFERWATCH_PRIVACY__PSEUDONYMIZE": "",
                                  "INFERWATCH_TOPICS__EVENTS": f"{prefix}events"})
    transports: dict[str, dict[str, KafkaSettings]] = {
        "PLAINTEXT": {role: KafkaSettings(bootstrap_servers=f"127.0.0.1:{args.port + 2}")
                      for role in ("produce", "consume")},
        "SASL_SSL": {"produce": kafka.client(PRODUCER), "consume": kafka.client(WORKER)},
    }
    rows: list[dict[str, Any]] = []
    try:
        admin = msgspec.structs.replace(base, kafka=kafka.client(ADMIN))
        acls = [Acl(f"User:{PRODUCER}", op, TOPIC, prefix, PREFIXED) for op in (WRITE, DESCRIBE)]
        acls += [Acl(f"User:{WORKER}", op, TOPIC, prefix, PREFIXED) for op in (READ, DESCRIBE)]
        acls += [Acl("User:ANONYMOUS", op, TOPIC, prefix, PREFIXED)
                 for op in (READ, WRITE, DESCRIBE)]
        asyncio.run(create_acls(admin.kafka, acls))
        say(f"generating {args.events:,} events …")
        events = generate(args.events)
        pid = kafka.status().pid
        assert pid is not None
        meter = Meter(pid)
        for round_ in range(-1, args.rounds):  # round -1: warm-up, a tenth of the events
            order = list(transports) if round_ % 2 == 0 else list(reversed(transports))
            batch = events if round_ >= 0 else events[:max(BATCH, len(events) // 10)]
            for compression in compressions:
                for name in order:
                    topic = f"{prefix}r{round_ + 1}.{compression}.{name.lower()}"
                    asyncio.run(ensure_topics(admin, [topic]))
                    row: dict[str, Any] = {"round": round_, "compression": compression,
                                           "transport": name}
                    produce_settings = msgspec.structs.replace(
                        base, kafka=transports[name]["produce"])
                    consume_settings = msgspec.structs.replace(
                        base, kafka=transports[name]["consume"])
                    total = len(batch) * args.passes
                    row["produce"] = produce(produce_settings, topic, batch, args.passes,
                                             compression, meter)
                    if "consume" in legs:
                        row["consume"] = asyncio.run(consume(consume_settings, topic,
                                                             total, meter, stage1=False))
                    if "stage1" in legs:
                        row["stage1"] = asyncio.run(consume(consume_settings, topic,
                                                            total, meter, stage1=True))
                    if round_ >= 0:
                        rows.append(row)
                    say(f"round {round_} {compression:>4} {name:>9}: " + ", ".join(
                        f"{leg} {row[leg]['events_per_s']:,.0f} ev/s" for leg in legs))
    finally:
        kafka.down()
        shutil.rmtree(home, ignore_errors=True)  # its CA key and passwords: not kept

    report(rows, legs, compressions, args)
    (out / "secure_ingest.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "events": args.events,
         "passes": args.passes, "rounds": args.rounds, "batch": BATCH, "rows": rows}, indent=1))


def report(rows: list[dict[str, Any]], legs: list[str], compressions: list[str],
           args: argparse.Namespace) -> None:
    print(f"\n{time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()}, {os.cpu_count()} cores, "
          f"{platform.machine()}, Python {platform.python_version()}, {args.events:,} events "
          f"x {args.passes} passes per leg, {args.rounds} rounds, {BATCH} events/message")
    print("| leg | compression | plaintext ev/s | SASL_SSL ev/s | rate SASL_SSL / plaintext "
          "(median of rounds, range) | client CPU µs/ev plain → SASL_SSL | broker CPU µs/ev "
          "plain → SASL_SSL | CPU (client + broker) SASL_SSL / plaintext (median, range) |")
    print("|---|---|---|---|---|---|---|---|")
    for leg in legs:
        for compression in compressions:
            def of(transport: str, what: str, leg: str = leg,
                   compression: str = compression) -> list[float]:
                return [r[leg][what] for r in sorted(rows, key=lambda r: r["round"])
                        if r["transport"] == transport and r["compression"] == compression]

            plain, secure = of("PLAINTEXT", "events_per_s"), of("SASL_SSL", "events_per_s")
            ratios = [s / p for s, p in zip(secure, plain, strict=True)]
            cpu = [(sc + sb) / (pc + pb) for sc, sb, pc, pb in zip(
                of("SASL_SSL", "client_cpu_us"), of("SASL_SSL", "broker_cpu_us"),
                of("PLAINTEXT", "client_cpu_us"), of("PLAINTEXT", "broker_cpu_us"),
                strict=True)]
            med = statistics.median
            print(f"| {leg} | {compression} | {med(plain):,.0f} | {med(secure):,.0f} | "
                  f"{med(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | "
                  f"{med(of('PLAINTEXT', 'client_cpu_us')):.2f} → "
                  f"{med(of('SASL_SSL', 'client_cpu_us')):.2f} | "
                  f"{med(of('PLAINTEXT', 'broker_cpu_us')):.2f} → "
                  f"{med(of('SASL_SSL', 'broker_cpu_us')):.2f} | "
                  f"{med(cpu):.2f} ({min(cpu):.2f}–{max(cpu):.2f}) |")


if __name__ == "__main__":
    main()
