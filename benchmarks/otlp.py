"""OTLP ingest benchmark: GenAI spans per second through decode + mapping, beside the
native batched path, in one run on the same events. No broker.

Records of ``--spans`` spans each (default 100) are made by the real OpenTelemetry SDK
(the attributes ``opentelemetry-instrumentation-openai-v2`` writes, plus a few request
parameters) and encoded as the Collector's Kafka exporter writes them. Measured, each
best of ``--repeat`` interleaved rounds (wall and CPU seconds):

* ``otlp_proto`` / ``otlp_json``: :func:`pipeline.sources.otlp.map_spans` per record;
* ``bridge_proto``: :class:`~pipeline.sources.otlp_stage.OtlpStage` ``on_batch`` (mapping
  plus the JSON arrays it writes to the events topic: the bridge's whole cost);
* ``native``: :func:`pipeline.sources.codec.decode_events` of a JSON array of the same
  events (what stage 1 does per record, for native producers and after the bridge alike);
* ``protojson_parse``: ``google.protobuf.json_format.Parse`` of the OTLP/JSON records,
  for the record (why the JSON path reads with msgspec), on a tenth of the records.

The ratios are the comparable figures on a shared machine; the rates move with its load.

Usage:  .venv/bin/python benchmarks/otlp.py [--records 200] [--spans 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.protobuf import json_format  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData  # noqa: E402

from pipeline.config import IngestLimits, OtlpSettings, Settings  # noqa: E402
from pipeline.runtime.stage import Record  # noqa: E402
from pipeline.sources.codec import decode_events  # noqa: E402
from pipeline.sources.otlp import map_spans  # noqa: E402
from pipeline.sources.otlp_stage import OtlpStage  # noqa: E402
from tests.unit.sources.test_otlp import CURRENT, encode, sdk_spans  # noqa: E402

EXTRA = {"gen_ai.request.max_tokens": 512, "gen_ai.request.top_p": 0.9,
         "gen_ai.request.seed": 7, "server.address": "api.openai.com", "server.port": 443,
         "gen_ai.openai.response.system_fingerprint": "fp_abc123",
         "gen_ai.output.type": "text"}


def make_records(count: int, spans: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(otlp_proto records, otlp_json records, native JSON arrays) of the same spans."""
    proto, json_, native = [], [], []
    for i in range(count):
        attrs = {**CURRENT, **EXTRA, "gen_ai.usage.input_tokens": 100 + i,
                 "gen_ai.response.id": f"chatcmpl-{i}"}
        made = sdk_spans(*[{"attrs": attrs, "duration": 0.1 + (j % 50) / 100}
                           for j in range(spans)])
        proto.append(encode(made, "otlp_proto"))
        json_.append(encode(made, "otlp_json"))
        events = map_spans(proto[-1], "otlp_proto").events
        assert len(events) == spans
        native.append(msgspec.json.encode(events))
    return proto, json_, native


def timed(run: Callable[[], int]) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = run()
    return time.perf_counter() - wall, time.process_time() - cpu, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--spans", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    proto, json_, native = make_records(args.records, args.spans)
    print(f"made {args.records} records × {args.spans} spans in "
          f"{time.perf_counter() - started:.1f}s; record sizes: proto "
          f"{len(proto[0]):,} B, json {len(json_[0]):,} B, native array {len(native[0]):,} B")
    limits, now = IngestLimits(), time.time()
    settings = Settings(otlp=OtlpSettings(enabled=True, topics={"p": "otlp_proto"}))
    stage = OtlpStage(settings)
    records = [Record("p", 0, i, None, v) for i, v in enumerate(proto)]

    def run_map(values: list[bytes], encoding: str) -> Callable[[], int]:
        return lambda: sum(len(map_spans(v, encoding).events) for v in values)  # type: ignore[arg-type]

    def run_bridge() -> int:
        step = stage.on_batch("p", 0, records, now)
        assert step.outputs and not step.dead_letters
        return len(records) * args.spans

    def run_native() -> int:
        return sum(len(decode_events(v, (), limits, now).events) for v in native)

    def run_parse() -> int:
        some = json_[: max(1, len(json_) // 10)]
        for value in some:
            json_format.Parse(value, TracesData())
        return len(some) * args.spans

    cases = {"otlp_proto": run_map(proto, "otlp_proto"), "otlp_json": run_map(json_, "otlp_json"),
             "bridge_proto": run_bridge, "native": run_native, "protojson_parse": run_parse}
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(args.repeat):  # interleaved: a busy spell hits every case alike
        for name, run in cases.items():
            result = timed(run)
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    print(f"\n{'path':<16} {'spans/s (wall)':>15} {'spans/s (CPU)':>15} {'µs/span CPU':>12}")
    for name, (wall, cpu, n) in best.items():
        print(f"{name:<16} {n / wall:>15,.0f} {n / max(cpu, 1e-9):>15,.0f} "
              f"{cpu / n * 1e6:>12.2f}")
    native_rate = best["native"][2] / best["native"][0]
    print()
    for name in ("otlp_proto", "otlp_json", "bridge_proto", "protojson_parse"):
        wall, _, n = best[name]
        print(f"{name} / native (wall): {n / wall / native_rate:.2f}×")
    # an OTLP span pays the bridge, then stage 1's decode like any native event
    per_span = best["bridge_proto"][0] / best["bridge_proto"][2] + 1 / native_rate
    print(f"OTLP end to end (bridge + stage 1 decode): {1 / per_span:,.0f} spans/s, "
          f"{1 / per_span / native_rate:.2f}× native")


if __name__ == "__main__":
    main()
