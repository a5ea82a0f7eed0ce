"""Per-partition stage state, made durable on a compacted changelog topic.

A stage keeps its state in memory as ``key -> bytes`` per changelog partition and hands
the runtime its *changes* (``None`` deletes a key), in the order they must land. The
runtime writes them to the changelog and waits for the broker's acknowledgement before
anything that depends on them leaves (see :mod:`pipeline.runtime.consumer` for the
checkpoint order). On assignment, a partition's state is the changelog partition read
from its start, the last value of each key winning; ``load_many`` reads every partition
of one assignment at once (one consumer, not one per partition).

:class:`MemoryChangelog` is the same contract in memory: what the in-memory runner
keeps across a simulated crash.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.runtime.kafka import client_options
from pipeline.runtime.stage import Changes

__all__ = ["Changelog", "Changes", "KafkaChangelog", "MemoryChangelog", "apply_changes"]



def apply_changes(into: dict[str, bytes], changes: Changes) -> None:
    """Fold ``changes`` into a state dict, as a reader of the changelog would.

    >>> state = {"a": b"1"}
    >>> apply_changes(state, {"b": b"2", "a": None})
    >>> state
    {'b': b'2'}
    """
    for key, value in changes.items():
        if value is None:
            into.pop(key, None)
        else:
            into[key] = value


class Changelog(Protocol):
    async def load(self, partition: int) -> dict[str, bytes]:
        """The state of ``partition``: every key's last value."""

    async def load_many(self, partitions: Iterable[int]) -> dict[int, dict[str, bytes]]:
        """The state of each of ``partitions`` (an empty one for a partition never written)."""

    async def write(self, partition: int, changes: Changes) -> None:
        """Make ``changes`` durable, in order; returns once acknowledged."""


class MemoryChangelog:
    """A changelog in memory (tests and the in-memory runner): survives a stage's crash."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[str, bytes]] = defaultdict(dict)
        self.records = 0  # records written, as a Kafka changelog would count them

    async def load(self, partition: int) -> dict[str, bytes]:
        return (await self.load_many([partition]))[partition]

    async def load_many(self, partitions: Iterable[int]) -> dict[int, dict[str, bytes]]:
        return {p: dict(self.partitions.get(p, {})) for p in partitions}

    async def write(self, partition: int, changes: Changes) -> None:
        apply_changes(self.partitions[partition], changes)
        self.records += len(changes)


class KafkaChangelog:
    """A compacted topic with one partition per state partition, written with acks=all."""

    def __init__(self, kafka: KafkaSettings, topic: str, producer: Any) -> None:
        self.kafka = kafka
        self.topic = topic
        self.producer = producer  # a started AIOKafkaProducer (acks="all")

    async def load(self, partition: int) -> dict[str, bytes]:
        return (await self.load_many([partition]))[partition]

    async def load_many(self, partitions: Iterable[int]) -> dict[int, dict[str, bytes]]:
        """Every partition read from its start up to its end offset at the start of the
        load, with one consumer (a join assigning several partitions pays one start)."""
        states: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
        if not states:
            return states
        tps = [TopicPartition(self.topic, p) for p in sorted(states)]
        consumer = AIOKafkaConsumer(**client_options(self.kafka), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=16 << 20)
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            left = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            while left:
                batch = await consumer.getmany(*left, timeout_ms=1000)
                for tp, records in batch.items():
                    state, end = states[tp.partition], ends[tp]
                    for record in records:
                        if record.offset >= end:  # written since: not this load's
                            break
                        if record.value is None:
                            state.pop(record.key.decode(), None)
                        else:
                            state[record.key.decode()] = record.value
                left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
        finally:
            await consumer.stop()
        return states

    async def write(self, partition: int, changes: Changes) -> None:
        """The changes in record batches built here, in order (one batch in flight per
        partition keeps them so): a ``send`` per record costs ~20 µs of Python each, and a
        window of alert state can be thousands of records."""
        producer, topic = self.producer, self.topic
        pending = []
        batch = producer.create_batch()
        for key, value in changes.items():
            raw = key.encode()
            if batch.append(key=raw, value=value, timestamp=None) is None:  # full
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=raw, value=value, timestamp=None)  # a first one always fits
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
