"""Cost of the quality path to a processing worker, per inference event, against stage 1.

With ``quality.enabled`` (the default) the processing worker runs three stages besides
stage 1 (``PartialStage``): ``JoinIntake`` (decodes every inference event again and
re-keys a stub per event, plus one per request id, onto the joins topic), ``JoinStage``
(holds the stubs for ``quality.horizon_seconds``, joins feedback, tallies inferences,
writes a changelog record per stub) and ``QualityStage`` (quality windows). This
benchmark drives each stage's ``on_batch`` directly, in one process and in the same
run, on the same seeded traffic, without a broker:

0. ``decode_events`` alone on the inference messages: what the intake does again;
1. stage 1 alone on the same messages (the baseline; built as the worker builds it,
   drift histograms of prediction and confidence included);
2. the intake on the same messages;
3. the join on the intake's output (stubs only, no feedback), and its changelog writes
   per inference;
4. the intake and the join on the same traffic with feedback (labels) for a share of the
   events, interleaved with the inferences in the order it falls due;
5. the quality windows on the join's output, of 3 and of 4.

Then, untimed: the join's memory per held inference (tracemalloc around a join of every
stub, with and without the request-id stubs) and one full collection with and without
those stubs held; the CPU to restore the join's tables from their changelog state; all
three scaled to ``RATE`` inferences/s over 1 hour and 1 day of ``quality.horizon_seconds``
(linearly). ``--profile``: cProfile of one pass of stage 1, the intake, the join and the
quality windows (with labels), the top functions by own time.

Traffic: ``pipeline.dev.simulate.synthetic`` with classifier profiles only (every event
carries a prediction and a confidence), UUID event ids and a request id on every event
(``--no-request-ids``: none), as JSON arrays of ``--batch`` events per message, handed to
a stage ``--per-call`` records at a time (the runtime's consumer fetches up to 4 MiB per
partition). Feedback from ``pipeline.dev.feedback.FeedbackModel`` (labels only, a mean
delay of one minute), in JSON arrays of up to ``--batch`` feedback events.

Timing: CPU seconds of this process (``time.process_time``) spent inside ``on_batch``
only (the plumbing between stages is not counted), µs per inference event, and of it
the time in the cycle collector (``gc.callbacks``); each stage is run ``--rounds`` times,
in turn, and the median is reported; ratios to stage 1 are the median of the per-round
ratios. GC thresholds are the worker's (``tune_gc``). Also timed: putting each change
set into Kafka record batches as ``KafkaChangelog.write`` does (aiokafka's BatchBuilder,
no broker). No Kafka or ClickHouse I/O and no ticks: what a real worker pays on top
(sending the joins, changelog and outcome records, consuming them again) is not here;
the bytes it would write are counted instead.

Usage:  .venv/bin/python benchmarks/quality_cost.py [--events 200000] [--rounds 5]
            [--feedback-share 0.2] [--no-request-ids] [--series N] [--profile] [--quick]
Progress to stderr, a markdown table to stdout, everything to
``benchmarks/out/quality_cost.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiokafka.producer.message_accumulator import BatchBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.dev.feedback import FeedbackModel  # noqa: E402
from pipeline.dev.simulate import DEFAULT_MODELS, ModelProfile, synthetic  # noqa: E402
from pipeline.quality.intake import JoinIntake  # noqa: E402
from pipeline.quality.join import JoinTable, _Entry  # noqa: E402
from pipeline.quality.join_stage import JoinStage  # noqa: E402
from pipeline.quality.stage import QualityStage  # noqa: E402
from pipeline.runtime.memory import MemoryTopics  # noqa: E402
from pipeline.runtime.memory_tuning import tune_gc  # noqa: E402
from pipeline.runtime.stage import Record, Step  # noqa: E402
from pipeline.runtime.worker import stages  # noqa: E402
from pipeline.sources.codec import decode_events  # noqa: E402
from schemas.event import InferenceEvent  # noqa: E402
from schemas.feedback import FeedbackEvent  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
RATE = 1_000.0  # simulated inferences per second of event time
HORIZONS = {"1 hour": 3_600.0, "1 day": 86_400.0}  # join horizons to size at RATE

_CLF = next(m for m in DEFAULT_MODELS if m.operation == "classify")
# Classifiers only, so every event carries a prediction and a confidence: five series.
MODELS: tuple[ModelProfile, ...] = (
    dataclasses.replace(_CLF, share=0.35),
    dataclasses.replace(_CLF, version="2.2", share=0.05, canary=True),
    dataclasses.replace(_CLF, name="fraud-score", version="7", share=0.3, hosts=2,
                        labels=("legit", "review", "fraud")),
    dataclasses.replace(_CLF, name="toxicity", version="1.4", share=0.2,
                        labels=("ok", "toxic", "spam", "self_harm")),
    dataclasses.replace(_CLF, name="lang-id", version="3", share=0.1,
                        labels=("en", "de", "fr", "es", "pt", "ja", "zh", "other")),
)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# =============================================================================== traffic


@dataclasses.dataclass
class Traffic:
    events: int
    feedback: int
    # messages in arrival order: (topic, value); inference messages hold --batch events
    messages: list[tuple[str, bytes]]
    event_bytes: int  # JSON bytes of the inference messages
    series: int = 0  # distinct (model, model_version) of the inferences

    def of(self, topic: str) -> list[bytes]:
        return [value for t, value in self.messages if t == topic]


def traffic(settings: Settings, events: int, batch: int, share: float, seed: int,
            request_ids: bool, start: float, series: int = 0) -> Traffic:
    """Seeded classifier traffic and its labels, as the producers would send them;
    ``series`` > 0: the inferences spread over about that many series (model versions
    ``<version>.<k>``, round robin), labels unchanged."""
    split = max(1, series // len(MODELS)) if series else 0
    span = events / RATE
    rng = random.Random(seed)
    served: list[tuple[float, InferenceEvent]] = []
    for offset, record in synthetic(seed, RATE, span, start, MODELS, resources=False):
        if len(served) == events:
            break
        ids = {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        if request_ids:
            ids["request_id"] = f"req_{rng.getrandbits(96):024x}"
        served.append((offset, msgspec.structs.replace(record, **ids)))
    model = FeedbackModel(seed=seed, label_rate=share, label_delay="exp:1m",
                          satisfaction_rate=0.0, conversion_rate=0.0, models=MODELS)
    encode = msgspec.json.Encoder().encode
    topics = settings.topics
    messages: list[tuple[str, bytes]] = []
    pending: dict[str, list[Any]] = {topics.events: [], topics.feedback: []}
    counts: Counter[str] = Counter()
    distinct: set[tuple[str, str | None]] = set()
    for i, (_, record) in enumerate(model.stream(served)):
        topic = topics.feedback if isinstance(record, FeedbackEvent) else topics.events
        if split and topic == topics.events:
            record = msgspec.structs.replace(
                record, model_version=f"{record.model_version}.{i % split}")
        if topic == topics.events:
            distinct.add((record.model, record.model_version))
        pending[topic].append(record)
        counts[topic] += 1
        if len(pending[topic]) == batch:
            messages.append((topic, encode(pending[topic])))
            pending[topic] = []
    for topic, left in pending.items():
        if left:
            messages.append((topic, encode(left)))
    event_bytes = sum(len(v) for t, v in messages if t == topics.events)
    return Traffic(counts[topics.events], counts[topics.feedback], messages, event_bytes,
                   len(distinct))


# =============================================================================== driving


@dataclasses.dataclass
class Pass:
    """One run of one stage over its input: CPU inside on_batch, and what it wrote."""

    name: str
    cpu: float = 0.0
    wall: float = 0.0
    calls: int = 0
    records_in: int = 0
    outputs: Counter[str] = dataclasses.field(default_factory=Counter)  # topic -> records
    output_bytes: Counter[str] = dataclasses.field(default_factory=Counter)
    changelog: Counter[str] = dataclasses.field(default_factory=Counter)  # kind -> records
    changelog_bytes: Counter[str] = dataclasses.field(default_factory=Counter)
    build_cpu: float = 0.0  # the runtime's: the changelog records into Kafka record batches
    gc_seconds: float = 0.0  # inside on_batch, in the cycle collector (gc.callbacks)
    gc_runs: Counter[int] = dataclasses.field(default_factory=Counter)  # generation -> runs
    inside: bool = False  # in on_batch now


def _kind(key: str) -> str:
    """The changelog key's kind: ``s`` (a stub), ``out`` (outbox), ``offset``, …"""
    head = key.split("|", 1)[0]
    if head in ("events", "resources"):  # stage 1: <kind>|out|… or <kind>|<slot>
        return "out" if key.split("|", 2)[1] == "out" else "slots"
    return head


