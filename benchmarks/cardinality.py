"""Cardinality benchmark: memory per active series and work per (series × window).

The processing role's three stages (stage 1: partial windows; stage 2: merge, score,
emit; alerting: one rule) driven in-process by their verbs, the way the runtime drives
them, but with no broker: outputs are routed to the next stage by key, changelog
changes are encoded and counted (the bytes a worker would write) and then dropped, as
the broker would hold them. What stays in the process is what a worker holds.

Traffic: the simulator's label mix widened to N models (one series each), ``--per-window``
events per series and window, in batched messages of 500 events spread over the source
partitions, handed to the stages 5,000 events at a time (what is in flight stays bounded,
as a worker's poll is, so the RSS measures the state). Each series count runs in its own
subprocess so peaks do not mix; RSS is sampled at every window boundary.

Reported per N: peak RSS and RSS per series (above the idle process), stage-1 µs per
event, and the per-window work (stage 2 + alerting, checkpoint encoding included) in ms
per (series × window), which issue 9 asks to be ≤ 0.5 ms at 10,000 series.

    python benchmarks/cardinality.py                 # 10, 1,000, 10,000 series
    python benchmarks/cardinality.py --series 1000 --windows 12
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RULE = """
rules:
  - name: LatencyHigh
    condition: latency_p99_ms > 30000
    for: 20s
    severity: warning
