"""Privacy against real parts: the DLQ's retention on a real broker, and a real worker that
stores an event without its dropped keys in ClickHouse while its DLQ keeps raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.config import PrivacySettings, Settings, load_settings
from pipeline.runtime.kafka import client_options, ensure_topics
from pipeline.runtime.topic_config import DAY_MS, apply_dlq_retention, dlq_topic_configs
from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration


def _settings(bootstrap: str, topic: str, days: int) -> Settings:
    base = load_settings(environ={"INFERWATCH_KAFKA": bootstrap})
    return msgspec.structs.replace(
        base, topics=msgspec.structs.replace(base.topics, dlq=topic),
        privacy=PrivacySettings(dlq_retention_days=days))


async def _configs(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    (resource,) = response.resources
    return {entry[0]: entry[1] for entry in resource[4]}


def test_dlq_retention_is_set_at_creation_and_brought_to_the_setting(
        kafka_bootstrap: str) -> None:
    topic = f"iwtest.{uuid.uuid4().hex[:8]}.dlq"

    async def go() -> None:
        three = _settings(kafka_bootstrap, topic, 3)
        admin = AIOKafkaAdminClient(**client_options(three.kafka))
        await admin.start()
        try:
            assert not await apply_dlq_retention(admin, three)  # no topic yet: left alone
            # created as ensure_topics creates it, plus a setting of the team's own
            await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
                **dlq_topic_configs(three), "max.message.bytes": "2000000"})])
            deadline = time.monotonic() + 30  # creation completes asynchronously
            while topic not in await admin.list_topics() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert (await _configs(admin, topic))["retention.ms"] == str(3 * DAY_MS)
            assert not await apply_dlq_retention(admin, three)  # already right: no change

            one = _settings(kafka_bootstrap, topic, 1)
            assert await apply_dlq_retention(admin, one)
            configs = await _configs(admin, topic)
            assert configs["retention.ms"] == str(DAY_MS)
            assert configs["max.message.bytes"] == "2000000"  # AlterConfigs kept the others
            assert not await apply_dlq_retention(admin, one)
        finally:
            await admin.delete_topics([topic])
            await admin.close()

    asyncio.run(go())


def test_ensure_topics_creates_the_dlq_with_its_retention_and_keeps_it_there(
        kafka_bootstrap: str) -> None:
    topic = f"iwtest.{uuid.uuid4().hex[:8]}.dlq"

    async def retention(settings: Settings) -> str:
        admin = AIOKafkaAdminClient(**client_options(settings.kafka))
        await admin.start()
        try:
            deadline = time.monotonic() + 30
            while topic not in await admin.list_topics() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return (await _configs(admin, topic))["retention.ms"]
        finally:
            await admin.close()

    two, one = _settings(kafka_bootstrap, topic, 2), _settings(kafka_bootstrap, topic, 1)
    try:
        asyncio.run(ensure_topics(two, [topic]))
        assert asyncio.run(retention(two)) == str(2 * DAY_MS)
        asyncio.run(ensure_topics(one, [topic]))  # a restart with a new setting
        assert asyncio.run(retention(one)) == str(DAY_MS)
    finally:
        async def drop() -> None:
            admin = AIOKafkaAdminClient(**client_options(two.kafka))
            await admin.start()
            try:
                with contextlib.suppress(Exception):
                    await admin.delete_topics([topic])
            finally:
                await admin.close()
        asyncio.run(drop())


def test_a_worker_stores_events_without_dropped_keys_and_the_dlq_keeps_raw_bytes(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path,
                    INFERWATCH_PRIVACY__DROP_ATTRIBUTES="ip",
                    INFERWATCH_PRIVACY__REDACT_ATTRIBUTES="email",
                    INFERWATCH_PRIVACY__DROP_FEATURES="zip")
    try:
        now = time.time()
        private = {"ip": "10.1.2.3", "email": "alice@example.com", "app_feature": "chat"}
        good = {"event_id": "kept", "timestamp": now, "model": "m", "latency_ms": 5.0,
                "attributes": private, "features": {"zip": "10115", "tokens": 812.0}}
        bad = {**good, "event_id": "dead", "latency_ms": -1.0}
        headers = [("content-type", b"application/json")]
        pipe.produce([(None, json.dumps([good, bad]).encode(), headers)])
        worker = pipe.start_worker()
        pipe.wait_sink_ready(worker)
        assert pipe.wait_count(1, timeout=60) == 1, pipe.log(worker)
        (row,) = pipe.query("SELECT event_id, attributes, features_num, features_cat "
                            "FROM events FINAL")
        assert row == {"event_id": "kept", "features_num": {"tokens": 812.0},
                       "features_cat": {},
                       "attributes": {"email": "[redacted]", "app_feature": "chat"}}
        (letter,) = pipe.consume_all(pipe.settings.topics.dlq, 1, timeout=30)
        assert b"alice@example.com" in letter.value  # raw, by design: hence its retention
    finally:
        pipe.close()

