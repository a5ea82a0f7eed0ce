"""Recovery benchmark: time from SIGKILL of a worker to its partitions assigned and
processing again after an immediate restart, with dynamic and with static group
membership (KIP-345, ``worker.instance_id``), same run, same broker, same traffic.

For each mode and run: steady traffic (``inferwatch simulate``, real time) flows to a
fresh set of topics; one ``inferwatch worker`` (process + sink roles, embedded chDB)
runs until both consumer groups commit; it is SIGKILLed and restarted at once with the
same settings. Two groups are watched from outside with the admin API, every 0.1 s:

* ``assigned``: the group is Stable again with only new members (the restarted worker);
* ``processing``: the group's committed offsets on the events topic passed the topic's
  end offsets at the kill, i.e. messages produced after the kill were processed
  (the sink commits only after a ClickHouse insert; faust commits every 2.8 s, so its
  figure includes up to one commit interval).

The ``process`` group watched is stage 1's (``<app_id>-stage1``, the runtime's own
consumer); every group gets its instance id from ``INFERWATCH_WORKER__INSTANCE_ID``
(faust, now only the alert agent, also from ``CONSUMER_GROUP_INSTANCE_ID``).

Usage:  .venv/bin/python benchmarks/recovery.py [--runs 2] [--port 19192]
Starts the project's KRaft broker on ``--port`` (its own home under .inferwatch/) unless
``--bootstrap`` is given, and stops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.dev.kafka import LocalKafka  # noqa: E402
from pipeline.runtime.kafka import ensure_topics  # noqa: E402

TOPICS = ("events", "dlq", "resources", "partials", "metrics", "scores", "alerts",
          "silences", "baselines")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Run:
    """One worker against fresh topics and groups, with traffic flowing."""

    def __init__(self, bootstrap: str, out: Path, mode: str, index: int) -> None:
        tag = f"{mode}-{index}-{uuid.uuid4().hex[:6]}"
        self.dir = out / tag
        self.dir.mkdir(parents=True)
        self.mode = mode
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith("INFERWATCH_") and k != "CONSUMER_GROUP_INSTANCE_ID"},
            "INFERWATCH_KAFKA": bootstrap,
            "INFERWATCH_HOME": str(self.dir / "home"),
            "INFERWATCH_WORKER__APP_ID": f"recovery-{tag}",
            "INFERWATCH_WORKER__SINK_FLUSH_SECONDS": "0.3",
            **{f"INFERWATCH_TOPICS__{t.upper()}": f"recovery.{tag}.{t}" for t in TOPICS},
        }
        if mode == "static":
            self.env["INFERWATCH_WORKER__INSTANCE_ID"] = "worker-0"
            self.env["CONSUMER_GROUP_INSTANCE_ID"] = "worker-0"
        self.settings: Settings = load_settings(environ=self.env)
        asyncio.run(ensure_topics(self.settings))
        self.groups = {"sink": f"{self.settings.worker.app_id}-sink",
                       "process": f"{self.settings.worker.app_id}-stage1"}
        self.procs: list[subprocess.Popen] = []

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def _group_state(admin: AIOKafkaAdminClient, group: str) -> tuple[str, set[str]]:
    try:
        response = (await admin.describe_consumer_groups([group]))[0]
    except KafkaError:  # no coordinator yet (offsets topic being created): not stable
        return "", set()
    described = response.to_object()["groups"][0]
    state = described.get("group_state") or described.get("state") or ""
    return state, {m["member_id"] for m in described.get("members", [])}


async def _committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except KafkaError:
        return 0
    return sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset > 0)


async def _end_offsets(consumer: AIOKafkaConsumer, topic: str, partitions: int) -> int:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return sum((await consumer.end_offsets(tps)).values())


async def measure(run: Run, timeout: float = 120.0) -> dict[str, Any]:
    """Start the worker, wait for steady processing, SIGKILL, restart, time the recovery."""
    bootstrap = run.settings.kafka.bootstrap_servers
    topic = run.settings.topics.events
    partitions = run.settings.topics.partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await ends.start()
    try:
        worker = run.spawn("worker", "worker")
        deadline = time.monotonic() + timeout
        while True:  # both groups stable and committing what the traffic brings
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited {worker.returncode}; see {run.dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not processing after {timeout}s; see {run.dir}")
            states = [await _group_state(admin, g) for g in run.groups.values()]
            committed = [await _committed(admin, g, topic) for g in run.groups.values()]
            if all(s == "Stable" and m for s, m in states) and min(committed) > 0:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(5.0)  # steady state
        before = {name: (await _group_state(admin, g))[1] for name, g in run.groups.items()}
        killed_at = time.monotonic()
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        end_at_kill = await _end_offsets(ends, topic, partitions)
        run.spawn("worker", "worker")
        result: dict[str, Any] = {}
        pending = {(name, what) for name in run.groups for what in ("assigned", "processing")}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for name, group in run.groups.items():
                if (name, "assigned") in pending:
                    state, members = await _group_state(admin, group)
                    if state == "Stable" and members and not members & before[name]:
                        result[f"{name}_assigned"] = time.monotonic() - killed_at
                        pending.discard((name, "assigned"))
                if (name, "processing") in pending and \
                        await _committed(admin, group, topic) > end_at_kill:
                    result[f"{name}_processing"] = time.monotonic() - killed_at
                    pending.discard((name, "processing"))
            await asyncio.sleep(0.1)
        for name, what in pending:
            result[f"{name}_{what}"] = None  # not within the timeout
        return result
    finally:
        await ends.stop()
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="kill/restart cycles per mode")
    parser.add_argument("--port", type=int, default=19192, help="port of the private broker")
    parser.add_argument("--bootstrap", default=None, help="use this broker instead")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    args = parser.parse_args()

    out = ROOT / "benchmarks" / "out" / f"recovery-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True)
    kafka = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        kafka = LocalKafka.private(ROOT / ".inferwatch" / f"bench-kafka-{args.port}", args.port,
                                   say=say)
        kafka.up(timeout=120)
        bootstrap = kafka.bootstrap
    results: dict[str, list[dict[str, Any]]] = {"dynamic": [], "static": []}
    try:
        for index in range(args.runs):
            for mode in ("dynamic", "static"):  # interleaved: same conditions for both
                run = Run(bootstrap, out, mode, index)
                run.spawn("simulate", "simulate", "--rate", str(args.rate), "--duration",
                          "100000", "--batch-size", "20")
                try:
                    result = asyncio.run(measure(run))
                finally:
                    run.close()
                results[mode].append(result)
                say(f"{mode} run {index}: " + ", ".join(
                    f"{k}={v:.1f}s" if v is not None else f"{k}=timeout"
                    for k, v in sorted(result.items())))
    finally:
        if kafka is not None:
            kafka.down()

    session = load_settings(environ={}).worker.session_timeout_seconds
    print(f"\n## Recovery after SIGKILL ({datetime.now():%Y-%m-%d})\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.system()} {platform.release()}; broker: "
          f"{'project KRaft ' + bootstrap if kafka else bootstrap}; session timeout "
          f"{session:g} s (default); traffic {args.rate:g} ev/s; {args.runs} runs per mode.\n")
    print(f"Command: `.venv/bin/python benchmarks/recovery.py --runs {args.runs}`\n")
    print("Seconds from SIGKILL (restart at once) to … (median, then each run):\n")
    print("| membership | sink assigned | sink processing | process assigned | "
          "process processing |")
    print("|---|---|---|---|---|")
    for mode, runs in results.items():
        cells = []
        for key in ("sink_assigned", "sink_processing", "process_assigned",
                    "process_processing"):
            values = [r.get(key) for r in runs]
            done = [v for v in values if v is not None]
            median = f"{statistics.median(done):.1f}" if len(done) == len(values) else "timeout"
            each = ", ".join(f"{v:.1f}" if v is not None else "—" for v in values)
            cells.append(f"{median} ({each})")
        print(f"| {mode} | " + " | ".join(cells) + " |")
    print(f"\nLogs: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
