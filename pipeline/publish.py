"""Publish a stream of records to Kafka at a pace: the I/O half of ``inferwatch simulate``.

Unlike the producer SDK (which drops rather than block a request path), this waits
for Kafka: a simulation or replay must deliver every record it generated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from pipeline.codec import JSON, encode_events
from pipeline.config import Settings
from pipeline.kafka import client_options
from schemas.event import InferenceEvent, ResourceSample

__all__ = ["PublishStats", "publish"]


@dataclass
class PublishStats:
    events: int = 0
    resources: int = 0
    messages: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.events / self.seconds if self.seconds else 0.0
        return (f"sent {self.events} events in {self.messages} messages "
                f"and {self.resources} resource samples in {self.seconds:.1f}s ({rate:,.0f} ev/s)")


async def publish(
    settings: Settings,
    records: Iterable[tuple[float, InferenceEvent | ResourceSample]],
    *,
    speed: float = 1.0,
    batch_size: int = 500,
    content_type: str = JSON,
    progress: Callable[[PublishStats], None] | None = None,
    progress_every: float = 5.0,
) -> PublishStats:
    """Send ``(offset, record)`` pairs; ``speed`` 1 = real time, 10 = 10x faster, 0 = flat out.

    Events go to the events topic in messages of up to ``batch_size`` events (one event
    per message when 1); resource samples go to the resources topic.
    """
    topics = settings.topics
    headers = [("content-type", content_type.encode())]
    producer = AIOKafkaProducer(
        **client_options(settings.kafka), acks="all", linger_ms=5,
        max_request_size=8 << 20, compression_type="gzip" if batch_size > 1 else None,
    )
    await producer.start()
    stats = PublishStats()
    started = time.monotonic()
    last_report = started
    pending: list[asyncio.Future] = []
    events: list[InferenceEvent] = []
    samples: list[ResourceSample] = []

    async def flush() -> None:
        nonlocal pending
        if events:
            if batch_size == 1:
                for e in events:
                    pending.append(await producer.send(
                        topics.events, encode_events(e, content_type),
                        key=e.event_id.encode(), headers=headers))
                stats.messages += len(events)
            else:
                pending.append(await producer.send(
                    topics.events, encode_events(events, content_type), headers=headers))
                stats.messages += 1
            stats.events += len(events)
            events.clear()
        if samples:
            pending.append(await producer.send(
                topics.resources, encode_events(samples, content_type), headers=headers))
            stats.resources += len(samples)
            samples.clear()
        if len(pending) > 1000:
            await asyncio.gather(*pending)
            pending = []

    try:
        for offset, record in records:
            if speed > 0:
                wait = started + offset / speed - time.monotonic()
                if wait > 0.05:
                    await flush()
                    await asyncio.sleep(wait)
            if isinstance(record, ResourceSample):
                samples.append(record)
            else:
                events.append(record)
                if len(events) >= batch_size:
                    await flush()
            now = time.monotonic()
            if progress is not None and now - last_report >= progress_every:
                stats.seconds = now - started
                progress(stats)
                last_report = now
        await flush()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    stats.seconds = time.monotonic() - started
    return stats
