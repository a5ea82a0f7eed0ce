"""Ingest benchmark: events per second from Kafka through `inferwatch worker` into ClickHouse.

One run, same machine, same messages:
  * baseline — a bare aiokafka consumer that only decodes with msgspec (the ceiling);
  * worker — the process and sink roles, embedded chDB, from a cold start, timed by the
    sink's own batch log lines (inserts of 10,000 events), start-up excluded, laid out as
      - ``one``:   `inferwatch worker` (both roles in one process, the default);
      - ``split``: `inferwatch worker --roles process` and `inferwatch worker --roles sink`,
        two processes (the embedded store is opened by the sink process only).
Each layout reads the same events topic with its own consumer groups, topics downstream
of the events and store. For single-event messages and for batched messages (500 events
per message).

Besides events per second: the CPU seconds per event of the sink's process and of the
bare consumer (other work on a shared machine moves the rates a lot more than the CPU
each event costs, and their ratio is what the rates would be with a core each), and how
much of the topic the process role's stage 1 had committed when the sink was done (in
one process the roles share one GIL, and the sink's rate is partly the other's loss).

Usage:  .venv/bin/python benchmarks/ingest.py [--events 200000] [--bootstrap HOST:PORT]
            [--port 19392] [--messages single,batched] [--layouts one,split]
Without --bootstrap (or INFERWATCH_KAFKA) it starts the project's KRaft broker on
``--port`` under benchmarks/out/ and stops it afterwards.
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
from typing import IO

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


MODES = {"single": ("single-event messages", 1), "batched": ("batched messages (500/msg)", 500)}
LAYOUTS = {"one": [None], "split": ["process", "sink"]}  # the --roles of each worker process
_DOWNSTREAM = ("dlq", "resources", "partials", "metrics", "scores", "alerts", "silences",
               "baselines")


def settings_for(
    bootstrap: str, home: Path, tag: str, batch_size: int, layout: str = ""
) -> tuple[Settings, dict[str, str]]:
    """Settings of one run: the events topic of ``tag``; with ``layout``, the app id and
    every topic downstream of the events its own, so layouts do not read each other's."""
    run = f"{tag}-{layout}" if layout else tag
    env = {
        "INFERWATCH_KAFKA": bootstrap,
        "INFERWATCH_HOME": str(home),
        "INFERWATCH_WORKER__APP_ID": f"bench-{run}",
        "INFERWATCH_TOPICS__EVENTS": f"bench.{tag}.events",
        **{f"INFERWATCH_TOPICS__{t.upper()}": f"bench.{run}.{t}" for t in _DOWNSTREAM},
        # Inserts of at most 10,000 events, so a run has many batches to time.
        "INFERWATCH_WORKER__SINK_BATCH_SIZE": str(10_000 // batch_size),
    }
    return load_settings(environ=env), env


def produce(settings: Settings, events: int, batch_size: int) -> int:
    traffic = TrafficModel(seed=11, id_prefix=f"bench-{uuid.uuid4().hex[:6]}")
    records = (r for r in traffic.stream(events / 60, 60.0, time.time() - 120, resources=False))
    stats = asyncio.run(publish(settings, records, speed=0, batch_size=batch_size))
    return stats.events


async def bare_consumer(settings: Settings, expected: int) -> tuple[float, float]:
    """The ceiling: consume and msgspec-decode every message; events per second, and CPU
    seconds per event (this process's, from the first fetched batch on)."""
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
                started, cpu = time.perf_counter(), time.process_time()
            for messages in batch.values():
                for m in messages:
                    out = decoder.decode(m.value)
                    seen += len(out) if isinstance(out, list) else 1
        if started is None:
            raise RuntimeError("no events to consume")
        return (seen / (time.perf_counter() - started),
                (time.process_time() - cpu) / seen)
    finally:
        await consumer.stop()


async def stage1_messages(settings: Settings) -> int:
    """Messages of the events topic the process role's stage 1 has committed so far."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    topic = settings.topics.events
    tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(
            f"{settings.worker.app_id}-stage1", partitions=tps)
        return sum(max(m.offset, 0) for m in offsets.values())
    finally:
        await admin.close()


_BATCH_LINE = re.compile(r"^\[([\d\- :,]+)\] .*sink batch: (\d+) events", re.M)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, every thread included (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_rate(settings: Settings, env: dict[str, str], expected: int,
                roles: list[str | None]) -> tuple[float, float, int]:
    """Cold-start one worker process per entry of ``roles`` (None: the configured roles);
    steady-state events/s from the sink's own batch log lines, and the CPU seconds the
    sink's process spent per event stored (from the first batch to the last: noise from
    other work on the machine slows the rate, much less the CPU per event), and the
    messages the process role's stage 1 had committed when the sink had stored them all
    (how far the other role kept up meanwhile).

    The first batch is left out (it includes the consumer-group join), and so is a last
    batch smaller than the others (the sink waited ``sink_flush_seconds`` for events that
    never came): the rate is the events of batches 2..k over the time between the log
    lines of batch 1 and batch k.
    """
    procs: list[tuple[subprocess.Popen, Path, IO[bytes]]] = []
    try:
        for role in roles:
            log_path = settings.home_path / f"worker-{role or 'all'}.log"
            log = open(log_path, "wb")  # noqa: SIM115
            command = [sys.executable, "-m", "pipeline", "worker", "--loglevel", "info"]
            proc = subprocess.Popen([*command, *(["--roles", role] if role else [])],
                                    env={**os.environ, **env}, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=ROOT)
            procs.append((proc, log_path, log))
        sink_proc, sink_log, _ = procs[roles.index("sink") if "sink" in roles else 0]
        first: tuple[int, float] | None = None  # (events stored, sink CPU) at the first batch
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            cpu = _cpu_seconds(sink_proc.pid)
            for proc, log_path, _ in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {log_path.read_text()}")
            batches = [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f"), int(n))
                       for t, n in _BATCH_LINE.findall(sink_log.read_text())]
            stored = sum(n for _, n in batches)
            if first is None and batches:
                first = (stored, cpu)
            if stored >= expected:
                if batches[-1][1] < max(n for _, n in batches):
                    batches.pop()  # the tail: a flush timeout, not the sink's speed
                if len(batches) < 3:
                    raise RuntimeError("fewer than 3 sink batches: raise --events to time it")
                span = (batches[-1][0] - batches[0][0]).total_seconds()
                assert first is not None
                return (sum(n for _, n in batches[1:]) / span,
                        (cpu - first[1]) / max(1, stored - first[0]),
                        asyncio.run(stage1_messages(settings)))
            time.sleep(0.1)
        raise RuntimeError("worker did not store every event in time")
    finally:
        for proc, _, _ in procs:
            proc.terminate()
        for proc, _, log in procs:
            proc.wait(timeout=60)
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap", default=os.environ.get("INFERWATCH_KAFKA"))
    parser.add_argument("--port", type=int, default=19392,
                        help="of the private broker started without --bootstrap")
    parser.add_argument("--messages", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--layouts", default="one",
                        help=f"comma-separated, of {', '.join(LAYOUTS)}")
    args = parser.parse_args()
    modes = [MODES[m] for m in args.messages.split(",")]
    layouts = args.layouts.split(",")
    if unknown := set(layouts) - set(LAYOUTS):
        parser.error(f"unknown layouts {sorted(unknown)}")

    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    local = None
    bootstrap = args.bootstrap
    if not bootstrap:
        local = LocalKafka.private(out / f"kafka-home-{args.port}", args.port, say=say)
        local.up()
        bootstrap = local.bootstrap
    rows = []
    try:
        for label, batch_size in modes:
            tag = uuid.uuid4().hex[:8]
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                settings, _ = settings_for(bootstrap, Path(tmp), tag, batch_size)
                asyncio.run(ensure_topics(settings))
                say(f"{label}: producing {args.events} events …")
                produced = produce(settings, args.events, batch_size)
                say(f"{label}: bare aiokafka + msgspec consumer …")
                ceiling, ceiling_cpu = asyncio.run(bare_consumer(settings, produced))
            for layout in layouts:
                with tempfile.TemporaryDirectory(dir=out) as tmp:
                    settings, env = settings_for(bootstrap, Path(tmp), tag, batch_size, layout)
                    asyncio.run(ensure_topics(settings))
                    say(f"{label}: inferwatch worker ({layout}) → ClickHouse …")
                    rate, cpu, processed = worker_rate(settings, env, produced,
                                                       LAYOUTS[layout])
                kept_up = min(1.0, processed * batch_size / produced)
                rows.append((label, layout, produced, rate, ceiling, cpu, ceiling_cpu, kept_up))
    finally:
        if local is not None:
            local.down()

    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print("| messages | worker processes | events | worker → ClickHouse ev/s | "
          "bare consumer ev/s | ratio | sink process CPU µs/event | bare consumer CPU "
          "µs/event | ratio of CPU per event | processed by stage 1 meanwhile |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, layout, produced, rate, ceiling, cpu, ceiling_cpu, kept_up in rows:
        roles = " + ".join(f"--roles {r}" if r else "both roles" for r in LAYOUTS[layout])
        print(f"| {label} | {roles} | {produced:,} | {rate:,.0f} | {ceiling:,.0f} | "
              f"{rate / ceiling:.2f} | {cpu * 1e6:.1f} | {ceiling_cpu * 1e6:.1f} | "
              f"{ceiling_cpu / cpu:.2f} | {kept_up:.0%} |")
    print("(ratio of CPU per event: bare consumer CPU / sink process CPU per event, what the "
          "ratio would be with a core each; with both roles in one process its CPU is both "
          "roles')")


if __name__ == "__main__":
    main()
