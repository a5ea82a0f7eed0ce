"""A simulated run, broker-free: seeded traffic through every stage into a real store.

The simulator's traffic (with a latency spike, an error burst and a drifted prompt
length, so alerts, drift and anomaly scores have something to say) goes through stage 1,
stage 2 (merge, score) and the alert rules on the in-memory runner; the sink then decodes
every topic the worker would store (events, resources, metrics, scores, alerts) and
writes it with its own row code, and refreshes the roll-ups. Every table a view or a
dashboard reads then holds rows, written as production writes them.
"""

from __future__ import annotations

import asyncio
import math
import time
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.alerting.rules import load_rules
from pipeline.alerting.stage import AlertRuleStage
from pipeline.config import Settings, TopicSettings
from pipeline.dev.simulate import synthetic
from pipeline.runtime.memory import MemoryRunner, MemoryTopics
from pipeline.runtime.state import MemoryChangelog
from pipeline.scoring.stage import MergeStage
from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.rollups import refresh_rollups
from pipeline.sinks.clickhouse.writer import ClickHouseSink
from pipeline.windows.partial_stage import PartialStage
from schemas.event import ResourceSample

__all__ = ["MINUTES", "PARTITIONS", "SimulatedRun", "simulated_run", "store_run"]

RULES = Path(__file__).resolve().parents[3] / "deploy" / "rules" / "example.rules.yml"
PARTITIONS = 2
MINUTES = 20
RATE = 25.0  # events per second over every model
INCIDENTS = (
    "latency_spike@600+180:model=gpt-chat:factor=8",
    "error_burst@840+120:model=code-complete:factor=0.4",
    "feature_drift@900+300:model=gpt-chat:factor=4",
)


class SimulatedRun(msgspec.Struct, frozen=True):
    """What the stages published, per topic, and the event-time range it covers."""

    start: float  # Unix seconds of the first event (a whole minute)
    end: float  # Unix seconds just after the last event
    topics: dict[str, list[tuple[int, int, bytes | None, bytes | None,
                                 tuple[tuple[str, bytes], ...]]]]


def _settings() -> Settings:
    return Settings(topics=TopicSettings(partitions=PARTITIONS))


@cache
def simulated_run(seed: int = 7) -> SimulatedRun:
    """Run the stages once per seed (cached: a few seconds) over the last ``MINUTES``."""
    settings = _settings()
    topics = settings.topics
    start = float(math.floor(time.time() / 60) * 60 - (MINUTES + 2) * 60)
    memory = MemoryTopics(PARTITIONS)
    for i, (_, record) in enumerate(synthetic(seed, RATE, MINUTES * 60.0, start,
                                               incidents=INCIDENTS)):
        topic = topics.resources if isinstance(record, ResourceSample) else topics.events
        memory.append(topic, msgspec.json.encode(record), key=f"k{i}".encode(),
                      headers=[("content-type", b"application/json")])
    end = start + MINUTES * 60.0
    later = end + 3600  # a tick this late closes every window by the idle advance
    stage1 = MemoryRunner(lambda: PartialStage(settings), memory, MemoryChangelog(), {},
                          topics.dlq)
    stage2 = MemoryRunner(lambda: MergeStage(settings), memory, MemoryChangelog(), {},
                          topics.dlq)
    rules = load_rules(RULES)
    alerting = MemoryRunner(lambda: AlertRuleStage(settings, rules), memory,
                            MemoryChangelog(), {}, topics.dlq)

    async def go() -> None:
        parts = range(PARTITIONS)
        await stage1.assign([(t, p) for t in (topics.events, topics.resources) for p in parts])
        await stage1.drain(wall=end)
        await stage1.tick(later)
        await stage2.assign([(topics.partials, p) for p in parts])
        await stage2.drain(wall=later)
        await alerting.assign([(topics.metrics, p) for p in parts])
        await alerting.drain(wall=later)

    asyncio.run(go())
    stored = (topics.events, topics.resources, topics.metrics, topics.scores, topics.alerts)
    return SimulatedRun(start=start, end=end, topics={
        name: [(r.partition, r.offset, r.key, r.value, tuple(r.headers))
               for r in memory.records(name)] for name in stored})


def store_run(client: Any, run: SimulatedRun) -> None:
    """Write the run into the store as the sink does: its decoding, its rows, roll-ups."""
    settings = _settings()
    sink = ClickHouseSink(settings, client)
    batch = Batch()
    records: dict[TopicPartition, list[ConsumerRecord]] = {}
    for topic, items in run.topics.items():
        for partition, offset, key, value, headers in items:
            size = len(value or b"")
            records.setdefault(TopicPartition(topic, partition), []).append(ConsumerRecord(
                topic, partition, offset, 0, 0, key, value, None, 0, size, list(headers)))
    sink.collect(records, batch)
    sink.insert(batch)
    assert not batch.refused and not batch.letters, (batch.refused[:3], batch.letters[:3])
    refreshed = refresh_rollups(client, settings.clickhouse.database)
    assert refreshed.done and refreshed.minutes >= MINUTES, refreshed
