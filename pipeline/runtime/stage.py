"""What a stage is to the runtime: four verbs in, one :class:`Step` out. No I/O.

The runtime (a Kafka consumer in production, :class:`~pipeline.runtime.memory.MemoryRunner`
in tests) calls ``on_assign`` / ``on_revoke`` as partitions move, ``on_batch`` with the
records of one partition, and ``on_tick`` on a timer. Every call returns a ``Step``; the
runtime makes it happen in the one checkpoint order:

1. dead letters acknowledged by the broker,
2. state changes acknowledged on the changelog,
3. outputs acknowledged, then ``done()`` (the stage may forget its outbox),
4. source offsets committed.

A crash between any two leaves a state that re-does the rest: outputs are re-sent
from the outbox (consumers merge them once by identity) and records after the state's
offset are read again (the state skips those it already holds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.sources.dlq import DeadLetter

__all__ = ["Changes", "Output", "Record", "Stage", "Stateless", "Step"]

Changes = dict[str, bytes | None]  # key -> new value (None: deleted), in write order


@dataclass(frozen=True, slots=True)
class Record:
    """A source record, as the runtime hands it over (aiokafka's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None  # None: by key
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class Step:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    changes: dict[int, Changes] = field(default_factory=dict)  # changelog partition -> changes
    outputs: list[Output] = field(default_factory=list)
    done: list[Callable[[], None]] = field(default_factory=list)  # after outputs are acked

    def extend(self, other: Step) -> None:
        self.dead_letters += other.dead_letters
        for partition, changes in other.changes.items():
            into = self.changes.setdefault(partition, {})
            for key, value in changes.items():  # a key written again moves to the end
                into.pop(key, None)
                into[key] = value
        self.outputs += other.outputs
        self.done += other.done

    def __bool__(self) -> bool:
        return bool(self.dead_letters or self.changes or self.outputs or self.done)


class Stage(Protocol):
    topics: tuple[str, ...]  # the source topics this stage reads

    def on_assign(self, topic: str, partition: int, state: dict[str, bytes]) -> int | None:
        """Take over a partition with its changelog state; the offset to resume from
        (None: the group's committed offset)."""

    def on_revoke(self, topic: str, partition: int) -> Step | None:
        """Forget a partition; a step of last state changes (no outputs) to make durable
        before the next owner reads the changelog, or None."""

    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        """Records of one partition, in offset order."""

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        """The wall clock moved; ``caught_up(topic, partition)``: nothing unread there."""


class Stateless:
    """The verbs of a stage with no changelog state (a re-keying or mapping stage): the
    group's committed offsets are all it resumes from. Subclasses set ``topics`` and
    ``counts`` (anything with ``summary()``) and write ``on_batch``."""

    stateless = True
    topics: tuple[str, ...] = ()
    counts: Any

    def on_assign(self, topic: str, partition: int, state: dict[str, bytes]) -> int | None:
        return None  # nothing to restore: resume from the group's committed offset

    def on_revoke(self, topic: str, partition: int) -> Step | None:
        return None

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        return Step()

    def summary(self) -> str:
        return self.counts.summary()
