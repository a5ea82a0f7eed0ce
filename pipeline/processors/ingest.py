"""The processing role: a faust app that decodes and validates every event message.

Events are taken in batches (``take_events``), so faust's per-message overhead is
paid once per batch of work. Bad input goes to the DLQ with its reason; a batch's
events are acked (and so their offsets become committable) only after its DLQ
records are delivered. Valid events are what stage 1 of the windowed metrics will
aggregate (design.md); the raw copy in ClickHouse is the sink role's job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import faust

from pipeline.codec import decode_events
from pipeline.config import Settings
from pipeline.dlq import dead_letter
from pipeline.kafka import faust_broker_options

__all__ = ["IngestStats", "build_app"]

log = logging.getLogger(__name__)


class IngestStats:
    """Counters of the processing role, logged periodically."""

    def __init__(self) -> None:
        self.messages = 0
        self.events = 0
        self.rejected: Counter[str] = Counter()

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return f"{self.messages} messages, {self.events} valid events, rejected: {reasons}"


def build_app(settings: Settings, stats: IngestStats | None = None) -> faust.App:
    """The faust app with the validation agent, configured from ``settings`` only."""
    stats = stats or IngestStats()
    worker = settings.worker
    app = faust.App(
        worker.app_id,
        **faust_broker_options(settings.kafka),
        web_enabled=False,
        datadir=str(Path(settings.home_path) / "faust"),
        store="memory://",
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_wait_empty=False,
        broker_client_id=settings.kafka.client_id,
    )
    events_topic = app.topic(
        settings.topics.events, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw", allow_empty=True,
    )
    dlq_topic = app.topic(
        settings.topics.dlq, key_serializer="raw", value_serializer="raw",
    )

    async def send_dead_letters(letters: list[Any]) -> None:
        """Deliver every DLQ record, retrying until Kafka takes them: nothing is lost."""
        delay = 0.5
        while True:
            try:
                futures = [
                    await dlq_topic.send(key=d.key, value=d.value, headers=d.headers)
                    for d in letters
                ]
                await asyncio.gather(*futures)
                return
            except Exception as exc:
                log.error("DLQ delivery of %d records failed (retry in %.1fs): %s",
                          len(letters), delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    @app.agent(events_topic, name="validate")
    async def validate(stream: faust.StreamT) -> None:
        limits = settings.limits
        async for batch in stream.take_events(
            worker.process_batch_size, within=worker.process_batch_seconds
        ):
            now = time.time()
            letters = []
            for event in batch:
                message = event.message
                decoded = decode_events(message.value, event.headers or {}, limits, now)
                stats.messages += 1
                stats.events += len(decoded.events)
                for rejection in decoded.rejections:
                    stats.rejected[rejection.reason] += 1
                    letters.append(dead_letter(
                        rejection, key=message.key, headers=event.headers,
                        topic=message.topic, partition=message.partition, offset=message.offset,
                    ))
            if letters:
                await send_dead_letters(letters)

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info("processing: %s", stats.summary())

    return app