"""
BATCH = 500
CHUNK = 5_000  # events handed to the stages at a time (a worker's poll is bounded too)


def say(message: str) -> None:
    print(f"[cardinality] {message}", file=sys.stderr, flush=True)


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class Pipe:
    """Stage 1 → stage 2 → alerting in one process, by their verbs, no broker."""

    def __init__(self, settings: Any) -> None:
        from pipeline.alerting.rules import parse_rules
        from pipeline.alerting.stage import AlertRuleStage
        from pipeline.runtime.worker import stages

        self.settings = settings
        first, second, _ = stages(settings)
        third = AlertRuleStage(settings, parse_rules(RULE, "bench.rules.yaml"))
        self.stages = [first, second, third]
        self.offsets: dict[tuple[str, int], int] = defaultdict(int)
        self.inbox: dict[tuple[str, int], list[Any]] = defaultdict(list)
        self.changelog_bytes = [0, 0, 0]
        self.changelog_records = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.read = {topic for stage in self.stages for topic in stage.topics}
        self.dropped = 0  # outputs to topics no stage here reads (scores): the sink's
        for stage in self.stages:
            for topic in stage.topics:
                for p in range(settings.topics.partitions):
                    stage.on_assign(topic, p, {})

    def put(self, topic: str, value: bytes, key: bytes | None = None,
            partition: int | None = None, headers: Any = ()) -> None:
        from pipeline.runtime.stage import Record

        if topic not in self.read:
            self.dropped += 1
            return
        if partition is None:
            partition = zlib.crc32(key) % self.settings.topics.partitions if key else 0
        offset = self.offsets[topic, partition]
        self.offsets[topic, partition] = offset + 1
        self.inbox[topic, partition].append(Record(topic, partition, offset, key, value,
                                                   tuple(headers)))

    def _finish(self, index: int, step: Any) -> None:
        for changes in step.changes.values():
            self.changelog_records[index] += len(changes)
            self.changelog_bytes[index] += sum(len(k) + len(v or b"")
                                               for k, v in changes.items())
        for out in step.outputs:
            self.put(out.topic, out.value, out.key, out.partition, out.headers)
        for done in step.done:
            done()

    def run(self, wall: float) -> None:
        """Every stage drains its inbox in turn (stage by stage, as data flows)."""
        for index, stage in enumerate(self.stages):
            begin = time.perf_counter()
            steps = []
            for topic in stage.topics:
                for p in range(self.settings.topics.partitions):
                    records = self.inbox.pop((topic, p), [])
                    for i in range(0, len(records), BATCH):
                        steps.append(stage.on_batch(topic, p, records[i:i + BATCH], wall))
            steps.append(stage.on_tick(wall, lambda topic, partition: True))
            self.seconds[index] += time.perf_counter() - begin
            for step in steps:  # outputs of this stage feed the next one
                self._finish(index, step)


def deep_size(root: Any, seen: set[int]) -> int:
    """Bytes of everything reachable from ``root`` not in ``seen`` (modules, classes and
    functions excluded): the live state, as opposed to the RSS, which also holds freed
    heap the allocator kept."""
    size, stack = 0, [root]
    skip = (type, type(sys), type(deep_size), type(len))
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return size


def one(series: int, windows: int, per_window: int, seed: int,
        tuned: bool = True) -> dict[str, Any]:
    """One series count, in this process."""
    import msgspec

    from pipeline.config import Settings
    from pipeline.dev.simulate import ModelProfile, TrafficModel

    settings = Settings()
    metrics = settings.metrics
    size = metrics.window_seconds
    pipe = Pipe(settings)  # imports the stages: the idle worker
    if tuned:
        from pipeline.runtime.memory_tuning import tune_gc

        tune_gc()  # as `inferwatch worker` does once its stages exist
    gc.collect()
    idle = rss()
    models = [ModelProfile(f"model-{i:05d}", "1", "chat", hosts=1) for i in range(series)]
    traffic = TrafficModel(models, seed=seed, id_prefix="card")
    encoder = msgspec.json.Encoder()
    start = math.floor((time.time() - (windows + 5) * size) / size) * size
    rate = series * per_window / size
    stream = traffic.stream(rate, windows * size, start, resources=False)
    peak, events, boundary, pending = idle, 0, size, []  # offsets from start
    by_window = []
    generate = 0.0

    def flush(batch: list[Any]) -> None:
        for i in range(0, len(batch), BATCH):
            chunk = batch[i:i + BATCH]
            pipe.put(settings.topics.events, encoder.encode(chunk),
                     partition=(events // BATCH + i // BATCH) % settings.topics.partitions)

    t = time.perf_counter()
    for offset, record in stream:
        pending.append(record)
        if len(pending) >= CHUNK or offset >= boundary:  # through the stages, as polled
            generate += time.perf_counter() - t
            flush(pending)
            events += len(pending)
            pending = []
            pipe.run(wall=start + offset + metrics.lateness_seconds)
            if offset >= boundary:
                by_window.append(rss())
                peak = max(peak, by_window[-1])
                boundary += size
            t = time.perf_counter()
    generate += time.perf_counter() - t
    flush(pending)
    events += len(pending)
    boundary += start
    pipe.run(wall=boundary + metrics.lateness_seconds)
    # the idle advance closes the last windows, then alerting sees them
    for k in range(1, 4):
        pipe.run(wall=boundary + k * (metrics.idle_timeout_seconds + metrics.lateness_seconds
                                      + size))
    peak = max(peak, rss())
    seen: set[int] = set()
    deep_size(settings, seen)  # shared, not per series
    first, second, third = pipe.stages
    state = {"stage1": deep_size(first.states, seen)
             + deep_size(getattr(first, "outboxes", None), seen),  # older trees: in states
             "windows": deep_size(second.states, seen),
             "monitors": deep_size(second.scoring.monitors, seen) if second.scoring else 0,
             "alerts": deep_size(third.evaluator, seen)}
    state["windows"] += deep_size(getattr(second, "_outbox", None), seen)  # older trees
    emitted = pipe.stages[1].emitted
    closed = max(1, emitted)
    per_window_s = pipe.seconds[1] + pipe.seconds[2]
    return {
        "series": series, "windows": windows, "per_window": per_window, "events": events,
        "windows_emitted": emitted, "idle_mib": idle / 2**20, "peak_mib": peak / 2**20,
        "final_mib": rss() / 2**20,
        "kib_per_series": (peak - idle) / 1024 / series,
        "state_kib_per_series": {k: v / 1024 / series for k, v in state.items()},
        "rss_by_window_mib": [round(r / 2**20) for r in by_window],
        "stage1_us_per_event": pipe.seconds[0] / max(1, events) * 1e6,
        "stage2_ms_per_sw": pipe.seconds[1] / closed * 1e3,
        "alerts_ms_per_sw": pipe.seconds[2] / closed * 1e3,
        "ms_per_sw": per_window_s / closed * 1e3,
        "changelog_bytes_per_sw": [b / closed for b in pipe.changelog_bytes],
        "changelog_records_per_sw": [r / closed for r in pipe.changelog_records],
        "seconds": pipe.seconds, "generate_s": generate,
        "core_share_at_10s_windows": per_window_s / windows / size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, nargs="+", default=[10, 1000, 10000],
                        help="series counts, each in its own subprocess (default 10 1000 10000)")
    parser.add_argument("--windows", type=int, default=12,
                        help="windows of event time per run (default 12)")
    parser.add_argument("--per-window", type=int, default=10,
                        help="events per series and window (default 10)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's default GC thresholds (the worker tunes them)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.series[0], args.windows, args.per_window, args.seed,
                             tuned=not args.default_gc)))
        return 0
    results = []
    for n in args.series:
        say(f"{n:,} series × {args.windows} windows × {args.per_window} events …")
        proc = subprocess.run(
            [sys.executable, __file__, "--one", "--series", str(n), "--windows",
             str(args.windows), "--per-window", str(args.per_window), "--seed", str(args.seed),
             *(["--default-gc"] if args.default_gc else [])],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if proc.returncode:
            say(proc.stderr[-3000:])
            return 1
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        say(f"{n:,} series: peak RSS {result['peak_mib']:.0f} MiB (idle "
            f"{result['idle_mib']:.0f}), {result['kib_per_series']:.1f} KiB/series (live state "
            f"{sum(result['state_kib_per_series'].values()):.1f}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in result["state_kib_per_series"].items())
            + f"); stage 1 "
            f"{result['stage1_us_per_event']:.1f} µs/event; per (series × window) "
            f"{result['ms_per_sw']:.3f} ms (stage 2 {result['stage2_ms_per_sw']:.3f}, alerts "
            f"{result['alerts_ms_per_sw']:.3f}); changelog B/(series×window) "
            f"{[round(b) for b in result['changelog_bytes_per_sw']]}")
    print("| series | windows emitted | peak RSS | RSS KiB / series | live state KiB / series | "
          "stage 1 µs / event | "
          "stage 2 ms / (series × window) | alerting | all-in per-window work | "
          "changelog bytes / (series × window), stage 1 / 2 / alerts |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['series']:,} | {r['windows_emitted']:,} | {r['peak_mib']:.0f} MiB | "
              f"{r['kib_per_series']:.1f} | {sum(r['state_kib_per_series'].values()):.1f} | "
              f"{r['stage1_us_per_event']:.1f} | "
              f"{r['stage2_ms_per_sw']:.3f} | {r['alerts_ms_per_sw']:.3f} | "
              f"{r['ms_per_sw']:.3f} | "
              + " / ".join(f"{b:,.0f}" for b in r["changelog_bytes_per_sw"]) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
