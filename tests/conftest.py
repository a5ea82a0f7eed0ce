"""Shared fixtures. Integration tests get a real broker in this order of preference:
``INFERWATCH_KAFKA`` if set; a testcontainers Kafka where a Docker engine answers;
else the project's own local KRaft broker (Java 17+, jars from Maven Central, cached
under .inferwatch/). ClickHouse is embedded chDB in a per-test directory unless
``INFERWATCH_CLICKHOUSE`` names a server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_KAFKA_PORT = int(os.environ.get("INFERWATCH_TEST_KAFKA_PORT", "19092"))


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker for this test session."""
    if os.environ.get("INFERWATCH_KAFKA"):
        yield os.environ["INFERWATCH_KAFKA"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.0.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    # one home per port: two sessions on other ports must not share log dirs or pid file
    local = local_kafka(ROOT / ".inferwatch" / f"test-kafka-{TEST_KAFKA_PORT}", TEST_KAFKA_PORT)
    local.up(timeout=120)
    try:
        yield local.bootstrap
    finally:
        local.down()


def local_kafka(home: Path, port: int):  # -> LocalKafka
    """A LocalKafka for tests, sharing the jar cache of the main home."""
    from pipeline.dev.kafka import LocalKafka

    return LocalKafka.private(home, port, say=lambda m: None)
