"""Glue between faust and stage 2: per-partition state, checkpoints, emission.

State lives in a changelog-backed faust table whose keys name their changelog
partition (``"<partition>|<slot>"``), so a partition's windows are written to, and
recovered from, the changelog partition of the same number: they survive a crash and
move with the partition on rebalance. In memory, each owned partials partition has a
live ``Stage2Partition``, rebuilt from the table the first time the partition is seen
after an assignment and dropped when it is revoked. (Stage 1 left faust for the
runtime's own consumer; stage 2 follows it there next, and this module goes.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
import msgspec

from pipeline.config import Settings
from pipeline.runtime.offsets import Admitted, GapGuard
from pipeline.runtime.scoring import Scoring
from pipeline.scoring.monitor import monitor_spec
from pipeline.windows.kinds import EVENTS, RESOURCES, Kind, event_kind, resource_kind
from pipeline.windows.partials import decode_partials
from pipeline.windows.stage2 import META, Stage2Partition
from schemas.metrics import WindowMetrics

__all__ = ["Aggregator", "PartitionKeyedTable", "admit"]

log = logging.getLogger(__name__)


class PartitionKeyedTable(faust.Table):
    """A table whose key names its changelog partition: ``"<partition>|<rest>"``.

    faust picks a changelog partition from the *current event*, which inside a batch
    (``take_events``) may belong to another partition; the key is unambiguous.
    """

    def partition_for_key(self, key: Any) -> int:
        return int(str(key).split("|", 1)[0])


StateKey = tuple[str, int]  # (kind, partition)


def _items(table: faust.Table, state: StateKey) -> list[tuple[str, bytes]]:
    prefix = f"{state[1]}|{state[0]}|"
    return [(k[len(prefix):], v) for k, v in list(table.items()) if str(k).startswith(prefix)]


def _write(table: faust.Table, state: StateKey, upserts: dict[str, bytes],
           deletes: Iterable[str]) -> None:
    """Upserts, then deletes, then the stage's meta record.

    A crash mid-way must not lose what a delete retires: a closed slot's outbox entry
    is written before the slot is deleted, and meta, which vouches for both, goes last.
    """
    prefix = f"{state[1]}|{state[0]}|"
    meta = upserts.get(META)
    for name, value in upserts.items():
        if name != META:
            table[prefix + name] = value
    for name in deletes:
        key = prefix + name
        if key in table:
            del table[key]
    if meta is not None:
        table[prefix + META] = meta


Send = Callable[..., Awaitable[Any]]


def admit(gaps: GapGuard, topic: str, partition: int, done: int,
          offsets: list[int]) -> Admitted:
    """:meth:`GapGuard.admit` for a stage whose state covers ``topic[partition]`` up to
    offset ``done`` (-1: nothing yet), with the gap and the give-up logged."""
    admitted = gaps.admit((topic, partition), done + 1 if done >= 0 else None, offsets,
                          time.monotonic())
    if admitted.seek is not None:
        log.warning("%s[%d]: offset %d never arrived (got %d next): re-reading from it",
                    topic, partition, admitted.seek, offsets[admitted.take])
    if admitted.skipped:
        log.error("%s[%d]: %d offsets missing after repeated re-reads: skipped",
                  topic, partition, admitted.skipped)
    return admitted


class Aggregator:
    """Runs stage 2 on partials batches for one worker (stage 1 runs on the runtime's
    own consumer: pipeline.windows.partial_stage)."""

    def __init__(self, settings: Settings, stage2_table: faust.Table, sources: int,
                 flush: Callable[[], Awaitable[None]],
                 seek: Callable[[str, int, int], Awaitable[None]],
                 scoring: Scoring | None = None) -> None:
        self.settings = settings
        self.seek = seek  # re-read (topic, partition) from an offset
        self.gaps = GapGuard()
        self.scoring = scoring  # drift and anomaly scores of closed windows, when enabled
        self.flush = flush  # makes every table write so far durable (the producer's flush)
        self.metrics = settings.metrics
        self.stage2_table = stage2_table
        self.sources = sources  # partitions of the events topic
        spec = monitor_spec(settings.drift, settings.metrics.relative_accuracy,
                            operational=False)  # those come from the window's sketches
        drift = spec if scoring is not None and spec.monitored() else None
        self.kinds: dict[str, Kind] = {EVENTS: event_kind(self.metrics, drift),
                                       RESOURCES: resource_kind(self.metrics)}
        self.stage2: dict[StateKey, Stage2Partition] = {}
        # (topic, partition) this worker owns now; a batch fetched before a rebalance may
        # still hold messages of a partition that moved, and must not touch its state
        self.owned: set[tuple[str, int]] = set()
        # Set while no rebalance is in progress. A batch fetched before a rebalance waits
        # for it: dropping its messages of a partition that comes straight back would
        # still ack them, and a commit could then skip them for good.
        self.settled = asyncio.Event()
        self.lock = asyncio.Lock()
        self.windows_emitted = 0

    async def revoke(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget in-memory state of revoked partitions, once the batch in flight is done.

        faust does not wait for a batch being processed (``stream_wait_empty`` is off:
        it deadlocks with ``take_events``); holding the lock lets that batch finish its
        sends and checkpoints, and the flush makes them durable before the partition's
        next owner recovers the changelog.
        """
        self.settled.clear()
        async with self.lock:
            self._forget(partitions)
            await self.flush()

    def _forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        topics = self.settings.topics
        for topic, partition in partitions:
            self.owned.discard((topic, partition))
            if topic == topics.partials:
                for kind in self.kinds:
                    self.stage2.pop((kind, partition), None)
                if self.scoring is not None:
                    self.scoring.release(partition)

    async def adopt(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Load the state of every assigned partials partition once recovery is done,
        and resume it where that state ends."""
        topics = self.settings.topics
        async with self.lock:
            for topic, partition in partitions:
                self.owned.add((topic, partition))
                self.gaps.forget((topic, partition))
                if topic == topics.partials:
                    done = min(self._stage2((k, partition)).max_offset for k in self.kinds)
                else:
                    continue
                if done >= 0:  # resume where the durable state ends, whatever was committed
                    await self.seek(topic, partition, done + 1)
            self.settled.set()

    def _stage2(self, key: StateKey) -> Stage2Partition:
        state = self.stage2.get(key)
        if state is None:
            state = Stage2Partition.restore(key[1], self.metrics, self.sources,
                                            _items(self.stage2_table, key), self.kinds[key[0]])
            self.stage2[key] = state
        return state

    def _admit(self, topic: str, partition: int, max_offset: int, offsets: list[int],
               seeks: list[tuple[str, int, int]]) -> int:
        """How many leading messages continue the partition; queue a seek back on a gap."""
        admitted = admit(self.gaps, topic, partition, max_offset, offsets)
        if admitted.seek is not None:
            seeks.append((topic, partition, admitted.seek))
        return admitted.take

    # ------------------------------------------------------------------ stage 2
    async def add_partials(self, batches: dict[int, list[tuple[int, bytes]]], send_metrics: Send,
                           send_scores: Send | None = None,
                           failed: list[tuple[int, int, bytes, Exception]] | None = None) -> int:
        """Stage 2 for one batch: merge, close windows, score them, send WindowMetrics
        (carrying the scores' rule variables) and WindowScores, checkpoint.

        A partials record that cannot be decoded or merged is skipped and appended to
        ``failed`` as (partition, offset, value, why), for the DLQ."""
        await self.settled.wait()
        async with self.lock:
            futures = []
            emitted = 0
            touched: set[StateKey] = set()
            partials = self.settings.topics.partials
            seeks: list[tuple[str, int, int]] = []
            for partition, values in batches.items():
                if (partials, partition) not in self.owned:
                    continue  # moved to another worker mid-batch: it re-reads these
                states = {kind: self._stage2((kind, partition)) for kind in self.kinds}
                done = min(state.max_offset for state in states.values())
                take = self._admit(partials, partition, done,
                                   [offset for offset, _ in values], seeks)
                for offset, raw in values[:take]:
                    try:
                        message = decode_partials(raw)
                        key = (message.kind, partition)
                        self._stage2(key).apply(message)
                    except Exception as exc:  # one record only: the stream goes on
                        if failed is not None:
                            failed.append((partition, offset, raw, exc))
                        continue
                    touched.add(key)
                if take:  # both kinds' states record how far the partition was read
                    for kind, state in states.items():
                        state.seen_through(values[take - 1][0])
                        touched.add((kind, partition))
            for key in sorted(touched):
                state = self._stage2(key)
                for result, profile in state.close_with_profiles():
                    if (self.scoring is not None and key[0] == EVENTS and result.version == 1
                            and isinstance(result, WindowMetrics)):  # scored once per window
                        try:
                            scores = self.scoring.score(key[1], result, profile)
                        except Exception:  # a scoring bug must not cost the metrics
                            log.exception("scoring %s failed; window published unscored",
                                          result.series_key)
                        else:
                            result = msgspec.structs.replace(result,
                                                             scores=scores.variables())
                            if send_scores is not None:
                                futures.append(await send_scores(scores))
                    futures.append(await send_metrics(key[0], result))
                    emitted += 1
                upserts, deletes = state.checkpoint()
                _write(self.stage2_table, key, upserts, deletes)
            if futures:
                await asyncio.gather(*futures)
            for args in seeks:
                await self.seek(*args)
            self.windows_emitted += emitted
            return emitted

    def summary(self) -> str:
        windows = sum(len(s.windows) for s in self.stage2.values())
        duplicates = sum(s.duplicates for s in self.stage2.values())
        expired = sum(s.expired for s in self.stage2.values())
        scores = f", {self.scoring.summary()}" if self.scoring is not None else ""
        return (f"stage 2: open windows {windows}, windows emitted {self.windows_emitted}, "
                f"duplicate partials skipped {duplicates}, expired partials {expired}{scores}")
