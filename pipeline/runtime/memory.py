"""An in-memory runner: drives a stage like the Kafka runtime does, with no broker.

Topics are lists of records per partition; the changelog is a
:class:`~pipeline.runtime.state.MemoryChangelog`; offsets are committed per partition.
Tests feed records, move partitions between runners, and *crash* a runner at any point
of the checkpoint order (``crash_at``) to prove that a restart from the changelog gives
the same outputs. Milliseconds per scenario (like Quix Streams' ``sdf.test()``).
"""

from __future__ import annotations

import bisect
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from pipeline.runtime.checkpoint import checkpoint
from pipeline.runtime.stage import Output, Record, Stage, Step
from pipeline.runtime.state import MemoryChangelog
from pipeline.sources.dlq import DeadLetter

__all__ = ["Crash", "MemoryRunner", "MemoryTopics"]

TP = tuple[str, int]
Phase = Literal["dead_letters", "changes", "outputs", "commit"]


class Crash(Exception):
    """A simulated process death at a point of the checkpoint order."""


class MemoryTopics:
    """Topics in memory: ``log[topic][partition]`` holds records in offset order.

    Offsets count up from 0; :meth:`skip` leaves a gap, as compaction or a transaction
    marker does on a real topic.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.log: dict[str, dict[int, list[Record]]] = defaultdict(lambda: defaultdict(list))
        self._next: dict[TP, int] = defaultdict(int)

    def append(self, topic: str, value: bytes | None, *, key: bytes | None = None,
               partition: int | None = None,
               headers: Sequence[tuple[str, bytes]] = ()) -> Record:
        if partition is None:  # a stable spread by key, like a partitioner
            partition = zlib.crc32(key) % self.partitions if key is not None else 0
        offset = self._next[topic, partition]
        self._next[topic, partition] = offset + 1
        record = Record(topic, partition, offset, key, value, tuple(headers))
        self.log[topic][partition].append(record)
        return record

    def skip(self, topic: str, partition: int, count: int) -> None:
        self._next[topic, partition] += count

    def end(self, topic: str, partition: int) -> int:
        return self._next[topic, partition]

    def read(self, topic: str, partition: int, position: int, limit: int) -> list[Record]:
        records = self.log[topic][partition]
        start = bisect.bisect_left([r.offset for r in records], position)
        return records[start:start + limit]

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition."""
        return [r for p in sorted(self.log[topic]) for r in self.log[topic][p]]


class MemoryRunner:
    """One worker: a stage, its assigned partitions, positions and the shared state."""

    def __init__(self, make_stage: Callable[[], Stage], topics: MemoryTopics,
                 changelog: MemoryChangelog, committed: dict[TP, int], dlq: str) -> None:
        self.make_stage = make_stage
        self.stage = make_stage()
        self.topics = topics
        self.changelog = changelog
        self.committed = committed  # the group's offsets, shared by its runners
        self.dlq = dlq
        self.assigned: list[TP] = []
        self.positions: dict[TP, int] = {}
        self.crash_at: Phase | None = None  # die at this phase of the next checkpoint

    async def assign(self, partitions: Iterable[TP]) -> None:
        partitions = list(partitions)
        states = await self.changelog.load_many({p for _, p in partitions})
        for tp in partitions:
            resume = self.stage.on_assign(tp[0], tp[1], states[tp[1]])
            self.positions[tp] = resume if resume is not None else self.committed.get(tp, 0)
            self.assigned.append(tp)

    async def revoke(self, partitions: Iterable[TP]) -> None:
        step = Step()
        for tp in list(partitions):
            step.extend(self.stage.on_revoke(*tp) or Step())
            self.assigned.remove(tp)
            self.positions.pop(tp, None)
        await self._checkpoint(step, {})

    async def restart(self) -> None:
        """A new process after a crash: fresh stage, same partitions, state from the log."""
        partitions, self.assigned = self.assigned, []
        self.stage = self.make_stage()
        self.crash_at = None
        await self.assign(partitions)

    async def poll(self, max_records: int = 500, wall: float | None = None) -> int:
        """One batch from every assigned partition with unread records; records taken."""
        wall = time.time() if wall is None else wall
        step, taken, ends = Step(), 0, {}
        for tp in self.assigned:
            batch = self.topics.read(tp[0], tp[1], self.positions[tp], max_records)
            if batch:
                step.extend(self.stage.on_batch(tp[0], tp[1], batch, wall))
                taken += len(batch)
                ends[tp] = batch[-1].offset + 1
            else:  # only a gap is left (compaction, markers): the position moves past it
                self.positions[tp] = max(self.positions[tp], self.topics.end(*tp))
        if taken:
            await self._checkpoint(step, ends)
        return taken

    async def drain(self, wall: float | None = None) -> int:
        total = 0
        while (n := await self.poll(wall=wall)):
            total += n
        return total

    async def tick(self, wall: float) -> None:
        step = self.stage.on_tick(wall, self.caught_up)
        await self._checkpoint(step, {})

    def caught_up(self, topic: str, partition: int) -> bool:
        return self.positions.get((topic, partition), 0) >= self.topics.end(topic, partition)

    async def _checkpoint(self, step: Step, ends: dict[TP, int]) -> None:
        async def dead_letters(letters: Sequence[DeadLetter]) -> None:
            self._maybe_crash("dead_letters")
            for d in letters:
                self.topics.append(self.dlq, d.value, key=d.key, headers=d.headers)

        async def send(outputs: Sequence[Output]) -> None:
            self._maybe_crash("outputs")
            for o in outputs:
                self.topics.append(o.topic, o.value, key=o.key, partition=o.partition,
                                   headers=o.headers)

        async def commit() -> None:
            self._maybe_crash("commit")
            for tp, end in ends.items():
                self.positions[tp] = end
                self.committed[tp] = end

        changelog = self.changelog
        if self.crash_at == "changes":
            changelog = _Dying(self)  # type: ignore[assignment]
        await checkpoint(step, dead_letters=dead_letters, changelog=changelog, send=send,
                         commit=commit)

    def _maybe_crash(self, phase: Phase) -> None:
        if self.crash_at == phase:
            raise Crash(phase)


class _Dying:
    """A changelog write that dies half-way: the first change lands, then the process."""

    def __init__(self, runner: MemoryRunner) -> None:
        self.runner = runner

    async def load(self, partition: int) -> dict[str, bytes]:
        return await self.runner.changelog.load(partition)

    async def load_many(self, partitions: Iterable[int]) -> dict[int, dict[str, bytes]]:
        return await self.runner.changelog.load_many(partitions)

    async def write(self, partition: int, changes: dict[str, bytes | None]) -> None:
        first = dict(list(changes.items())[:1])
        await self.runner.changelog.write(partition, first)
        raise Crash("changes")
