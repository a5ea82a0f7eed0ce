"""Stage 2 (merge, score, emit) on the in-memory runner after stage 1: a crash at any
point of the checkpoint order, or partials partitions moving between workers, gives the
same final windows and scores as one uninterrupted run. No broker; milliseconds.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from pipeline.runtime.memory import Crash, MemoryRunner
from pipeline.scoring.stage import MergeStage
from schemas.metrics import WindowMetrics
from schemas.scores import WindowScores
from tests.unit.runtime.test_topology import (
    ALL,
    DLQ,
    LATER,
    PARTIALS,
    PARTITIONS,
    SETTINGS,
    WALL,
    World,
    produce,
)

METRICS, SCORES = SETTINGS.topics.metrics, SETTINGS.topics.scores
PARTIAL_PARTS = [(PARTIALS, p) for p in range(PARTITIONS)]


def merger(world: World) -> MemoryRunner:
    return MemoryRunner(lambda: MergeStage(SETTINGS), world.topics, world.changelog2,
                        world.committed, DLQ)


def results(world: World) -> tuple[dict, set]:
    """The newest WindowMetrics per (series, window), and the scored windows."""
    newest: dict[tuple[str, float], WindowMetrics] = {}
    for record in world.topics.records(METRICS):
        m = msgspec.json.decode(record.value, type=WindowMetrics)
        key = (m.series_key, m.window_start)
        if key not in newest or m.version > newest[key].version:
            newest[key] = m
    scored = {(s.series_key, s.window_start) for s in (
        msgspec.json.decode(r.value, type=WindowScores)
        for r in world.topics.records(SCORES))}
    summary = {k: (m.requests, m.errors, m.version, round(m.latency_p99_ms or 0, 6))
               for k, m in newest.items()}
    return summary, scored


def staged_world(seed: int) -> tuple[World, MemoryRunner]:
    """Stage 1 run to the end: the partials topic complete."""
    from pipeline.runtime.state import MemoryChangelog

    world = World()
    world.changelog2 = MemoryChangelog()  # stage 2 has its own state topic
    produce(world, seed)
    first = world.runner()

    async def go():
        await first.assign(ALL)
        await first.drain(wall=WALL)
        await first.tick(LATER)
    asyncio.run(go())
    return world, first


def reference(seed: int) -> tuple[dict, set]:
    world, _ = staged_world(seed)
    second = merger(world)

    async def go():
        await second.assign(PARTIAL_PARTS)
        await second.drain(wall=LATER)
    asyncio.run(go())
    return results(world)


def test_every_window_is_emitted_and_scored_once():
    summary, scored = reference(11)
    assert len(summary) >= 10 and all(v[2] == 1 for v in summary.values())
    assert scored == set(summary)


@pytest.mark.parametrize("phase", ["dead_letters", "changes", "outputs", "commit"])
@pytest.mark.parametrize("after", [1, 2])
def test_a_crash_in_stage_two_then_a_restart_loses_and_doubles_nothing(phase, after):
    world, _ = staged_world(12)
    for p in range(PARTITIONS):  # a stranger on every partials partition: a dead letter
        world.topics.append(PARTIALS, b"\x00stranger", key=b"s", partition=p)
    second = merger(world)

    async def go():
        await second.assign(PARTIAL_PARTS)
        for _ in range(after):
            await second.poll(max_records=5, wall=LATER)
        second.crash_at = phase
        with pytest.raises(Crash):
            for _ in range(200):
                await second.poll(max_records=5, wall=LATER)
                await second.tick(LATER)
        await second.restart()
        await second.drain(wall=LATER)
        await second.tick(LATER)
    asyncio.run(go())
    assert results(world) == reference(12)


def test_partials_partitions_moving_between_workers_give_the_same_windows():
    world, _ = staged_world(13)
    a, b = merger(world), merger(world)

    async def go():
        await a.assign(PARTIAL_PARTS)
        for _ in range(3):
            await a.poll(max_records=4, wall=LATER)
        moved = PARTIAL_PARTS[1:]
        await a.revoke(moved)  # monitors checkpointed on the way out
        await b.assign(moved)
        await a.drain(wall=LATER)
        await b.drain(wall=LATER)
    asyncio.run(go())
    assert results(world) == reference(13)


def test_a_stranger_on_the_partials_topic_is_dead_lettered_and_skipped():
    world, _ = staged_world(14)
    world.topics.append(PARTIALS, b"\x00garbage", key=b"x", partition=0)
    second = merger(world)

    async def go():
        await second.assign(PARTIAL_PARTS)
        await second.drain(wall=LATER)
    asyncio.run(go())
    letters = [r for r in world.topics.records(DLQ)
               if dict(r.headers).get("inferwatch-source-topic") == PARTIALS.encode()]
    assert len(letters) == 1 and letters[0].value == b"\x00garbage"
    assert results(world) == reference(14)