def drive(name: str, stage: Any, calls: Iterable[tuple[str, int, list[Record]]], wall: float,
          sink: MemoryTopics | None, changelog: dict[int, dict[str, bytes]] | None = None,
          profiler: cProfile.Profile | None = None, writes: list[Any] | None = None) -> Pass:
    """Feed ``calls`` to ``stage.on_batch`` as the runtime would; time only on_batch.

    Outputs go to ``sink``; ``done`` callbacks run as if Kafka acknowledged them; changes
    are counted (key + value bytes; a delete counts its key), with ``changelog`` applied
    to it, with ``writes`` kept (the change sets, in order). ``profiler`` runs inside
    on_batch only."""
    out = Pass(name)
    clock = time.perf_counter
    started = [-1.0]

    def collector(phase: str, info: dict[str, int]) -> None:  # in on_batch only
        if phase == "start":
            started[0] = clock() if out.inside else -1.0
        elif started[0] >= 0:
            out.gc_seconds += clock() - started[0]
            out.gc_runs[info["generation"]] += 1

    gc.callbacks.append(collector)
    try:
        feed(stage, calls, wall, sink, changelog, profiler, writes, out)
    finally:
        gc.callbacks.remove(collector)
    return out


def feed(stage: Any, calls: Iterable[tuple[str, int, list[Record]]], wall: float,
         sink: MemoryTopics | None, changelog: dict[int, dict[str, bytes]] | None,
         profiler: cProfile.Profile | None, writes: list[Any] | None, out: Pass) -> None:
    cpu, clock = time.process_time, time.perf_counter
    for topic, partition, records in calls:
        c0, w0 = cpu(), clock()
        if profiler is not None:
            profiler.enable()
        out.inside = True
        step: Step = stage.on_batch(topic, partition, records, wall)
        out.inside = False
        if profiler is not None:
            profiler.disable()
        out.cpu += cpu() - c0
        out.wall += clock() - w0
        out.calls += 1
        out.records_in += len(records)
        for part, changes in step.changes.items():
            for key, value in changes.items():
                kind = _kind(key)
                out.changelog[kind] += 1
                out.changelog_bytes[kind] += len(key.encode()) + len(value or b"")
            if writes is not None and changes:
                writes.append(changes)
            if changelog is not None:
                state = changelog.setdefault(part, {})
                for key, value in changes.items():
                    if value is None:
                        state.pop(key, None)
                    else:
                        state[key] = value
        for o in step.outputs:
            out.outputs[o.topic] += 1
            out.output_bytes[o.topic] += len(o.value)
            if sink is not None:
                sink.append(o.topic, o.value, key=o.key, partition=o.partition,
                            headers=o.headers)
        for done in step.done:
            done()


