"""Cost of the drift work per event: the worker's processing path with and without it.

In one process, on the same simulated traffic (``pipeline.dev.simulate.TrafficModel``, five
LLM/ML series, prompt-length / language / client features), runs the pure path a
processing worker runs per batch — decode and validate the JSON messages, stage 1
(absorb, close, encode partials), stage 2 (decode, merge, close, finalize), encode the
``WindowMetrics`` — twice per round:

- ``off``: no drift histograms, no scores (``drift.enabled = false``);
- ``on``: drift histograms of three features, prediction and confidence in stage 1, and
  per closed window the operational histograms, drift against the trailing reference,
  change detectors and the anomaly score (``SeriesMonitor.observe``) in stage 2.

Rounds alternate off/on so machine noise hits both; the report gives events/s of each
and the drift share of the per-event cost, ``1 - rate_on / rate_off``. Kafka and
ClickHouse I/O are left out, so the share is an upper bound of what the drift work
takes from a real worker's throughput (whose per-event cost also includes I/O).

Usage:  python benchmarks/drift_cost.py [--events N] [--rounds R] [--window S]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import DriftSettings, load_settings
from pipeline.dev.simulate import TrafficModel
from pipeline.scoring.monitor import SeriesMonitor, monitor_spec
from pipeline.sources.codec import decode_events
from pipeline.windows.guard import CardinalityGuard
from pipeline.windows.kinds import event_kind
from pipeline.windows.partials import decode_partials, encode_partial
from pipeline.windows.stage1 import Stage1Partition
from pipeline.windows.stage2 import Stage2Partition
from schemas.event import InferenceEvent

BATCH = 200  # events per Kafka message, as the SDK and `inferwatch simulate` send them
MESSAGES_PER_BATCH = 25  # messages per worker batch (take_events)


def messages(events: int, window: float) -> list[bytes]:
    """Simulated traffic as JSON batch messages, event time spread over many windows."""
    rate = 1000.0
    duration = events / rate
    start = time.time() - duration - 60
    traffic = TrafficModel(seed=7, id_prefix="cost")
    records = [r for _, r in traffic.stream(rate, duration, start, resources=False)
               if isinstance(r, InferenceEvent)]
    encode = msgspec.json.Encoder().encode
    return [encode(records[i:i + BATCH]) for i in range(0, len(records), BATCH)]


def run(raw: list[bytes], drift: bool, window: float) -> tuple[int, float, int]:
    """One pass of the processing path; (events, seconds, scored windows)."""
    settings = load_settings(environ={
        "INFERWATCH_METRICS__WINDOW_SECONDS": str(window),
        "INFERWATCH_METRICS__LATENESS_SECONDS": "1",
    })
    drift_settings = DriftSettings(numeric_features=["prompt_length"],
                                   categorical_features=["language", "client"],
                                   enabled=drift)
    metrics = settings.metrics
    spec = monitor_spec(drift_settings, metrics.relative_accuracy, operational=False)
    kind = event_kind(metrics, spec if drift else None)
    stage1 = Stage1Partition(0, metrics, CardinalityGuard(10_000, tuple(metrics.series_labels)),
                             kind)
    stage2 = Stage2Partition(0, metrics, 1, kind)
    monitors: dict[str, SeriesMonitor] = defaultdict(lambda: SeriesMonitor(drift_settings))
    encode = msgspec.json.Encoder().encode
    limits, headers = settings.limits, {"content-type": b"application/json"}
    events = scored = 0
    began = time.perf_counter()
    now = time.time()
    for first in range(0, len(raw), MESSAGES_PER_BATCH):
        batch = []
        for offset in range(first, min(first + MESSAGES_PER_BATCH, len(raw))):
            decoded = decode_events(raw[offset], headers, limits, now)
            events += len(decoded.events)
            batch.append((offset, decoded.events))
        stage1.add(batch, now)
        partials = [encode_partial(p) for p in stage1.close(now, caught_up=False)]
        mark = stage1.watermark(now, caught_up=False)
        partials.append(encode_partial(stage1_watermark(mark)))
        for value in partials:
            stage2.apply(decode_partials(value))
        for result, profile in stage2.close_with_profiles():
            if drift and result.version == 1:
                scores = monitors[result.series_key].observe(
                    result, profile.drift_profile(drift_settings.operational))
                result = msgspec.structs.replace(result, scores=scores.variables())
                encode(scores)
                scored += 1
            encode(result)
    return events, time.perf_counter() - began, scored


def stage1_watermark(mark: float):  # -> Watermark
    from pipeline.windows.partials import Watermark

    return Watermark(kind="events", src_partition=0, watermark=mark)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per pass")
    parser.add_argument("--rounds", type=int, default=5, help="off/on pairs")
    parser.add_argument("--window", type=float, default=10.0, help="window seconds")
    args = parser.parse_args()
    print(f"generating {args.events} events …", file=sys.stderr)
    raw = messages(args.events, args.window)
    rates: dict[bool, list[float]] = {False: [], True: []}
    scored = 0
    for r in range(args.rounds):
        for drift in (False, True):
            n, seconds, s = run(raw, drift, args.window)
            rates[drift].append(n / seconds)
            scored = max(scored, s)
            print(f"round {r + 1}/{args.rounds} drift={'on' if drift else 'off'}: "
                  f"{n / seconds:,.0f} events/s", file=sys.stderr)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    share = 1 - on / off
    print(f"# drift cost ({time.strftime('%Y-%m-%d', time.gmtime())}, "
          f"{platform.machine()}, python {platform.python_version()})")
    print(f"events per pass {n:,}, windows scored per pass {scored}, rounds {args.rounds}")
    print("| path | events/s (median) | µs/event |")
    print("|---|---|---|")
    print(f"| drift off | {off:,.0f} | {1e6 / off:.2f} |")
    print(f"| drift on | {on:,.0f} | {1e6 / on:.2f} |")
    print(f"drift share of per-event cost: {share:.1%} (target < 20%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
