"""``log.format = json``: every line a worker writes, its own and its libraries' (aiokafka,
the stages, the sink), is one JSON object a log store can index, and a line written while
a stage handles a batch carries the stage, topic, partition and offset."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration


def test_a_json_worker_writes_only_json_lines(kafka_bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path)
    try:
        now = time.time()
        good = [(None, json.dumps({"event_id": f"j-{i}", "timestamp": now - 5, "model": "m",
                                   "latency_ms": 3.0}).encode(), []) for i in range(20)]
        pipe.produce([*good, (None, b"{broken", [])])
        worker = pipe.start_worker(INFERWATCH_LOG__FORMAT="json",
                                   INFERWATCH_ALERTS__RULES="deploy/rules/example.rules.yml")
        pipe.wait_sink_ready(worker)
        pipe.wait_processor_ready(worker)
        assert pipe.wait_count(20, timeout=60) == 20, pipe.log(worker)
        # junk on the metrics topic: the alert stage logs a warning while handling it
        offset = asyncio.run(_send(kafka_bootstrap, pipe.settings.topics.metrics, b"junk"))
        deadline = time.monotonic() + 30
        while "is not a WindowMetrics" not in pipe.log(worker) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert pipe.stop(worker) == 0
        lines = Path(worker.log_path).read_text().splitlines()  # type: ignore[attr-defined]
        records = [json.loads(line) for line in lines]  # any non-JSON line fails here
        assert len(records) >= 3
        assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
        messages = " | ".join(r["message"] for r in records)
        assert "processing ready" in messages and "sink consuming" in messages
        [junk] = [r for r in records if "is not a WindowMetrics" in r["message"]]
        assert (junk["stage"], junk["topic"], junk["partition"]) == (
            "alerts", pipe.settings.topics.metrics, 0)
        assert 0 <= junk["offset"] <= offset  # the first offset of the batch handled
    finally:
        pipe.close()


async def _send(bootstrap: str, topic: str, value: bytes) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        return (await producer.send_and_wait(topic, value, partition=0)).offset
    finally:
        await producer.stop()