def source_calls(messages: Sequence[tuple[str, bytes]], per_call: int
                 ) -> list[tuple[str, int, list[Record]]]:
    """Source messages (one partition per topic) in arrival order, ``per_call`` records of
    one topic per call."""
    offsets: Counter[str] = Counter()
    calls: list[tuple[str, int, list[Record]]] = []
    for topic, value in messages:
        record = Record(topic, 0, offsets[topic], None, value,
                        (("content-type", b"application/json"),))
        offsets[topic] += 1
        if calls and calls[-1][0] == topic and len(calls[-1][2]) < per_call:
            calls[-1][2].append(record)
        else:
            calls.append((topic, 0, [record]))
    return calls


def topic_calls(topics: MemoryTopics, topic: str, per_call: int
                ) -> list[tuple[str, int, list[Record]]]:
    """Every record of ``topic``, ``per_call`` per partition per call, partitions in turn
    (as getmany hands them over)."""
    parts = {p: list(rs) for p, rs in sorted(topics.log[topic].items())}
    calls = []
    at = 0
    while any(at < len(rs) for rs in parts.values()):
        for p, rs in parts.items():
            if at < len(rs):
                calls.append((topic, p, rs[at:at + per_call]))
        at += per_call
    return calls


def assign(stage: Any, topic: str, partitions: int,
           state: dict[int, dict[str, bytes]] | None = None) -> Any:
    for p in range(partitions):
        stage.on_assign(topic, p, dict((state or {}).get(p, {})))
    return stage


