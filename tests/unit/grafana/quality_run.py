"""Model quality for the dashboards: the simulated run's inferences and their feedback
through the quality path, into the store as the sink writes it.

The inferences the simulated run stored (:mod:`tests.unit.views.simulated_run`), plus a
small regression model (``eta-reg``: numeric predictions, so MAE and RMSE have values),
get delayed feedback from the simulator's feedback model (:mod:`pipeline.dev.feedback`:
labels, thumbs, conversions, an accuracy drop on ``intent-clf``). To that come a re-sent
feedback, second labels for labelled inferences and labels for inferences that never
came, so every fate of the join occurs. Intake, join and quality windows run on the
in-memory runner minute by minute, as the workers would while time passes (so windows
are published, then filled in with higher versions, and the estimate appears once the
calibration has its labels); the sink then decodes the outcomes and metrics topics and
writes ``quality_windows`` and ``feedback`` with its own row code (``quality_columns``,
``feedback_columns``).
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import msgspec
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.config import Settings, TopicSettings
from pipeline.dev.feedback import FeedbackModel
from pipeline.quality.intake import JoinIntake
from pipeline.quality.join_stage import JoinStage
from pipeline.quality.stage import QualityStage
from pipeline.runtime.memory import MemoryRunner, MemoryTopics
from pipeline.runtime.state import MemoryChangelog
from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.writer import ClickHouseSink
from schemas.event import InferenceEvent
from schemas.feedback import FeedbackEvent
from tests.unit.views.simulated_run import PARTITIONS, SimulatedRun, simulated_run

__all__ = ["EXTRA", "REGRESSION", "QualityRun", "quality_run", "store_quality"]

REGRESSION = "eta-reg"
EXTRA = {"duplicate": 12, "repeat": 10, "unmatched": 8}  # feedback added per fate
INCIDENTS = ("accuracy_drop@540+300:model=intent-clf:factor=25",)
JSON = (("content-type", b"application/json"),)


class QualityRun(msgspec.Struct, frozen=True):
    """What the quality path published on the topics the sink stores."""

    start: float
    end: float
    topics: dict[str, list[tuple[int, int, bytes | None, bytes | None,
                                 tuple[tuple[str, bytes], ...]]]]


def _settings() -> Settings:
    return Settings(topics=TopicSettings(partitions=PARTITIONS))


def _regression(run: SimulatedRun) -> list[InferenceEvent]:
    """One inference every 3 s: an estimated time of arrival in seconds."""
    return [InferenceEvent(event_id=f"eta-{i}", request_id=f"eta-r-{i}",
                           timestamp=run.start + 3.0 * i + 1.5, model=REGRESSION,
                           model_version="1", operation="regression", latency_ms=5.0,
                           prediction=float(300 + 37 * (i * 7919 % 23)))
            for i in range(int((run.end - run.start) // 3))]


def _extra(feedback: list[tuple[float, FeedbackEvent]], start: float) -> list[tuple[float, Any]]:
    """Re-sent feedback (duplicate), a second label (repeat), unknown inferences (unmatched)."""
    labels = [(at, f) for at, f in feedback if f.kind == "label"]
    out: list[tuple[float, Any]] = []
    for at, f in labels[:EXTRA["duplicate"]]:
        out.append((at + 30.0, f))
    for at, f in labels[100:100 + EXTRA["repeat"]]:
        again = msgspec.structs.replace(f, feedback_id=f"{f.feedback_id}/again",
                                        timestamp=f.timestamp + 45.0, label="other")
        out.append((at + 45.0, again))
    for i in range(EXTRA["unmatched"]):
        at = 60.0 + 90.0 * i
        out.append((at, FeedbackEvent(feedback_id=f"ghost-{i}", event_id=f"ghost-{i}",
                                      timestamp=start + at,
                                      kind="label", label="billing", source="human_review")))
    return out


@cache
def quality_run(seed: int = 7) -> QualityRun:
    """Run intake, join and quality windows over the simulated run (cached: seconds)."""
    run = simulated_run(seed)
    settings = _settings()
    topics = settings.topics
    events = [msgspec.json.decode(value, type=InferenceEvent)
              for _, _, _, value, _ in run.topics[topics.events] if value]
    traffic = sorted([*events, *_regression(run)], key=lambda e: e.timestamp)
    model = FeedbackModel(INCIDENTS, seed=seed, label_rate=0.3, label_delay="exp:40s",
                          satisfaction_rate=0.05, satisfaction_delay="exp:20s",
                          conversion_rate=0.05, conversion_delay="exp:60s",
                          informative=False,  # the stored inferences stay as they are
                          models=None)
    stream = list(model.stream(((e.timestamp - run.start, e) for e in traffic), horizon=120))
    feedback = [(at, r) for at, r in stream if isinstance(r, FeedbackEvent)]
    stream = sorted([*stream, *_extra(feedback, run.start)], key=lambda item: item[0])

    memory = MemoryTopics(PARTITIONS)
    committed: dict = {}
    runners = [MemoryRunner(make, memory, MemoryChangelog(), committed, topics.dlq)
               for make in (lambda: JoinIntake(settings), lambda: JoinStage(settings),
                            lambda: QualityStage(settings))]
    minutes: dict[int, list[Any]] = {}
    for at, record in stream:
        minutes.setdefault(int(at // 60), []).append(record)

    def publish(records: list[Any], n: int) -> None:
        for is_feedback in (False, True):
            chunk = [r for r in records if isinstance(r, FeedbackEvent) == is_feedback]
            for i in range(0, len(chunk), 200):
                memory.append(topics.feedback if is_feedback else topics.events,
                              msgspec.json.encode(chunk[i:i + 200]),
                              key=f"q{n}-{is_feedback}-{i}".encode(), headers=JSON)

    async def step(wall: float) -> None:
        for runner in runners:
            await runner.drain(wall)
            await runner.tick(wall)
            await runner.drain(wall)

    async def go() -> None:
        parts = range(PARTITIONS)
        await runners[0].assign([(t, p) for t in (topics.events, topics.feedback)
                                 for p in parts])
        await runners[1].assign([(topics.joins, p) for p in parts])
        await runners[2].assign([(topics.outcomes, p) for p in parts])
        for minute in range(max(minutes) + 1):
            publish(minutes.get(minute, []), minute)
            await step(run.start + 60.0 * (minute + 1))
        last = run.start + 60.0 * (max(minutes) + 1)
        for later in (600.0, 1200.0, 3600.0):  # unmatched feedback gives up; all published
            await step(last + later)

    asyncio.run(go())
    assert not memory.records(topics.dlq), memory.records(topics.dlq)[:3]
    stored = (topics.metrics, topics.outcomes)
    return QualityRun(start=run.start, end=run.end, topics={
        name: [(r.partition, r.offset, r.key, r.value, tuple(r.headers))
               for r in memory.records(name)] for name in stored})


def store_quality(client: Any, run: QualityRun) -> None:
    """Write the quality windows and the feedback fates as the sink does."""
    sink = ClickHouseSink(_settings(), client)
    batch = Batch()
    records: dict[TopicPartition, list[ConsumerRecord]] = {}
    for topic, items in run.topics.items():
        for partition, offset, key, value, headers in items:
            records.setdefault(TopicPartition(topic, partition), []).append(ConsumerRecord(
                topic, partition, offset, 0, 0, key, value, None, 0, len(value or b""),
                list(headers)))
    sink.collect(records, batch)
    assert batch.quality_windows and batch.fates, "the quality path published nothing"
    sink.insert(batch)
    assert not batch.refused and not batch.letters, (batch.refused[:3], batch.letters[:3])
