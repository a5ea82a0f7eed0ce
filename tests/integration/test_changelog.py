"""A stage's changelog on a real broker: every partition of an assignment read back with
one consumer, each up to its end offset, the last value of each key winning."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.config import KafkaSettings, Settings, TopicSettings
from pipeline.runtime.kafka import client_options, ensure_changelog
from pipeline.runtime.state import KafkaChangelog, MemoryChangelog

pytestmark = pytest.mark.integration

PARTITIONS = 6


def test_load_many_reads_every_partition_as_load_does(kafka_bootstrap: str) -> None:
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
                        topics=TopicSettings(partitions=PARTITIONS))
    topic = f"test-changelog-{uuid.uuid4().hex[:8]}-state"

    async def go():
        await ensure_changelog(settings, topic)
        producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all",
                                    max_batch_size=1 << 12)  # writes span many batches
        await producer.start()
        try:
            kafka, memory = KafkaChangelog(settings.kafka, topic, producer), MemoryChangelog()
            for p in range(PARTITIONS - 1):  # the last partition is never written
                for i in range(50 * (p + 1)):
                    changes = {f"k{i % 7}": f"{p}:{i}".encode(), f"gone{i % 3}": None}
                    if i % 10 == 0:  # written now and then, deleted at the end
                        changes[f"gone{i % 3}"] = b"soon deleted"
                    if i % 25 == 0:  # larger than a batch
                        changes[f"big{i % 2}"] = bytes([i % 256]) * 20_000
                    await kafka.write(p, changes)
                    await memory.write(p, changes)
            started = time.monotonic()
            many = await kafka.load_many(range(PARTITIONS))
            many_s = time.monotonic() - started
            started = time.monotonic()
            one_by_one = {p: await kafka.load(p) for p in range(PARTITIONS)}
            single_s = time.monotonic() - started
            expected = await memory.load_many(range(PARTITIONS))
            return many, one_by_one, expected, many_s, single_s
        finally:
            await producer.stop()

    many, one_by_one, expected, many_s, single_s = asyncio.run(go())
    assert many == one_by_one == expected
    assert many[PARTITIONS - 1] == {} and many[0]["k0"] == b"0:49"
    assert set(many[2]) == {f"k{i}" for i in range(7)} | {"big0", "big1"}  # deletes applied
    assert many[2]["big1"] == bytes([125]) * 20_000  # the last of each key, in order
    print(f"load_many {many_s:.2f}s, load one by one {single_s:.2f}s")