@dataclasses.dataclass
class Round:
    passes: dict[str, Pass]
    join_state: dict[int, dict[str, bytes]]  # the stubs-only join's changelog at the end
    joins: MemoryTopics  # the stubs-only intake's output


class DecodeOnly:
    """What the intake does again: ``decode_events`` of every message, nothing else."""

    def __init__(self, settings: Settings) -> None:
        self.limits = settings.limits

    def on_batch(self, topic: str, partition: int, records: Sequence[Record],
                 wall: float) -> Step:
        for record in records:
            decode_events(record.value, record.headers, self.limits, wall, InferenceEvent)
        return Step()


def build_batches(writes: Sequence[dict[str, bytes | None]]) -> float:
    """CPU seconds to put change sets into Kafka record batches as ``KafkaChangelog.write``
    does (aiokafka's BatchBuilder, the worker producer's 1 MiB batches, no compression);
    sending them to the broker is not counted."""
    c0 = time.process_time()
    for changes in writes:
        batch = BatchBuilder(1 << 20, 0)
        for key, value in changes.items():
            raw = key.encode()
            if batch.append(key=raw, value=value, timestamp=None) is None:
                batch._build()  # what the producer does when it sends it
                batch = BatchBuilder(1 << 20, 0)
                batch.append(key=raw, value=value, timestamp=None)
        batch._build()
    return time.process_time() - c0


def one_round(settings: Settings, data: Traffic, per_call: int, wall: float,
              keep: bool = False) -> Round:
    """Every stage once, in turn; stages are dropped and collected between passes."""
    topics = settings.topics
    n = settings.topics.partitions
    event_msgs = [(t, v) for t, v in data.messages if t == topics.events]
    passes: dict[str, Pass] = {}

    def run(name: str, make: Callable[[], Any], calls: Any, sink: MemoryTopics | None,
            changelog: dict[int, dict[str, bytes]] | None = None) -> None:
        stage = make()
        writes: list[dict[str, bytes | None]] = []
        gc.collect()
        passes[name] = done = drive(name, stage, calls, wall, sink, changelog, writes=writes)
        del stage
        gc.collect()
        done.build_cpu = build_batches(writes)
        del writes
        gc.collect()

    run("decode", lambda: DecodeOnly(settings), source_calls(event_msgs, per_call), None)
    run("stage1", lambda: assign(stages(settings)[0], topics.events, 1),
        source_calls(event_msgs, per_call), None)
    joins = MemoryTopics(n)
    run("intake", lambda: JoinIntake(settings), source_calls(event_msgs, per_call), joins)
    outcomes = MemoryTopics(n)
    state: dict[int, dict[str, bytes]] = {}
    run("join", lambda: assign(JoinStage(settings), topics.joins, n),
        topic_calls(joins, topics.joins, per_call), outcomes, state)
    run("quality", lambda: assign(QualityStage(settings), topics.outcomes, n),
        topic_calls(outcomes, topics.outcomes, 500), MemoryTopics(n))
    del outcomes
    # with feedback: inferences and labels through the intake in arrival order
    joins_fb = MemoryTopics(n)
    run("intake+fb", lambda: JoinIntake(settings), source_calls(data.messages, per_call),
        joins_fb)
    outcomes_fb = MemoryTopics(n)
    run("join+fb", lambda: assign(JoinStage(settings), topics.joins, n),
        topic_calls(joins_fb, topics.joins, per_call), outcomes_fb)
    del joins_fb
    run("quality+fb", lambda: assign(QualityStage(settings), topics.outcomes, n),
        topic_calls(outcomes_fb, topics.outcomes, 500), MemoryTopics(n))
    return Round(passes, state if keep else {}, joins if keep else MemoryTopics(n))


