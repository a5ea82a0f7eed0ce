"""Resilience benchmark (issue 8): the worker's memory under hostile traffic, and how soon
it stores again after a broker outage, on a private KRaft broker of its own.

1. Memory. One fresh ``inferwatch worker`` (process + sink roles, embedded chDB, its
   own topics, group and home, started as tests/integration/harness.py does) per
   traffic kind; its RSS (children included) is sampled every 0.1 s.

   * *idle*: the worker ready, before any traffic (5 s);
   * *baseline*: as many valid messages as the hostile corpus has, holding as many
     simulated events as its elements (``pipeline.dev.simulate.synthetic``, JSON batches
     sent by the corpus's own producer), from the first send until both consumer groups have
     committed to the end of the events topic; then, on the same worker, the 8 KB gzip
     bomb of the corpus alone (4 million zeros, 8 MiB inflated), peak minus the RSS
     just before it;
   * *hostile*: the corpus of tests/integration/test_hostile_traffic.py
     (``build_traffic``: schema-drawn and mutated events, deep nesting, bombs, invalid
     UTF-8, every encoding, oversize records …), same measure.

2. Broker outage. A fresh worker; a background aiokafka producer sends events stamped
   with the current time at ``--rate`` ev/s, re-sending each message until it is
   acknowledged (through the outage). After ``--before`` s the broker is stopped
   (SIGTERM), kept down ``--outage`` s and started again; *back* = the broker answers.
   Through the running worker's query endpoint, every 0.25 s:

   * seconds from back to the first event row stored after it (``ingested_at``, set by
     the store at insert);
   * seconds from back to the first ``window_metrics`` row emitted after it
     (``emitted_at``, set by the store at insert); also to the first one of a window
     overlapping the outage, and of a window that starts after the broker was back
     (10 s windows, 5 s lateness by default: about 15 s or more after back);
   * the worker's CPU use and log lines while the broker is down;
   * after the producer stops and drains: ``count() FROM events FINAL`` against the
     events the producer got acknowledged, per phase (sent before, during, after the
     outage): each must be stored exactly once.

Usage:  .venv/bin/python benchmarks/resilience.py [--port 19192] [--rate 200] [--outage 15]
Progress goes to stderr; a Markdown section for RESULTS.md to stdout (and to the run's
directory under benchmarks/out/). Takes about 4–5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
import json
import logging
import os
import platform
import random
import sys
import threading
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import psutil
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_settings  # noqa: E402
from pipeline.dev.kafka import LocalKafka  # noqa: E402
from pipeline.dev.simulate import synthetic  # noqa: E402
from pipeline.sinks.clickhouse.query import QueryError  # noqa: E402
from pipeline.sources.codec import encode_events  # noqa: E402
from schemas.event import InferenceEvent  # noqa: E402
from tests.integration import test_hostile_traffic as hostile  # noqa: E402
from tests.integration.harness import Pipeline  # noqa: E402

MiB = 1 << 20
JSON_H = [("content-type", b"application/json")]
GZIP_H = [*JSON_H, ("content-encoding", b"gzip")]


logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # our producer's retries: noise


def say(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- memory

class RssSampler:
    """RSS of a process and its children, every ``interval`` seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
                for child in self.process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
            except psutil.Error:
                return  # the worker is gone
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval)

    def peak(self, start: float, end: float | None = None) -> int:
        end = end if end is not None else time.monotonic()
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)

    def mean(self, start: float, end: float) -> float:
        values = [rss for t, rss in self.samples if start <= t <= end]
        return sum(values) / len(values) if values else 0.0

    def last(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _schema_events_in_range(n: int) -> list[dict[str, Any]]:
    """The corpus's schema-drawn events with integers clamped to what MessagePack holds:
    hypothesis may draw an unknown field holding an integer past 2**64, which
    ``build_traffic`` cannot encode as MessagePack (it raises OverflowError)."""
    def clamp(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return min(max(value, -(2**63)), 2**64 - 1)
        if isinstance(value, list):
            return [clamp(v) for v in value]
        if isinstance(value, dict):
            return {k: clamp(v) for k, v in value.items()}
        return value
    return [clamp(e) for e in _drawn(n)]


_drawn = hostile.schema_events


def hostile_corpus(now: float, partitions: int) -> tuple[list[hostile.Message], bool]:
    """``build_traffic``, with the clamp above only if it is needed; (corpus, clamped)."""
    try:
        return hostile.build_traffic(now, partitions), False
    except OverflowError:
        hostile.schema_events = _schema_events_in_range
        try:
            return hostile.build_traffic(now, partitions), True
        finally:
            hostile.schema_events = _drawn


def _pipeline(bootstrap: str, directory: Path) -> Pipeline:
    """Fresh topics, groups and home under ``directory`` (tests/integration/harness.py)."""
    directory.mkdir(parents=True)
    return Pipeline(bootstrap, directory)


def _caught_up(pipe: Pipeline) -> bool:
    s = pipe.settings
    groups = [s.worker.app_id, f"{s.worker.app_id}-sink"]
    try:
        behind = asyncio.run(hostile.lagging(s.kafka.bootstrap_servers, s.topics.events,
                                             s.topics.partitions, groups))
    except (KafkaError, OSError):
        return False
    return not behind


def wait_caught_up(pipe: Pipeline, worker: Any, timeout: float) -> float | None:
    """Seconds until both groups committed to the end of the events topic, or None."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited {worker.returncode}:\n{pipe.log(worker)}")
        if _caught_up(pipe):
            return time.monotonic() - start
        time.sleep(0.5)
    return None


def start_measured_worker(pipe: Pipeline, idle_seconds: float) -> tuple[Any, RssSampler, dict]:
    worker = pipe.start_worker()
    sampler = RssSampler(worker.pid)
    pipe.wait_sink_ready(worker, timeout=120)
    pipe.wait_processor_ready(worker, timeout=120)
    time.sleep(2.0)  # start-up allocations settle
    start = time.monotonic()
    time.sleep(idle_seconds)
    idle = {"idle_peak": sampler.peak(start), "idle_mean": sampler.mean(start, time.monotonic())}
    return worker, sampler, idle


def valid_messages(bootstrap: str, topic: str, events: int, messages: int) -> None:
    """Send ``events`` simulated events (``synthetic``) as exactly ``messages`` JSON
    messages of near-equal size, with the producer that sends the hostile corpus."""
    now = time.time()
    records = (r for _, r in synthetic(5, rate=events / 10, duration=20.0, start=now - 60,
                                       resources=False)
               if isinstance(r, InferenceEvent))
    drawn = list(itertools.islice(records, events))
    if len(drawn) < events:
        raise RuntimeError(f"synthetic gave {len(drawn)} events, {events} wanted")
    cuts = [round(k * events / messages) for k in range(messages + 1)]
    batch = [hostile.Message(k, encode_events(drawn[a:b]), JSON_H, b - a)
             for k, (a, b) in enumerate(itertools.pairwise(cuts))]
    asyncio.run(hostile.produce(bootstrap, topic, batch))


def measure_memory(bootstrap: str, out: Path, idle_seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    partitions = load_settings(environ={"INFERWATCH_KAFKA": bootstrap}).topics.partitions
    corpus, clamped = hostile_corpus(time.time(), partitions)
    result["clamped"] = clamped
    result["messages"] = len(corpus)
    result["elements"] = sum(m.elements for m in corpus)
    result["corpus_bytes"] = sum(len(m.value or b"") for m in corpus)
    say(f"hostile corpus: {len(corpus)} messages, {result['elements']} elements, "
        f"{result['corpus_bytes'] / MiB:.1f} MiB" + (" (ints clamped)" if clamped else ""))

    # baseline: valid traffic of the same size, then the gzip bomb alone
    pipe = _pipeline(bootstrap, out / "baseline")
    say("baseline worker starting …")
    worker, sampler, idle = start_measured_worker(pipe, idle_seconds)
    try:
        result["baseline_idle"] = idle
        say(f"baseline worker idle: {idle['idle_peak'] / MiB:.0f} MiB; sending valid traffic …")
        start = time.monotonic()
        valid_messages(bootstrap, pipe.settings.topics.events, result["elements"],
                       result["messages"])
        took = wait_caught_up(pipe, worker, timeout=120)
        time.sleep(2.0)
        result["baseline_peak"] = sampler.peak(start)
        result["baseline_seconds"] = took
        result["baseline_stored"] = _owner(pipe, "SELECT count() FROM events FINAL")
        say(f"baseline: peak {result['baseline_peak'] / MiB:.0f} MiB, caught up in "
            f"{_secs(took)}, {result['baseline_stored']} events stored")
        bomb = gzip.compress(b"[" + b"0," * ((4 << 20) - 2) + b"0]", 9)
        time.sleep(1.0)
        before = sampler.last()
        start = time.monotonic()
        asyncio.run(hostile.produce(bootstrap, pipe.settings.topics.events,
                                    [hostile.Message(10**6, bomb, GZIP_H, 1)]))
        took = wait_caught_up(pipe, worker, timeout=60)
        time.sleep(2.0)
        result["bomb"] = {"bytes": len(bomb), "before": before, "peak": sampler.peak(start),
                          "seconds": took}
        say(f"gzip bomb ({len(bomb)} bytes) on the warm baseline worker: "
            f"{before / MiB:.0f} → {result['bomb']['peak'] / MiB:.0f} MiB")
    finally:
        sampler.stop()
        pipe.stop(worker)

    pipe = _pipeline(bootstrap, out / "hostile")
    say("hostile worker starting …")
    worker, sampler, idle = start_measured_worker(pipe, idle_seconds)
    try:
        result["hostile_idle"] = idle
        say(f"hostile worker idle: {idle['idle_peak'] / MiB:.0f} MiB; sending the corpus …")
        start = time.monotonic()
        asyncio.run(hostile.produce(bootstrap, pipe.settings.topics.events, corpus))
        took = wait_caught_up(pipe, worker, timeout=180)
        time.sleep(2.0)
        result["hostile_peak"] = sampler.peak(start)
        result["hostile_seconds"] = took
        result["hostile_alive"] = worker.poll() is None
        say(f"hostile: peak {result['hostile_peak'] / MiB:.0f} MiB, caught up in "
            f"{_secs(took)}")
        # where the peak was: seconds after the first send
        peak_at = max(((t, rss) for t, rss in sampler.samples if t >= start),
                      key=lambda s: s[1], default=(start, 0))[0]
        result["hostile_peak_at"] = peak_at - start
    finally:
        sampler.stop()
        pipe.stop(worker)
    return result


# --------------------------------------------------------------------------- outage

class Traffic:
    """Events stamped now at ``rate`` per second, in JSON messages of ``batch`` events,
    each message re-sent until Kafka acknowledges it (through outages), in a thread."""

    def __init__(self, bootstrap: str, topic: str, rate: float, batch: int = 10) -> None:
        self.bootstrap, self.topic, self.rate, self.batch = bootstrap, topic, rate, batch
        self.acked: dict[str, float] = {}  # event_id -> its timestamp
        self.generated = 0
        self.failures = 0
        self.first_failure: float | None = None
        self.recovered: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        """Stop generating; return once everything generated was acknowledged."""
        self._stop.set()
        self._thread.join(timeout)

    async def _send(self, producer: AIOKafkaProducer, head: list) -> None:
        futures = [await producer.send(self.topic, value, headers=JSON_H) for _, value in head]
        await asyncio.gather(*futures)

    async def _run(self) -> None:
        outbox: deque[tuple[list[tuple[str, float]], bytes]] = deque()
        rng = random.Random(3)
        done = asyncio.Event()

        async def generate() -> None:
            start = time.monotonic()
            while not self._stop.is_set():
                due = int((time.monotonic() - start) * self.rate)
                while self.generated + self.batch <= due:
                    now = time.time()
                    events = [{"event_id": f"rs-{self.generated + j}", "timestamp": now,
                               "model": f"resilience-{j % 2}",
                               "latency_ms": rng.uniform(5, 500)} for j in range(self.batch)]
                    outbox.append(([(e["event_id"], now) for e in events],
                                   msgspec.json.encode(events)))
                    self.generated += self.batch
                await asyncio.sleep(0.02)
            done.set()

        async def send() -> None:
            producer: AIOKafkaProducer | None = None
            while not (done.is_set() and not outbox):
                if not outbox:
                    await asyncio.sleep(0.01)
                    continue
                head = list(itertools.islice(outbox, 200))
                try:
                    if producer is None:
                        producer = AIOKafkaProducer(
                            bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                            request_timeout_ms=5000, retry_backoff_ms=200)
                        await asyncio.wait_for(producer.start(), 10)
                    await asyncio.wait_for(self._send(producer, head), 15)
                except (KafkaError, OSError, TimeoutError):
                    self.failures += 1
                    if self.first_failure is None:
                        self.first_failure = time.time()
                    if producer is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(producer.stop(), 2)
                    producer = None
                    await asyncio.sleep(0.5)
                    continue
                if self.first_failure is not None and self.recovered is None:
                    self.recovered = time.time()
                for _ in head:
                    for event_id, stamp in outbox.popleft()[0]:
                        self.acked[event_id] = stamp
            if producer is not None:
                await producer.stop()

        await asyncio.gather(generate(), send())


def _owner(pipe: Pipeline, sql: str) -> Any:
    with contextlib.suppress(QueryError, OSError):
        return pipe.owner_scalar(sql)
    return None


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    process = psutil.Process(pid)
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def measure_outage(kafka: LocalKafka, out: Path, rate: float, before: float, outage: float,
                   after: float) -> dict[str, Any]:
    pipe = _pipeline(kafka.bootstrap, out / "outage")
    worker = pipe.start_worker()
    result: dict[str, Any] = {}
    traffic = Traffic(kafka.bootstrap, pipe.settings.topics.events, rate)
    try:
        pipe.wait_sink_ready(worker, timeout=120)
        pipe.wait_processor_ready(worker, timeout=120)
        say(f"outage worker ready; traffic at {rate:g} ev/s for {before:g} s …")
        traffic.start()
        time.sleep(before)
        windows = _owner(pipe, "SELECT count() FROM window_metrics")
        result["windows_before"] = windows
        say(f"{len(traffic.acked)} events acknowledged, {windows} windows stored; "
            "stopping the broker …")
        log_path = Path(worker.log_path)  # type: ignore[attr-defined]
        lines_before = len(_lines(log_path))
        cpu_before = _cpu(worker.pid)
        down_at = time.time()
        kafka.down()
        result["down_seconds"] = time.time() - down_at
        time.sleep(outage)
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited during the outage:\n{pipe.log(worker)}")
        say(f"broker down {time.time() - down_at:.1f} s; starting it again …")
        restart_at = time.time()
        kafka.up(timeout=120)
        up_at = time.time()
        result["cpu_down"] = (_cpu(worker.pid) - cpu_before) / (up_at - down_at)
        result["log_lines_down"] = len(_lines(log_path)) - lines_before
        result["restart_seconds"] = up_at - restart_at
        result["outage_seconds"] = up_at - down_at
        say(f"broker back (answering {up_at - restart_at:.1f} s after the restart began)")
        since, d, u = int(up_at * 1000), int(down_at * 1000), int(up_at * 1000)
        ms = "toUnixTimestamp64Milli"
        probes = {  # what is timed: the first row stored after the broker is back …
            "first_event": ("events", "ingested_at", "1"),
            "first_window": ("window_metrics", "emitted_at", "1"),
            # … of a window holding events sent while the broker was down
            "outage_window": ("window_metrics", "emitted_at",
                              f"{ms}(window_end) > {d} AND {ms}(window_start) < {u}"),
            # … of a window holding only events sent after it came back
            "after_window": ("window_metrics", "emitted_at", f"{ms}(window_start) >= {u}"),
        }
        found: dict[str, float | None] = dict.fromkeys(probes)
        polled: dict[str, float | None] = dict.fromkeys(probes)
        deadline = time.monotonic() + max(after, 90.0)
        while None in found.values() and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{pipe.log(worker)}")
            for name, (table, column, where) in probes.items():
                if found[name] is not None:
                    continue
                first = _owner(pipe, f"SELECT {ms}(min({column})) FROM {table} "
                                     f"WHERE {ms}({column}) > {since} AND {where}")
                if first:  # 0 when there is no row yet (min of nothing)
                    found[name], polled[name] = first / 1000 - up_at, time.time() - up_at
                    say(f"{name}: stored {found[name]:.2f} s after the broker came back")
            time.sleep(0.25)
        result.update(found)
        result["polled"] = polled
        result["log_problems"] = sum("[WARNING]" in line or "[ERROR]" in line
                                     for line in _lines(log_path)[lines_before:])
        rest = up_at + after - time.time()
        if rest > 0:
            say(f"traffic goes on for {rest:.0f} s more …")
            time.sleep(rest)
        stopped_at = time.time()
        traffic.stop()
        result["drain_seconds"] = time.time() - stopped_at
        acked = traffic.acked
        result.update(generated=traffic.generated, acked=len(acked),
                      producer_failures=traffic.failures)
        phases = {"before": sum(t < down_at for t in acked.values()),
                  "during": sum(down_at <= t < up_at for t in acked.values()),
                  "after": sum(t >= up_at for t in acked.values())}
        result["acked_by_phase"] = phases
        say(f"producer stopped: {len(acked)} of {traffic.generated} events acknowledged "
            f"({phases}); waiting for the store …")
        stored = pipe.wait_count(len(acked), timeout=120,
                                 sql="SELECT count() FROM events FINAL")
        time.sleep(2.0)  # anything twice would show up now
        d, u = int(down_at * 1000), int(up_at * 1000)
        row = _owner(pipe, "SELECT tuple(count(), uniqExact(event_id), "
                           f"countIf(toUnixTimestamp64Milli(timestamp) < {d}), "
                           f"countIf(toUnixTimestamp64Milli(timestamp) >= {d} AND "
                           f"toUnixTimestamp64Milli(timestamp) < {u}), "
                           f"countIf(toUnixTimestamp64Milli(timestamp) >= {u})) "
                           "FROM events FINAL")
        if row is not None:
            stored, distinct, *by_phase = row
            result["stored_by_phase"] = dict(zip(("before", "during", "after"), by_phase,
                                                 strict=True))
            result["distinct"] = distinct
        result["stored"] = stored
        result["raw_rows"] = _owner(pipe, "SELECT count() FROM events")
        result["alive"] = worker.poll() is None
        say(f"stored {stored} (FINAL), {result.get('distinct')} distinct, "
            f"{result['raw_rows']} rows before merges; acknowledged {len(acked)}")
    finally:
        traffic.stop(timeout=5)
        pipe.stop(worker)
    return result


# --------------------------------------------------------------------------- report

def _secs(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "not within the timeout"


def _mib(value: float) -> str:
    return f"{value / MiB:.0f}"


def report(args: argparse.Namespace, mem: dict[str, Any] | None, cut: dict[str, Any] | None,
           command: str) -> str:
    lines = ["## Resilience: worker memory under hostile traffic, storing after a broker "
             "outage (issue 8)\n",
             f"{datetime.now():%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} cores / "
             f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB shared with other work, "
             f"Python {platform.python_version()}, {platform.system()}; project KRaft broker "
             f"on 127.0.0.1:{args.port}; one `inferwatch worker` (process + sink, embedded "
             "chDB) per measurement.\n",
             f"Command: `{command}`\n"]
    if mem:
        b, h, bomb = mem["baseline_idle"], mem["hostile_idle"], mem["bomb"]
        lines += [
            "Worker RSS (children included, sampled every 0.1 s), MiB; *peak* from the "
            "first message sent until both groups committed to the end of the events topic "
            "(+2 s):\n",
            "| traffic | messages | events | idle | peak | peak − idle | caught up in |",
            "|---|---|---|---|---|---|---|",
            f"| valid simulated (baseline) | {mem['messages']} | {mem['elements']} | "
            f"{_mib(b['idle_peak'])} | {_mib(mem['baseline_peak'])} | "
            f"{_mib(mem['baseline_peak'] - b['idle_peak'])} | "
            f"{_secs(mem['baseline_seconds'])} |",
            f"| hostile corpus | {mem['messages']} | {mem['elements']} | "
            f"{_mib(h['idle_peak'])} | {_mib(mem['hostile_peak'])} | "
            f"{_mib(mem['hostile_peak'] - h['idle_peak'])} | "
            f"{_secs(mem['hostile_seconds'])} |",
            "",
            f"- Hostile corpus: {mem['corpus_bytes'] / MiB:.1f} MiB in {mem['messages']} "
            f"messages; peak {mem['hostile_peak_at']:.1f} s after the first send."
            + (" Its schema-drawn integers were clamped to the MessagePack range "
               "(`build_traffic` raised OverflowError as is)." if mem["clamped"] else ""),
            f"- The gzip bomb alone ({bomb['bytes']:,} bytes → 8 MiB, 4 million zeros) on the "
            f"warm baseline worker: {_mib(bomb['before'])} → {_mib(bomb['peak'])} MiB "
            f"(+{_mib(bomb['peak'] - bomb['before'])} MiB; issue 8 measured ~208 MiB).",
            "",
        ]
    if cut:
        stored_phase = cut.get("stored_by_phase", {})
        lines += [
            f"Broker outage: events stamped now at {args.rate:g} ev/s (messages of 10, "
            f"re-sent until acknowledged); broker stopped (SIGTERM) after {args.before:g} s, "
            f"down {cut['outage_seconds']:.1f} s in all ({args.outage:g} s, then "
            f"{cut['restart_seconds']:.1f} s until it answered again = *back*):\n",
            "| from broker back to … | seconds |",
            "|---|---|",
            f"| first new event row stored (`ingested_at`) | {_secs(cut['first_event'])} |",
            f"| first new `window_metrics` row stored (`emitted_at`) | "
            f"{_secs(cut['first_window'])} |",
            f"| first window overlapping the outage stored | {_secs(cut['outage_window'])} |",
            f"| first window starting after the broker was back stored | "
            f"{_secs(cut['after_window'])} |",
            "",
            "| events | before | during | after | total |",
            "|---|---|---|---|---|",
            "| acknowledged by the producer | " + " | ".join(
                str(cut["acked_by_phase"][p]) for p in ("before", "during", "after"))
            + f" | {cut['acked']} |",
            "| stored (`count()` FINAL) | " + " | ".join(
                str(stored_phase.get(p, "?")) for p in ("before", "during", "after"))
            + f" | {cut['stored']} |",
            "",
            f"- Distinct event ids stored: {cut.get('distinct')}; rows before merges: "
            f"{cut['raw_rows']}; generated {cut['generated']}, producer send failures "
            f"{cut['producer_failures']}; windows stored before the outage: "
            f"{cut['windows_before']}; worker log lines while the broker was down (stop to "
            f"back): {cut['log_lines_down']}, WARNING and ERROR lines from the stop until "
            f"the last window above was stored: {cut['log_problems']}; worker alive: "
            f"{cut['alive']}; worker CPU while the broker was down: "
            f"{cut['cpu_down']:.0%} of a core.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("Usage:")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=19192, help="port of the private broker")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="events per second during the outage measurement")
    parser.add_argument("--before", type=float, default=20.0,
                        help="seconds of traffic before the broker is stopped")
    parser.add_argument("--outage", type=float, default=15.0,
                        help="seconds the broker stays down")
    parser.add_argument("--after", type=float, default=30.0,
                        help="seconds of traffic after the broker is back")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds of idle RSS sampling before traffic")
    parser.add_argument("--skip", choices=("memory", "outage"), default=None,
                        help="leave one measurement out")
    args = parser.parse_args()

    command = ".venv/bin/python benchmarks/resilience.py" + "".join(
        f" {a}" for a in sys.argv[1:])
    out = ROOT / "benchmarks" / "out" / f"resilience-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True)
    started = time.monotonic()
    kafka = LocalKafka.private(ROOT / ".inferwatch" / f"bench-kafka-{args.port}", args.port,
                               say=say)
    kafka.up(timeout=120)
    mem = cut = None
    try:
        if args.skip != "memory":
            mem = measure_memory(kafka.bootstrap, out, args.idle)
        if args.skip != "outage":
            cut = measure_outage(kafka, out, args.rate, args.before, args.outage, args.after)
    finally:
        kafka.down()
    text = report(args, mem, cut, command)
    (out / "section.md").write_text(text)
    (out / "raw.json").write_text(json.dumps({"memory": mem, "outage": cut}, indent=2,
                                             default=str))
    say(f"done in {time.monotonic() - started:.0f} s; logs in {out.relative_to(ROOT)}")
    print(text)


if __name__ == "__main__":
    main()
