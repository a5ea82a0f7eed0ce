"""The producer SDK against a broker that is down, then comes back (real KRaft broker)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.sdk.producer import Producer
from tests.conftest import local_kafka
from tests.integration.harness import event_ids_on

pytestmark = pytest.mark.integration

PORT = 19292  # a broker of this test's own, so stopping it disturbs no other test


@pytest.mark.skipif(shutil.which("java") is None,
                    reason="needs Java 17+ to run a broker of its own")
def test_producer_neither_raises_nor_blocks_while_down_and_recovers(tmp_path: Path) -> None:
    kafka = local_kafka(tmp_path / "kafka-home", PORT)
    settings = load_settings(environ={"INFERWATCH_KAFKA": kafka.bootstrap,
                                      "INFERWATCH_HOME": str(tmp_path)})
    producer = Producer(settings, topic="sdk.outage", buffer_size=1000, service="checkout")
    try:
        # Broker down: every call returns at once, nothing raises, nothing is sent.
        slowest = 0.0
        for i in range(50):
            started = time.perf_counter()
            with producer.track("gpt-x", request_id=f"down-{i}") as span:
                span.set(input_tokens=10, output_tokens=5)
            slowest = max(slowest, time.perf_counter() - started)
        with pytest.raises(ZeroDivisionError), producer.track("gpt-x", request_id="boom"):
            1 / 0  # noqa: B018 - the caller's own error still reaches the caller
        assert slowest < 0.05, f"an emit took {slowest:.3f}s while Kafka was down"
        assert producer.flush(timeout=1.0) is False
        stats = producer.stats
        assert stats.sent == 0 and stats.connected is False and stats.buffered == 51

        kafka.up(timeout=120)  # the broker returns
        for i in range(50):
            with producer.track("gpt-x", request_id=f"up-{i}"):
                pass
        assert producer.flush(timeout=60.0), producer.stats
        assert producer.stats.sent == 101 and producer.stats.dropped == 0

        events = event_ids_on(kafka.bootstrap, "sdk.outage", want=101)
        assert len(set(events)) == 101
    finally:
        producer.close(timeout=5)
        kafka.down()
