"""Ingest benchmark: events per second from Kafka through `inferwatch worker` into ClickHouse.

One run, same machine, same messages:
  * baseline — a bare aiokafka consumer that only decodes with msgspec (the ceiling);
  * worker — `inferwatch worker` (process + sink roles, embedded chDB) from a cold start,
    timed by its own sink batch log lines (inserts of 10,000 events), start-up excluded.
Both for single-event messages and for batched messages (500 events per message).

Usage:  .venv/bin/python benchmarks/ingest.py [--events 200000] [--bootstrap HOST:PORT]
Without --bootstrap (or INFERWATCH_KAFKA) it starts the project's KRaft broker on port
19392 under benchmarks/out/ and stops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.dev.kafka import LocalKafka  # noqa: E402
from pipeline.dev.publish import publish  # noqa: E402
from pipeline.dev.simulate import TrafficModel  # noqa: E402
from pipeline.runtime.kafka import ensure_topics  # noqa: E402
from schemas.event import InferenceEvent  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def settings_for(
    bootstrap: str, home: Path, tag: str, batch_size: int
) -> tuple[Settings, dict[str, str]]:
    env = {
        "INFERWATCH_KAFKA": bootstrap,
        "INFERWATCH_HOME": str(home),
        "INFERWATCH_WORKER__APP_ID": f"bench-{tag}",
        "INFERWATCH_TOPICS__EVENTS": f"bench.{tag}.events",
        "INFERWATCH_TOPICS__DLQ": f"bench.{tag}.dlq",
        "INFERWATCH_TOPICS__RESOURCES": f"bench.{tag}.resources",
        # Inserts of at most 10,000 events, so a run has many batches to time.
        "INFERWATCH_WORKER__SINK_BATCH_SIZE": str(10_000 // batch_size),
    }
    return load_settings(environ=env), env


def produce(settings: Settings, events: int, batch_size: int) -> int:
    traffic = TrafficModel(seed=11, id_prefix=f"bench-{uuid.uuid4().hex[:6]}")
    records = (r for r in traffic.stream(events / 60, 60.0, time.time() - 120, resources=False))
    stats = asyncio.run(publish(settings, records, speed=0, batch_size=batch_size))
    return stats.events


async def bare_consumer(settings: Settings, expected: int) -> float:
    """The ceiling: consume and msgspec-decode every message; events per second."""
    decoder = msgspec.json.Decoder(InferenceEvent | list[InferenceEvent])
    consumer = AIOKafkaConsumer(
        settings.topics.events, bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    seen = 0
    started = None
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batch:
                started = time.perf_counter()
            for messages in batch.values():
                for m in messages:
                    out = decoder.decode(m.value)
                    seen += len(out) if isinstance(out, list) else 1
        return seen / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()


_BATCH_LINE = re.compile(r"^\[([\d\- :,]+)\] .*sink batch: (\d+) events", re.M)


def worker_rate(settings: Settings, env: dict[str, str], expected: int) -> float:
    """Cold-start a worker; steady-state events/s from its own batch log lines.

    The first batch is left out (it includes the consumer-group join); the rate is the
    events of batches 2..k over the time between the log lines of batch 1 and batch k.
    """
    log_path = settings.home_path / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker", "--loglevel", "info"],
        env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log_path.read_text()}")
            batches = [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f"), int(n))
                       for t, n in _BATCH_LINE.findall(log_path.read_text())]
            if sum(n for _, n in batches) >= expected:
                if len(batches) < 3:
                    raise RuntimeError("fewer than 3 sink batches: raise --events to time it")
                span = (batches[-1][0] - batches[0][0]).total_seconds()
                return sum(n for _, n in batches[1:]) / span
            time.sleep(0.5)
        raise RuntimeError("worker did not store every event in time")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap", default=os.environ.get("INFERWATCH_KAFKA"))
    args = parser.parse_args()

    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    local = None
    bootstrap = args.bootstrap
    if not bootstrap:
        local = LocalKafka.private(out / "kafka-home", 19392, say=say)
        local.up()
        bootstrap = local.bootstrap
    rows = []
    try:
        modes = (("single-event messages", 1), ("batched messages (500/msg)", 500))
        for label, batch_size in modes:
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                tag = uuid.uuid4().hex[:8]
                settings, env = settings_for(bootstrap, Path(tmp), tag, batch_size)
                asyncio.run(ensure_topics(settings))
                say(f"{label}: producing {args.events} events …")
                produced = produce(settings, args.events, batch_size)
                say(f"{label}: bare aiokafka + msgspec consumer …")
                ceiling = asyncio.run(bare_consumer(settings, produced))
                say(f"{label}: inferwatch worker → ClickHouse …")
                rate = worker_rate(settings, env, produced)
                rows.append((label, produced, rate, ceiling))
    finally:
        if local is not None:
            local.down()

    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print("| messages | events | worker → ClickHouse ev/s | bare consumer ev/s | ratio |")
    print("|---|---|---|---|---|")
    for label, produced, rate, ceiling in rows:
        print(f"| {label} | {produced:,} | {rate:,.0f} | {ceiling:,.0f} | {rate / ceiling:.2f} |")


if __name__ == "__main__":
    main()
