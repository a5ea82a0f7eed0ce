"""Glue between faust and the pure stages: per-partition state, checkpoints, emission.

State lives in two changelog-backed faust tables whose keys name their changelog
partition (``"<partition>|<slot>"``), so a partition's windows are written to, and
recovered from, the changelog partition of the same number: they survive a crash and
move with the partition on rebalance. In memory, each owned partition has a live
``Stage1Partition`` / ``Stage2Partition``, rebuilt from the table the first time the
partition is seen after an assignment and dropped when it is revoked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import faust

from pipeline.aggregate.guard import CardinalityGuard
from pipeline.aggregate.kinds import EVENTS, RESOURCES, Kind, event_kind, resource_kind
from pipeline.aggregate.partials import Watermark, decode_partials, encode_partial
from pipeline.aggregate.stage1 import Stage1Partition
from pipeline.aggregate.stage2 import Stage2Partition
from pipeline.config import Settings

__all__ = ["Aggregator", "PartitionKeyedTable"]

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
    """Deletes first, then upserts in order (the stage's meta record comes last)."""
    prefix = f"{state[1]}|{state[0]}|"
    for name in deletes:
        key = prefix + name
        if key in table:
            del table[key]
    for name, value in upserts.items():
        table[prefix + name] = value


Send = Callable[..., Awaitable[Any]]


class Aggregator:
    """Runs stage 1 on event batches and stage 2 on partials batches for one worker."""

    def __init__(self, settings: Settings, stage1_table: faust.Table,
                 stage2_table: faust.Table, sources: int, sinks: int) -> None:
        self.settings = settings
        self.metrics = settings.metrics
        self.stage1_table = stage1_table
        self.stage2_table = stage2_table
        self.sources = sources  # partitions of the events topic
        self.sinks = sinks  # partitions of the partials topic
        self.guard = CardinalityGuard(settings.metrics.max_series_per_worker,
                                      tuple(settings.metrics.series_labels))
        self.host_guard = CardinalityGuard(settings.metrics.max_series_per_worker,
                                           ("host", "server", "model"))
        self.kinds: dict[str, Kind] = {EVENTS: event_kind(self.metrics),
                                       RESOURCES: resource_kind(self.metrics)}
        self.stage1: dict[StateKey, Stage1Partition] = {}
        self.stage2: dict[StateKey, Stage2Partition] = {}
        self._sent_watermarks: dict[StateKey, float] = {}
        # (topic, partition) this worker owns now; a batch fetched before a rebalance may
        # still hold messages of a partition that moved, and must not touch its state
        self.owned: set[tuple[str, int]] = set()
        self.lock = asyncio.Lock()
        self.windows_emitted = 0

    def revoke(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget in-memory state of revoked partitions (the table keeps it durable)."""
        topics = self.settings.topics
        for topic, partition in partitions:
            self.owned.discard((topic, partition))
            if topic in (topics.events, topics.resources):
                kind = EVENTS if topic == topics.events else RESOURCES
                self.stage1.pop((kind, partition), None)
                self._sent_watermarks.pop((kind, partition), None)
            elif topic == topics.partials:
                for kind in self.kinds:
                    self.stage2.pop((kind, partition), None)

    async def adopt(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Load the state of every assigned source partition once recovery is done.

        A partition whose events were all processed (and committed) before it moved
        gets no new events, yet its watermark must keep advancing (idle timeout) or
        stage 2 would never close the windows it holds.
        """
        topics = self.settings.topics
        async with self.lock:
            for topic, partition in partitions:
                self.owned.add((topic, partition))
                if topic == topics.events:
                    self._stage1((EVENTS, partition))
                elif topic == topics.resources:
                    self._stage1((RESOURCES, partition))

    def _stage1(self, key: StateKey) -> Stage1Partition:
        state = self.stage1.get(key)
        if state is None:
            guard = self.guard if key[0] == EVENTS else self.host_guard
            state = Stage1Partition.restore(key[1], self.metrics, guard,
                                            _items(self.stage1_table, key), self.kinds[key[0]])
            self.stage1[key] = state
        return state

    def _stage2(self, key: StateKey) -> Stage2Partition:
        state = self.stage2.get(key)
        if state is None:
            state = Stage2Partition.restore(key[1], self.metrics, self.sources,
                                            _items(self.stage2_table, key), self.kinds[key[0]])
            self.stage2[key] = state
        return state

    # ------------------------------------------------------------------ stage 1
    async def add_records(
        self, kind: str, batches: dict[int, list[tuple[int, Sequence[Any]]]],
        send_partial: Send, send_watermark: Send,
    ) -> None:
        """Stage 1 for one batch: absorb, close, send partials and watermarks, checkpoint."""
        topic = self.settings.topics.events if kind == EVENTS else self.settings.topics.resources
        async with self.lock:
            wall = time.time()
            mine = [p for p in batches if (topic, p) in self.owned]
            for partition in mine:
                self._stage1((kind, partition)).add(batches[partition], wall)
            await self._flush_stage1([(kind, p) for p in mine], wall, send_partial,
                                     send_watermark)

    async def tick(self, send_partial: Send, send_watermark: Send,
                   caught_up: Callable[[str, int], bool]) -> None:
        """Advance idle partitions by the wall clock (called by a timer).

        ``caught_up(kind, partition)`` says whether the partition has no unread messages;
        only then may its watermark advance with the wall clock.
        """
        async with self.lock:
            wall = time.time()
            self.guard.expire(older_than=wall - 10 * self.metrics.window_seconds
                              - self.metrics.idle_timeout_seconds)
            await self._flush_stage1(list(self.stage1), wall, send_partial, send_watermark,
                                     caught_up)

    async def _flush_stage1(self, keys: Iterable[StateKey], wall: float,
                            send_partial: Send, send_watermark: Send,
                            caught_up: Callable[[str, int], bool] | None = None) -> None:
        futures = []
        for key in keys:
            state = self._stage1(key)
            idle_ok = caught_up is not None and caught_up(*key)  # never while events flow
            for partial in state.close(wall, idle_ok):
                futures.append(await send_partial(partial.series_key, encode_partial(partial)))
            mark = state.watermark(wall, idle_ok)
            if mark > self._sent_watermarks.get(key, float("-inf")):
                payload = encode_partial(
                    Watermark(kind=key[0], src_partition=key[1], watermark=mark))
                for target in range(self.sinks):
                    futures.append(await send_watermark(target, payload))
                self._sent_watermarks[key] = mark
            upserts, deletes = state.checkpoint()
            _write(self.stage1_table, key, upserts, deletes)
        if futures:
            await asyncio.gather(*futures)

    # ------------------------------------------------------------------ stage 2
    async def add_partials(self, batches: dict[int, list[bytes]], send_metrics: Send) -> int:
        """Stage 2 for one batch: merge, close windows, send WindowMetrics, checkpoint."""
        async with self.lock:
            futures = []
            touched: set[StateKey] = set()
            partials = self.settings.topics.partials
            for partition, values in batches.items():
                if (partials, partition) not in self.owned:
                    continue  # moved to another worker mid-batch: it re-reads these
                for raw in values:
                    message = decode_partials(raw)
                    key = (message.kind, partition)
                    self._stage2(key).apply(message)
                    touched.add(key)
            for key in sorted(touched):
                state = self._stage2(key)
                for result in state.close():
                    futures.append(await send_metrics(key[0], result))
                upserts, deletes = state.checkpoint()
                _write(self.stage2_table, key, upserts, deletes)
            if futures:
                await asyncio.gather(*futures)
            self.windows_emitted += len(futures)
            return len(futures)

    def summary(self) -> str:
        late = sum(sum(s.late.values()) for s in self.stage1.values())
        replayed = sum(s.replayed for s in self.stage1.values())
        too_late = sum(sum(s.too_late.values()) for s in self.stage1.values())
        slots = sum(len(s.slots) for s in self.stage1.values())
        overflow = dict(self.guard.overflow) or "none"
        return (f"open slots {slots}, active series {self.guard.active}, late {late}, "
                f"too late {too_late}, replayed messages skipped {replayed}, "
                f"windows emitted {self.windows_emitted}, cardinality overflow {overflow}")
