"""Follow a compacted topic into memory: silences, pinned baselines, the alert tail.

A compacted topic is durable state keyed by id. A follower reads it from the start
(every partition, no consumer group), hands each record to ``apply``, says when it has
caught up with the end it saw at start, and keeps following while asked. A record that
``apply`` cannot take is logged and skipped: one bad record never stops the state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import TopicAuthorizationFailedError

from pipeline.config import KafkaSettings
from pipeline.runtime.kafka import access_error, client_options, start_client
from pipeline.sources.codec import describe

__all__ = ["follow"]

log = logging.getLogger(__name__)


async def follow(
    kafka: KafkaSettings,
    topic: str,
    apply: Callable[[Any], None],
    *,
    keep_following: bool = True,
    loaded: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    missing_ok: bool = False,
    from_beginning: bool = True,
    assign_timeout: float = 60.0,
) -> None:
    """Read ``topic`` from its start (or only what arrives from now on, without
    ``from_beginning``), ``apply(record)`` for each record.

    ``loaded`` is set once every record that existed at start was applied; without
    ``keep_following`` the call then returns. ``missing_ok``: a topic that does not
    exist yet counts as empty and is waited for (checked first, since subscribing to a
    missing topic may auto-create it without compaction).
    """
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await start_client(consumer, kafka)  # a refused login or certificate: KafkaAccessError
    try:
        while missing_ok and topic not in await consumer.topics():
            if loaded is not None:
                loaded.set()
            if not keep_following or (stop is not None and stop.is_set()):
                return
            await asyncio.sleep(2.0)
        consumer.subscribe([topic])
        deadline = asyncio.get_running_loop().time() + assign_timeout
        while not consumer.assignment():  # no group: every partition, once metadata lands
            # a topic the ACLs hide has no partitions either: say so now, not in a minute
            if topic in getattr(consumer._client.cluster, "unauthorized_topics", ()):
                refused = access_error(kafka, TopicAuthorizationFailedError(topic))
                assert refused is not None  # access_error words every refused topic
                raise refused
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topic {topic!r} has no partitions (does it exist?)")
            await consumer.getmany(timeout_ms=0)
            await asyncio.sleep(0.2)
        parts = sorted(consumer.assignment())
        if from_beginning:
            await consumer.seek_to_beginning(*parts)
        else:
            await consumer.seek_to_end(*parts)
        end = await consumer.end_offsets(parts)
        caught_up = False
        while True:
            if not caught_up:
                positions = [await consumer.position(tp) for tp in parts]
                caught_up = all(p >= end[tp] for p, tp in zip(positions, parts, strict=True))
                if caught_up:
                    if loaded is not None:
                        loaded.set()
                    if not keep_following:
                        return
            if stop is not None and stop.is_set():
                return
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    if stop is not None and stop.is_set():
                        return
                    try:
                        apply(record)
                    except Exception as exc:  # this record only
                        log.error("%s[%d]@%d skipped: %s", topic, record.partition,
                                  record.offset, describe(exc))
    finally:
        await consumer.stop()