# =============================================================================== memory


def held_memory(settings: Settings, joins: MemoryTopics, per_call: int, wall: float
                ) -> dict[str, Any]:
    """Bytes the join holds per inference: tracemalloc around a join of every stub, its
    steps dropped (outputs acknowledged, changes written elsewhere)."""
    topics = settings.topics
    calls = topic_calls(joins, topics.joins, per_call)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    stage = assign(JoinStage(settings), topics.joins, settings.topics.partitions)
    drive("memory", stage, calls, wall, None)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tables = list(stage.tables.values())
    entries = sum(len(t.stubs) for t in tables)
    primary = sum(_Entry.decode(raw).primary for t in tables for raw in t.stubs.values())
    held = after - before
    parts = entry_parts(tables[0])
    del tables
    full = _full_collection()  # with the stubs held, then without
    del stage
    full -= _full_collection()
    return {"bytes": held, "entries": entries, "inferences": primary,
            "bytes_per_inference": held / primary, "bytes_per_entry": held / entries,
            "entry_parts": parts, "full_gc_s_per_inference": max(0.0, full) / primary}


def _full_collection() -> float:
    """Seconds of one full collection (median of 3): what a pause costs with this heap."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def entry_parts(table: JoinTable) -> dict[str, int]:
    """sys.getsizeof of what one held stub costs (a primary one): its join key and its
    packed changelog bytes, the expiry entry and the dict slot, for the reading."""
    join_id, raw = next((k, r) for k, r in table.stubs.items() if _Entry.decode(r).primary)
    size = sys.getsizeof
    return {
        "join key (str)": size(join_id),
        "packed stub (bytes)": size(raw),
        "expiry (tuple + float)": size((0.0, "")) + size(0.0),
        "dict slot (keys + index, amortised)": 8 * 3 + 8,
    }


def restore_cost(settings: Settings, state: dict[int, dict[str, bytes]]) -> dict[str, float]:
    """CPU µs per held stub to rebuild the join tables from their changelog state."""
    stubs = sum(1 for part in state.values() for k in part if k.startswith("s|"))
    gc.collect()
    c0 = time.process_time()
    tables = [JoinTable.restore(settings.quality, part) for part in state.values()]
    cpu = time.process_time() - c0
    del tables
    gc.collect()
    return {"stubs": stubs, "cpu_s": cpu, "us_per_stub": cpu / stubs * 1e6,
            "state_bytes": sum(len(k) + len(v) for part in state.values()
                               for k, v in part.items() if k.startswith("s|"))}


# =============================================================================== profile


def profile(settings: Settings, data: Traffic, per_call: int, wall: float,
            top: int) -> dict[str, list[dict[str, Any]]]:
    """cProfile of one pass of the intake, the join (with feedback) and the quality
    windows; the top functions by own time."""
    topics = settings.topics
    n = topics.partitions
    out: dict[str, list[dict[str, Any]]] = {}

    def prof(name: str, stage: Any, calls: Any, sink: MemoryTopics | None) -> None:
        gc.collect()
        profiler = cProfile.Profile()
        drive(name, stage, calls, wall, sink, profiler=profiler)
        stats = pstats.Stats(profiler, stream=io.StringIO())
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = []
        for (file, line, func), (_, calls_, tt, ct, _) in sorted(
                stats.stats.items(), key=lambda kv: -kv[1][2])[:top]:  # type: ignore[attr-defined]
            where = file.replace(str(ROOT) + "/", "")
            rows.append({"function": f"{where}:{line}({func})", "calls": calls_,
                         "tottime_share": tt / total, "cumtime_share": ct / total})
        out[name] = rows

    event_msgs = [(t, v) for t, v in data.messages if t == topics.events]
    first = assign(stages(settings)[0], topics.events, 1)
    prof("stage1", first, source_calls(event_msgs, per_call), None)
    del first
    joins = MemoryTopics(n)
    prof("intake+fb", JoinIntake(settings), source_calls(data.messages, per_call), joins)
    outcomes = MemoryTopics(n)
    prof("join+fb", assign(JoinStage(settings), topics.joins, n),
         topic_calls(joins, topics.joins, per_call), outcomes)
    prof("quality+fb", assign(QualityStage(settings), topics.outcomes, n),
         topic_calls(outcomes, topics.outcomes, 500), None)
    return out


# =============================================================================== report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500, help="events per message")
    parser.add_argument("--per-call", type=int, default=10,
                        help="records per on_batch call (per partition)")
    parser.add_argument("--feedback-share", type=float, default=0.2,
                        help="share of the inferences that get a label")
    parser.add_argument("--no-request-ids", dest="request_ids", action="store_false")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--series", type=int, default=0,
                        help="spread the inferences over about this many series "
                             "(default: the five models' own)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one pass of each stage (untimed)")
    parser.add_argument("--quick", action="store_true", help="30,000 events, 1 round")
    parser.add_argument("--out", type=Path, default=OUT / "quality_cost.json")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 30_000, 1
    began = time.perf_counter()
    load = os.getloadavg()[0]
    settings = load_settings(environ={})
    wall = time.time()
    start = wall - args.events / RATE - 900.0  # windows of the run end before wall: published
    say(f"generating {args.events:,} inferences, labels for {args.feedback_share:.0%} …")
    data = traffic(settings, args.events, args.batch, args.feedback_share, args.seed,
                   args.request_ids, start, args.series)
    say(f"{data.events:,} inferences in {len(data.of(settings.topics.events))} messages "
        f"({data.event_bytes / data.events:.0f} B/event JSON), {data.feedback:,} labels "
        f"in {len(data.of(settings.topics.feedback))} messages")
    tune_gc()  # the worker's collector settings

    rounds: list[Round] = []
    for r in range(args.rounds):
        rounds.append(one_round(settings, data, args.per_call, wall, keep=r == 0))
        line = ", ".join(f"{name} {p.cpu / data.events * 1e6:.2f}"
                         for name, p in rounds[-1].passes.items())
        say(f"round {r + 1}/{args.rounds} (CPU µs per inference event): {line}")

    say("memory per held inference (tracemalloc, untimed) …")
    memory = held_memory(settings, rounds[0].joins, args.per_call, wall)
    memory_single = None
    if args.request_ids:  # the same, had the events no request id: primary stubs only
        single = MemoryTopics(settings.topics.partitions)
        dec = msgspec.msgpack.Decoder(list[Any])
        enc = msgspec.msgpack.Encoder()
        for rec in rounds[0].joins.records(settings.topics.joins):
            items = [i for i in dec.decode(rec.value) if len(i) < 4 or i[3]]  # primary
            single.append(rec.topic, enc.encode(items), key=rec.key, partition=rec.partition)
        memory_single = held_memory(settings, single, args.per_call, wall)
    say("restoring the join from its changelog state …")
    restore = restore_cost(settings, rounds[0].join_state)
    profiles = None
    if args.profile:
        say("cProfile of one pass per stage …")
        profiles = profile(settings, data, args.per_call, wall, 10)

    # ---------------------------------------------------------------- numbers
    n = data.events
    names = list(rounds[0].passes)
    us = {name: statistics.median(r.passes[name].cpu for r in rounds) / n * 1e6
          for name in names}
    us_wall = {name: statistics.median(r.passes[name].wall for r in rounds) / n * 1e6
               for name in names}
    us_build = {name: statistics.median(r.passes[name].build_cpu for r in rounds) / n * 1e6
                for name in names}
    us_gc = {name: statistics.median(r.passes[name].gc_seconds for r in rounds) / n * 1e6
             for name in names}

    def ratio(parts: Sequence[str], build: bool = False) -> float:
        def cost(p: Pass) -> float:
            return p.cpu + (p.build_cpu if build else 0.0)

        return statistics.median(sum(cost(r.passes[p]) for p in parts)
                                 / cost(r.passes["stage1"]) for r in rounds)

    path = ("intake", "join", "quality")
    path_fb = ("intake+fb", "join+fb", "quality+fb")
    first = rounds[0].passes
    join, join_fb = first["join"], first["join+fb"]
    per_event = {
        name: {"changelog_records": sum(p.changelog.values()) / n,
               "changelog_bytes": sum(p.changelog_bytes.values()) / n,
               "changelog_bytes_by_kind": {k: v / n for k, v in sorted(p.changelog_bytes.items())},
               "output_records": sum(p.outputs.values()) / n,
               "output_bytes": {t: v / n for t, v in sorted(p.output_bytes.items())}}
        for name, p in first.items()}
    sizing = {label: {"held_inferences": RATE * seconds,
                      "memory_gb": memory["bytes_per_inference"] * RATE * seconds / 1e9,
                      "memory_gb_without_request_ids": (
                          memory_single["bytes_per_inference"] * RATE * seconds / 1e9
                          if memory_single else None),
                      "changelog_state_gb": restore["state_bytes"] / n * RATE * seconds / 1e9,
                      "restore_cpu_s": restore["us_per_stub"] * 1e-6 * restore["stubs"] / n
                      * RATE * seconds,
                      "full_gc_pause_s": memory["full_gc_s_per_inference"] * RATE * seconds}
              for label, seconds in HORIZONS.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"node": platform.node(), "cores": os.cpu_count(),
                    "arch": platform.machine(), "python": platform.python_version(),
                    "load_before": load, "load_after": os.getloadavg()[0]},
        "command": " ".join([".venv/bin/python", "benchmarks/quality_cost.py", *sys.argv[1:]]),
        "workload": {"inferences": n, "labels": data.feedback, "messages": len(data.messages),
                     "events_per_message": args.batch, "records_per_call": args.per_call,
                     "request_ids": args.request_ids, "json_bytes_per_event":
                     data.event_bytes / n, "models": [f"{m.name} {m.version}" for m in MODELS],
                     "seed": args.seed, "rounds": args.rounds, "series": data.series},
        "cpu_us_per_inference": us,
        "wall_us_per_inference": us_wall,
        "changelog_batch_cpu_us_per_inference": us_build,
        "gc_us_per_inference": us_gc,  # wall time in the collector inside on_batch
        "gc_runs_round_1": {k: dict(p.gc_runs) for k, p in rounds[0].passes.items()},
        "rounds_cpu_us_per_inference": {name: [r.passes[name].cpu / n * 1e6 for r in rounds]
                                        for name in names},
        "events_per_cpu_second": {k: 1e6 / v for k, v in us.items()},
        "ratio_to_stage1": {
            "decode_events only": ratio(["decode"]),
            "intake": ratio(["intake"]), "join": ratio(["join"]), "quality": ratio(["quality"]),
            "quality path (intake + join + quality)": ratio(path),
            "with labels (intake+fb + join+fb + quality+fb)": ratio(path_fb),
            "quality path, changelog batches included": ratio(path, build=True),
            "with labels, changelog batches included": ratio(path_fb, build=True)},
        "per_inference": per_event,
        "join_changelog": {"stubs_only": dict(join.changelog_bytes),
                           "with_labels": dict(join_fb.changelog_bytes)},
        "memory": memory, "memory_without_request_ids": memory_single,
        "restore": restore, "sizing_at_rate": {"rate_per_s": RATE, **sizing},
        "profiles": profiles,
        "seconds": time.perf_counter() - began,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    report(result, data)
    say(f"done in {result['seconds']:.0f} s; {args.out}")
    return 0


LABELS = {
    "decode": "0. `decode_events` only (inside 1 and 2)",
    "stage1": "1. stage 1 (`PartialStage`), baseline",
    "intake": "2. quality intake (`JoinIntake`), inferences",
    "join": "3. join (`JoinStage`), stubs only",
    "quality": "5. quality windows (`QualityStage`) on 3's output",
    "intake+fb": "2'. intake, inferences + labels",
    "join+fb": "4. join with labels",
    "quality+fb": "5'. quality windows on 4's output",
}


def report(r: dict[str, Any], data: Traffic) -> None:
    w, m = r["workload"], r["machine"]
    print(f"# quality cost ({r['date']}, {m['node']}, {m['cores']} cores {m['arch']}, "
          f"Python {m['python']}, load {m['load_before']:.1f} → {m['load_after']:.1f})")
    print(f"{w['inferences']:,} inferences of {w['series']:,} series "
          f"({w['events_per_message']}/message, "
          f"{w['json_bytes_per_event']:.0f} B JSON each, request ids: {w['request_ids']}), "
          f"{w['labels']:,} labels; median of {w['rounds']} rounds\n")
    print("| stage | CPU µs / inference | of which GC, µs | inferences / CPU s | × stage 1 | "
          "changelog B / inference (records) | + changelog batches, CPU µs | output B / "
          "inference |")
    print("|---|---|---|---|---|---|---|---|")
    s1 = r["cpu_us_per_inference"]["stage1"]
    for name, label in LABELS.items():
        us = r["cpu_us_per_inference"][name]
        pe = r["per_inference"][name]
        out = ", ".join(f"{t.split('.')[-1]} {b:.3g}" for t, b in pe["output_bytes"].items())
        print(f"| {label} | {us:.2f} | {r['gc_us_per_inference'][name]:.2f} | "
              f"{1e6 / us:,.0f} | {us / s1:.2f} | "
              f"{pe['changelog_bytes']:.0f} ({pe['changelog_records']:.2f}) | "
              f"{r['changelog_batch_cpu_us_per_inference'][name]:.2f} | {out or '—'} |")
    for name, value in r["ratio_to_stage1"].items():
        print(f"- {name} / stage 1: {value:.2f}×")
    mem, single = r["memory"], r["memory_without_request_ids"]
    print(f"\nmemory held by the join: {mem['bytes_per_inference']:.0f} B per inference "
          f"({mem['entries']:,} stubs for {mem['inferences']:,} inferences, "
          f"{mem['bytes_per_entry']:.0f} B per stub)"
          + (f"; without request ids {single['bytes_per_inference']:.0f} B" if single else ""))
    print("one stub's objects (sys.getsizeof): " + ", ".join(
        f"{k} {v}" for k, v in mem["entry_parts"].items()))
    rs = r["restore"]
    print(f"restore from the changelog: {rs['us_per_stub']:.2f} CPU µs per stub, "
          f"{rs['state_bytes'] / rs['stubs']:.0f} B of state per stub")
    print("\n| horizon at 1,000 inferences/s | held | join memory | without request ids | "
          "changelog state | restore CPU | one full GC pass |")
    print("|---|---|---|---|---|---|---|")
    for label in HORIZONS:
        s = r["sizing_at_rate"][label]
        no_req = (f"{s['memory_gb_without_request_ids']:.1f} GB"
                  if s["memory_gb_without_request_ids"] is not None else "—")
        print(f"| {label} | {s['held_inferences']:,.0f} | {s['memory_gb']:.1f} GB | {no_req} | "
              f"{s['changelog_state_gb']:.1f} GB | {s['restore_cpu_s']:,.0f} s | "
              f"{s['full_gc_pause_s']:,.1f} s |")
    if r["profiles"]:
        for name, rows in r["profiles"].items():
            print(f"\ncProfile {name} (top by own time):")
            for row in rows[:8]:
                print(f"  {row['tottime_share']:5.1%} own, {row['cumtime_share']:5.1%} cum, "
                      f"{row['calls']:>9,} calls  {row['function']}")


if __name__ == "__main__":
    raise SystemExit(main())
