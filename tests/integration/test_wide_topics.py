"""Source topics with more partitions than ``topics.partitions``: a team may create
``inferwatch.events`` itself with 8 partitions while the settings say 6 (or add
partitions later). Each stage's state topic must then have a partition for every source
partition, or the state of partitions 6 and 7 could be neither read nor written."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

WIDE = 8  # partitions of the events topic the "team" created; settings say 6


async def _create(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _grow(bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import NewPartitions

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({name: NewPartitions(partitions)})
    finally:
        await admin.close()


async def _send_to_every_partition(bootstrap: str, topic: str, per_partition: int,
                                   partitions: range = range(WIDE)) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        start = time.time() - 40
        for p in partitions:
            for i in range(per_partition):
                value = json.dumps({"event_id": f"w{p}-{i}", "timestamp": start + i * 0.2,
                                    "model": "wide", "latency_ms": 5.0 + p}).encode()
                await producer.send(topic, value, partition=p)
        await producer.flush()
    finally:
        await producer.stop()
    return len(partitions) * per_partition


def test_a_source_topic_wider_than_the_settings_is_processed_whole(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    events = f"iwtest.wide.{uuid.uuid4().hex[:8]}.events"
    asyncio.run(_create(kafka_bootstrap, events, WIDE))
    pipe = Pipeline(kafka_bootstrap, tmp_path, INFERWATCH_TOPICS__EVENTS=events,
                    INFERWATCH_TOPICS__PARTITIONS="6",
                    INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS="3")  # windows close sooner
    try:
        sent = asyncio.run(_send_to_every_partition(kafka_bootstrap, events, 50))
        worker = pipe.start_worker()
        pipe.wait_processor_ready(worker)
        assert pipe.wait_count(sent, timeout=90) == sent, pipe.log(worker)
        sql = "SELECT toInt64(sum(requests)) FROM window_metrics FINAL WHERE model = 'wide'"
        assert pipe.wait_count(sent, timeout=90, sql=sql) == sent, pipe.log(worker)

        # the team grows the topic later: the next start grows the state topics too
        assert pipe.stop(worker) == 0
        asyncio.run(_grow(kafka_bootstrap, events, WIDE + 2))
        sent += asyncio.run(_send_to_every_partition(kafka_bootstrap, events, 50,
                                                     range(WIDE, WIDE + 2)))
        worker = pipe.start_worker()
        pipe.wait_processor_ready(worker)
        assert pipe.wait_count(sent, timeout=90) == sent, pipe.log(worker)
        assert pipe.wait_count(sent, timeout=90, sql=sql) == sent, pipe.log(worker)
        whole_log = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
        assert "grown from 8 to 10 partitions" in whole_log
    finally:
        pipe.close()
