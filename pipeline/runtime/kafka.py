"""Thin aiokafka helpers: connection options from settings, topic creation, headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import InvalidPartitionsError, TopicAlreadyExistsError

from pipeline.config import KafkaSettings, Settings

__all__ = ["client_options", "ensure_topics", "headers_dict", "wait_for_broker"]

log = logging.getLogger(__name__)


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for bootstrap, TLS and SASL, from configuration only."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
        if kafka.ssl_certfile:
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=kafka.sasl_mechanism or "PLAIN",
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    return options


async def wait_for_broker(kafka: KafkaSettings, timeout: float = 60.0) -> None:
    """Return once the cluster answers a metadata request; raise TimeoutError otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "Unable connect" on every retry is noise here
    try:
        await _wait(kafka, deadline)
    finally:
        quiet.setLevel(level)


async def _wait(kafka: KafkaSettings, deadline: float) -> None:
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return
        except Exception as exc:  # broker not up yet: any error means "try again"
            last = exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise TimeoutError(f"Kafka at {kafka.bootstrap_servers} did not answer: {last}")


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Idempotent.

    By default: every topic of the settings, with the OTLP span topics when that source
    is enabled (``otlp.partitions`` partitions; the Collector may also create them)."""
    topics = settings.topics
    otlp = set(settings.otlp.topics) if settings.otlp.enabled else set()
    wanted = list(names) if names is not None else topics.all() + sorted(otlp)
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            compacted = {"cleanup.policy": "compact"}
            state = set(topics.compacted())  # silences, baselines: one partition, compacted
            new = [
                NewTopic(t, 1 if t in state else settings.otlp.partitions if t in otlp
                         else topics.partitions, topics.replication_factor,
                         topic_configs=compacted if t in state else None)
                for t in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # raced another creator: fine
                await admin.create_topics(new)
            log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()


async def ensure_changelog(settings: Settings, name: str, sources: Sequence[str] = (),
                           at_least: int = 0) -> int:
    """Make a stage's state topic exist, compacted, with a partition for every partition
    of its ``sources`` (partition ``p`` holds the state of source partition ``p``) and at
    least ``at_least``; return its partition count.

    A source topic may be wider than ``topics.partitions`` (created by a team, or grown
    later): the state topic is created as wide, or grown, so no source partition is left
    without a place for its state. Growing is safe: state goes to an explicit partition,
    never by key hash."""
    from aiokafka.admin import NewPartitions

    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        widths = await _partition_counts(admin, [name, *sources])
        needed = max(settings.topics.partitions, at_least,
                     *(widths.get(s, 0) for s in sources))
        have = widths.get(name, 0)
        if not have:
            topic = NewTopic(name, needed, settings.topics.replication_factor,
                             topic_configs={"cleanup.policy": "compact"})
            with contextlib.suppress(TopicAlreadyExistsError):  # raced another worker: fine
                await admin.create_topics([topic])
                log.info("created state topic %s (%d partitions)", name, needed)
        elif have < needed:
            with contextlib.suppress(InvalidPartitionsError):  # another worker grew it first
                await admin.create_partitions({name: NewPartitions(needed)})
            log.info("state topic %s grown from %d to %d partitions, as wide as its source",
                     name, have, needed)
        return max(have, needed)
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    """Partitions per existing topic of ``names`` (missing topics are left out)."""
    existing = set(await admin.list_topics())
    asked = [n for n in dict.fromkeys(names) if n in existing]
    if not asked:
        return {}
    described = await admin.describe_topics(asked)
    return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}


async def send_one(kafka: KafkaSettings, topic: str, key: bytes, value: bytes) -> None:
    """Write one record and wait until every in-sync replica has it (acks=all): for the
    durable-state topics a command writes once (silences, baselines)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_options(kafka), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def headers_dict(headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None) -> dict:
    """Kafka headers as a dict (last value wins), whatever shape the client gave us."""
    return dict(headers or ())
