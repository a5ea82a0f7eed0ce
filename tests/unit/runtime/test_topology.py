"""Stage 1 on the in-memory runner: crashes at every point of the checkpoint order,
partitions moving between workers, replays, offset gaps, late data and bad records,
each giving the same windows as one uninterrupted worker. No broker; milliseconds.

The windows are read the way production reads them: stage 2 merges the partials topic
(each partial once by its identity) and finalizes every window all sources passed.
"""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest

from pipeline.config import MetricsSettings, Settings, TopicSettings
from pipeline.runtime.memory import Crash, MemoryRunner, MemoryTopics
from pipeline.runtime.state import MemoryChangelog
from pipeline.windows.partial_stage import PartialStage
from pipeline.windows.partials import decode_partials
from pipeline.windows.stage2 import Stage2Partition
from schemas.metrics import WindowMetrics

PARTITIONS = 3
WALL = 1_700_000_000.0
T0 = WALL - 3600  # event times: an hour before the (fixed) wall clock
SETTINGS = Settings(
    topics=TopicSettings(partitions=PARTITIONS),
    metrics=MetricsSettings(window_seconds=10, lateness_seconds=2, idle_timeout_seconds=5,
                            correction_horizon_windows=3, series_labels=["model"],
                            feature_usage_attributes=[]),
)
EVENTS, PARTIALS, DLQ = SETTINGS.topics.events, SETTINGS.topics.partials, SETTINGS.topics.dlq
ALL = [(EVENTS, p) for p in range(PARTITIONS)] + [
    (SETTINGS.topics.resources, p) for p in range(PARTITIONS)]
LATER = WALL + 10_000  # a tick this late closes every window by the idle advance


class World:
    """Shared topics, changelog and group offsets; one runner per worker."""

    def __init__(self) -> None:
        self.topics = MemoryTopics(PARTITIONS)
        self.changelog = MemoryChangelog()
        self.committed: dict = {}

    def runner(self) -> MemoryRunner:
        return MemoryRunner(lambda: PartialStage(SETTINGS), self.topics, self.changelog,
                            self.committed, DLQ)

    def windows(self) -> dict[tuple[str, float], tuple]:
        """Stage 2 over the partials topic: the final (newest) result of every window."""
        out: dict[tuple[str, float], tuple] = {}
        for partition, records in self.topics.log[PARTIALS].items():
            merged = Stage2Partition(partition, SETTINGS.metrics, PARTITIONS)
            for record in records:  # in partition order, watermarks among the partials
                message = decode_partials(record.value)
                if message.kind == "events":
                    merged.apply(message)
                    for result in merged.close():
                        assert isinstance(result, WindowMetrics)
                        out[result.series_key, result.window_start] = (
                            result.requests, result.errors, result.late_events,
                            round(result.latency_p99_ms or 0, 6), result.version)
        return out


def event(i: int, ts: float, model: str = "m", latency: float = 100.0, **extra) -> bytes:
    return msgspec.json.encode({"event_id": f"e{i}", "timestamp": ts, "model": model,
                                "latency_ms": latency, **extra})


def produce(world: World, seed: int, n: int = 300, bad_every: int = 37) -> None:
    """``n`` messages over ~60 s of event time, slightly out of order, a few bad ones."""
    rng = random.Random(seed)
    for i in range(n):
        ts = T0 + i * 0.2 + rng.uniform(-1.5, 0.5)
        value = (b"{not json" if i % bad_every == 5
                 else event(i, ts, rng.choice("ab"), rng.lognormvariate(5, 1),
                            status=rng.choice(["ok"] * 9 + ["error"])))
        world.topics.append(EVENTS, value, key=f"k{i}".encode())


def run(coro):
    return asyncio.run(coro)


async def finish(*runners: MemoryRunner) -> None:
    for runner in runners:
        await runner.drain(wall=WALL)
    for runner in runners:
        await runner.tick(LATER)


def reference(seed: int, **kwargs) -> dict:
    world = World()
    produce(world, seed, **kwargs)
    runner = world.runner()

    async def go():
        await runner.assign(ALL)
        await finish(runner)
    run(go())
    return world.windows()


def dead_lettered(world: World) -> set[tuple[bytes, bytes]]:
    """(source partition, offset) of every dead letter, duplicates folded."""
    return {(dict(r.headers)["inferwatch-source-partition"],
             dict(r.headers)["inferwatch-source-offset"]) for r in world.topics.records(DLQ)}


