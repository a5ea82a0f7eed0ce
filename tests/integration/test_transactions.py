"""Events written by transactional producers (Kafka Streams, Flink, Java clients with
exactly-once on): an aborted transaction's records must count nowhere, and a committed
one's exactly once. The consumers read committed data only (isolation_level
read_committed), as every exactly-once reader of Kafka must."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration


def _event(event_id: str, model: str) -> bytes:
    return json.dumps({"event_id": event_id, "timestamp": time.time() - 20, "model": model,
                       "latency_ms": 7.0}).encode()


async def _transactions(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                transactional_id=f"iwtest-tx-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        async with producer.transaction():  # committed
            for i in range(20):
                await producer.send(topic, _event(f"kept-{i}", "committed"), partition=i % 3)
        await producer.begin_transaction()  # aborted: written to the log, then abandoned
        for i in range(30):
            await producer.send(topic, _event(f"aborted-{i}", "aborted"), partition=i % 3)
        await producer.abort_transaction()
        async with producer.transaction():
            for i in range(10):
                await producer.send(topic, _event(f"late-{i}", "committed"), partition=i % 3)
    finally:
        await producer.stop()


def test_aborted_transactions_count_nowhere(kafka_bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path,
                    INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS="3")  # windows close sooner
    try:
        asyncio.run(_transactions(kafka_bootstrap, pipe.settings.topics.events))
        worker = pipe.start_worker()
        pipe.wait_processor_ready(worker)
        assert pipe.wait_count(30, timeout=90) == 30, pipe.log(worker)
        windows = "SELECT toInt64(sum(requests)) FROM window_metrics FINAL"
        assert pipe.wait_count(30, timeout=90, sql=windows) == 30, pipe.log(worker)
        time.sleep(2.0)  # anything aborted that was read would show up now
        assert pipe.query("SELECT model, count() AS n FROM events FINAL GROUP BY model") == [
            {"model": "committed", "n": 30}]
        assert pipe.owner_scalar(windows) == 30
    finally:
        pipe.close()
