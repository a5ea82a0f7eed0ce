"""Per-partition stage state, made durable on a compacted changelog topic.

A stage keeps its state in memory as ``key -> bytes`` per changelog partition and hands
the runtime its *changes* (``None`` deletes a key), in the order they must land. The
runtime writes them to the changelog and waits for the broker's acknowledgement before
anything that depends on them leaves (see :mod:`pipeline.runtime.consumer` for the
checkpoint order). On assignment, a partition's state is the changelog partition read
from its start, the last value of each key winning.

:class:`MemoryChangelog` is the same contract in memory: what the in-memory runner
keeps across a simulated crash.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
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

    async def write(self, partition: int, changes: Changes) -> None:
        """Make ``changes`` durable, in order; returns once acknowledged."""


class MemoryChangelog:
    """A changelog in memory (tests and the in-memory runner): survives a stage's crash."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[str, bytes]] = defaultdict(dict)
        self.records = 0  # records written, as a Kafka changelog would count them

    async def load(self, partition: int) -> dict[str, bytes]:
        return dict(self.partitions[partition])

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
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(**client_options(self.kafka), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=16 << 20)
        await consumer.start()
        state: dict[str, bytes] = {}
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, ()):
                    apply_changes(state, {record.key.decode(): record.value})
        finally:
            await consumer.stop()
        return state

    async def write(self, partition: int, changes: Changes) -> None:
        futures = [await self.producer.send(self.topic, value, key=key.encode(),
                                            partition=partition)
                   for key, value in changes.items()]
        await asyncio.gather(*futures)