def test_the_reference_run_has_late_data_errors_and_dead_letters():
    windows = reference(1)
    assert len(windows) >= 10
    assert sum(w[0] for w in windows.values()) == 300 - len(range(5, 300, 37))
    assert any(w[1] for w in windows.values())  # errors counted
    world = World()
    produce(world, 1)
    runner = world.runner()
    run(runner.assign(ALL))
    run(finish(runner))
    assert len(dead_lettered(world)) == len(range(5, 300, 37))
    partials = [decode_partials(r.value) for r in world.topics.records(PARTIALS)]
    identities = [(p.series_key, p.window_start, p.src_partition, p.seq)
                  for p in partials if not hasattr(p, "watermark")]
    assert len(identities) == len(set(identities))  # without a crash, each partial once


@pytest.mark.parametrize("phase", ["dead_letters", "changes", "outputs", "commit"])
@pytest.mark.parametrize("after_batches", [1, 3, 5])
def test_a_crash_at_any_point_of_the_checkpoint_then_a_restart_gives_the_same_windows(
        phase, after_batches):
    world = World()
    produce(world, 2)
    runner = world.runner()

    async def go():
        await runner.assign(ALL)
        for _ in range(after_batches):
            await runner.poll(max_records=11, wall=WALL)
        runner.crash_at = phase
        with pytest.raises(Crash):
            for _ in range(50):
                await runner.poll(max_records=11, wall=WALL)
                await runner.tick(WALL)
        await runner.restart()
        await finish(runner)
    run(go())
    assert world.windows() == reference(2)
    assert len(dead_lettered(world)) == len(range(5, 300, 37))  # none lost


def test_a_partition_moving_mid_window_gives_the_same_windows():
    world = World()
    produce(world, 3)
    a, b = world.runner(), world.runner()

    async def go():
        await a.assign(ALL)
        for _ in range(4):
            await a.poll(max_records=11, wall=WALL)
        moved = [(EVENTS, 1), (EVENTS, 2)]
        await a.revoke(moved)
        await b.assign(moved)
        await finish(a, b)
    run(go())
    assert world.windows() == reference(3)


def test_two_workers_give_the_same_windows_as_one():
    world = World()
    produce(world, 4)
    a, b = world.runner(), world.runner()

    async def go():
        await a.assign(ALL[:2] + ALL[3:5])
        await b.assign(ALL[2:3] + ALL[5:])
        for _ in range(30):
            await a.poll(max_records=7, wall=WALL)
            await b.poll(max_records=13, wall=WALL)
        await finish(a, b)
    run(go())
    assert world.windows() == reference(4)


def test_records_read_again_after_a_seek_back_are_not_counted_twice():
    world = World()
    produce(world, 5)
    runner = world.runner()

    async def go():
        await runner.assign(ALL)
        await runner.drain(wall=WALL)
        for tp in ALL:  # a rebalance that resumes from an old committed offset
            runner.positions[tp] = 0
        await finish(runner)
    run(go())
    assert world.windows() == reference(5)


def test_offset_gaps_are_not_holes():
    world = World()
    produce(world, 6, n=100)
    for p in range(PARTITIONS):
        world.topics.skip(EVENTS, p, 5)  # a transaction marker, a compacted range
    for i in range(100, 200):
        world.topics.append(EVENTS, event(i, T0 + 60 + i * 0.05), key=f"k{i}".encode())
    runner = world.runner()

    async def go():
        await runner.assign(ALL)
        await finish(runner)
    run(go())
    assert sum(w[0] for w in world.windows().values()) == 200 - len(range(5, 100, 37))
    assert all(runner.caught_up(*tp) for tp in ALL)


def test_late_events_correct_a_closed_window_with_a_higher_version():
    """Events only on partition 0 (the others empty: they must not hold windows open);
    the window closes by the idle advance, then a late event corrects it as version 2."""
    world = World()
    start = WALL - 30
    for i in range(20):
        world.topics.append(EVENTS, event(i, start + i * 0.5), partition=0)
    runner = world.runner()

    async def go():
        await runner.assign(ALL)
        await runner.drain(wall=WALL)
        await runner.tick(WALL + 10)  # idle past the window's end: it closes
        first = dict(world.windows())
        world.topics.append(EVENTS, event(99, start + 1.0, latency=5000.0), partition=0)
        await runner.drain(wall=WALL + 10)
        await runner.tick(WALL + 40)
        return first
    first = run(go())
    window = ("model=m", start)
    assert first[window][0] == 20 and first[window][4] == 1
    assert world.windows()[window][:3] == (21, 0, 1)  # the late one counted, as late
    assert world.windows()[window][4] == 2  # a corrected result with a higher version


def test_checkpoints_write_changed_state_only():
    world = World()
    produce(world, 7, n=50)
    runner = world.runner()

    async def go():
        await runner.assign(ALL)
        await runner.drain(wall=WALL)
        await runner.tick(LATER)  # closes every window: partials out, slots deleted
        await runner.tick(LATER)  # forgets the sent outbox
        before = world.changelog.records
        await runner.tick(LATER)  # nothing changed
        await runner.tick(LATER)
        return before
    before = run(go())
    assert world.changelog.records == before
