"""Drive real workers as subprocesses against a real broker, one isolated pipeline per test.

Each pipeline gets its own topic names, consumer group and embedded store, so tests
never see each other's data even on a shared broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.config import Settings, load_settings
from pipeline.runtime.kafka import ensure_topics
from pipeline.sinks.clickhouse.owner import StoreLock
from pipeline.sinks.clickhouse.query import QueryError

ROOT = Path(__file__).resolve().parents[2]


class Pipeline:
    def __init__(self, bootstrap: str, tmp: Path, **env: str) -> None:
        uid = uuid.uuid4().hex[:8]
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH_")},
            "INFERWATCH_KAFKA": bootstrap,
            "INFERWATCH_HOME": str(tmp / "home"),
            "INFERWATCH_WORKER__APP_ID": f"iwtest-{uid}",
            **{f"INFERWATCH_TOPICS__{t.upper()}": f"iwtest.{uid}.{t}" for t in
               ("events", "dlq", "resources", "partials", "metrics", "scores", "alerts",
                "silences", "baselines", "feedback", "joins", "outcomes", "audit")},
            "INFERWATCH_WORKER__SINK_FLUSH_SECONDS": "0.3",
            # several workers per machine: any free port for /metrics and the query
            # endpoint (each worker logs the one it took)
            "INFERWATCH_TELEMETRY__PORT": "0",
            "INFERWATCH_QUERY__PORT": "0",
            **env,
        }
        if os.environ.get("INFERWATCH_CLICKHOUSE"):
            self.env["INFERWATCH_CLICKHOUSE"] = os.environ["INFERWATCH_CLICKHOUSE"]
            self.env["INFERWATCH_CLICKHOUSE__DATABASE"] = f"iwtest_{uid}"
        self.settings: Settings = load_settings(environ=self.env)
        self.workers: list[subprocess.Popen] = []
        asyncio.run(ensure_topics(self.settings))

    # ------------------------------------------------------------------ processes
    def start_worker(self, roles: str = "process,sink", **env: str) -> subprocess.Popen:
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker", "--roles", roles],
            env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        log.close()
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc

    def wait_sink_ready(self, proc: subprocess.Popen, timeout: float = 60.0) -> None:
        """Until the sink consumer runs (its log says so) or the process dies."""
        self._wait_log(proc, "sink consuming", timeout)

    def wait_processor_ready(self, proc: subprocess.Popen, timeout: float = 60.0) -> None:
        self._wait_log(proc, "processing ready", timeout)

    def _wait_log(self, proc: subprocess.Popen, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        path = Path(proc.log_path)  # type: ignore[attr-defined]
        while time.monotonic() < deadline:
            if needle in path.read_text(errors="replace"):
                return
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}:\n{self.log(proc)}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log(proc)}")

    def telemetry_url(self, proc: subprocess.Popen, timeout: float = 60.0) -> str:
        """The worker's telemetry endpoint (``http://host:port``) as its log names it: each
        test worker takes any free port (``INFERWATCH_TELEMETRY__PORT=0``)."""
        deadline = time.monotonic() + timeout
        path = Path(proc.log_path)  # type: ignore[attr-defined]
        while time.monotonic() < deadline:
            found = re.search(r"telemetry on (http://[^\s\"]+)", path.read_text(errors="replace"))
            if found:
                return found.group(1)
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}:\n{self.log(proc)}")
            time.sleep(0.2)
        raise AssertionError(f"no telemetry endpoint logged after {timeout}s:\n{self.log(proc)}")

    def log(self, proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")[-6000:]  # type: ignore[attr-defined]

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, proc: subprocess.Popen, timeout: float = 30.0) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        for proc in self.workers:
            self.stop(proc)

    # ------------------------------------------------------------------ Kafka
    def produce(self, messages: Iterable[tuple[bytes | None, bytes | None, list]]) -> int:
        """Send (key, value, headers) messages and wait for every ack; return the count."""
        async def go() -> int:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka.bootstrap_servers,
                max_request_size=16 << 20, linger_ms=5, acks="all",
            )
            await producer.start()
            try:
                futures = [await producer.send(self.settings.topics.events, value=v, key=k,
                                               headers=h) for k, v, h in messages]
                await asyncio.gather(*futures)
                return len(futures)
            finally:
                await producer.stop()
        return asyncio.run(go())

    def consume_all(self, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
        """Read ``topic`` from the start until ``expected`` records arrived (or timeout)."""
        async def go() -> list[Any]:
            consumer = AIOKafkaConsumer(
                topic, bootstrap_servers=self.settings.kafka.bootstrap_servers,
                auto_offset_reset="earliest", enable_auto_commit=False,
                group_id=None,
            )
            await consumer.start()
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            try:
                while len(records) < expected and time.monotonic() < deadline:
                    batch = await consumer.getmany(timeout_ms=500)
                    for msgs in batch.values():
                        records.extend(msgs)
                # linger briefly: more than expected must show up as a failure
                batch = await consumer.getmany(timeout_ms=1000)
                for msgs in batch.values():
                    records.extend(msgs)
            finally:
                await consumer.stop()
            return records
        return asyncio.run(go())

    # ------------------------------------------------------------------ ClickHouse
    def query(self, sql: str) -> list[dict[str, Any]]:
        """Read-only SQL through the CLI, exactly as a user would run it."""
        out = subprocess.run(
            [sys.executable, "-m", "pipeline", "query", "--format", "json", sql],
            env=self.env, capture_output=True, text=True, cwd=ROOT, timeout=120,
        )
        if out.returncode != 0:
            raise QueryError(out.stderr.strip())
        return json.loads(out.stdout)

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        return next(iter(rows[0].values()))

    def owner_scalar(self, sql: str) -> Any:
        """Ask the running owner directly (cheap polling); never opens the store here."""
        from pipeline.sinks.clickhouse.query import run_query

        if not self.settings.embedded:
            return run_query(self.settings, sql).rows[0][0]
        lock = StoreLock(self.settings.home_path)
        if lock.try_acquire():
            lock.release()
            raise AssertionError("no worker owns the store")
        return run_query(self.settings, sql).rows[0][0]

    def wait_count(self, expected: int, timeout: float = 120.0, sql: str | None = None) -> int:
        sql = sql or "SELECT count() FROM events FINAL"
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            with contextlib.suppress(QueryError, OSError):
                seen = int(self.owner_scalar(sql))
            if seen >= expected:
                return seen
            time.sleep(0.5)
        return seen


def event_ids_on(bootstrap: str, topic: str, want: int, timeout: float = 60.0) -> list[str]:
    """Event ids of ``topic`` read from the start (duplicates kept) until ``want``
    distinct ones arrived or ``timeout`` passed: what producers put there."""
    from pipeline.config import IngestLimits
    from pipeline.sources.codec import decode_events

    async def go() -> list[str]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        ids: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while len(set(ids)) < want and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        out = decode_events(m.value, m.headers, IngestLimits(), time.time())
                        ids += [e.event_id for e in out.events]
        finally:
            await consumer.stop()
        return ids
    return asyncio.run(go())
