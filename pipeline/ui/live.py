"""Live updates: the metrics, scores and alerts topics fanned out to browsers (SSE).

The dashboard process reads the three topics itself — no consumer group, from the
latest offsets, so it neither commits nor competes with the workers — and hands every
record, decoded, to each connected browser's queue. A browser never polls the store for
news: a window that closes reaches the open page as one server-sent event.

A slow browser cannot hold the others up: its queue is bounded, and when it is full the
oldest update is dropped (the page re-reads the store when it notices the gap).

>>> hub = Hub(queue_size=2)
>>> q = hub.subscribe()
>>> for i in range(3):
...     hub.publish({"kind": "metrics", "n": i})
>>> [q.get_nowait()["n"] for _ in range(q.qsize())], hub.dropped
([1, 2], 1)
>>> sse_frame({"kind": "metrics"}, event="metrics")
b'event: metrics\\ndata: {"kind":"metrics"}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

import msgspec

from pipeline.config import Settings

__all__ = ["Hub", "consume", "decode_record", "sse_frame"]

log = logging.getLogger(__name__)
_JSON = msgspec.json.Encoder()
REFUSED_RETRY_SECONDS = 60.0  # Kafka refused the dashboard: ask again this often


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value


def sse_frame(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: optional ``event:`` line, JSON on one ``data:`` line."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + _JSON.encode(finite(data)) + b"\n\n"


class Hub:
    """Fan-out of live records to subscribers, each with a bounded queue."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._queues: set[asyncio.Queue] = set()
        self.dropped = 0
        self.published = 0

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._queues.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, item: dict[str, Any]) -> None:
        """Give ``item`` to every subscriber; a full queue loses its oldest item."""
        self.published += 1
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                    self.dropped += 1
            queue.put_nowait(item)


_METRICS_KINDS = {b"WindowMetrics": "metrics", b"ResourceMetrics": "resources"}


def decode_record(topic_kind: str, value: bytes | None,
                  headers: dict[str, bytes]) -> dict[str, Any] | None:
    """A topic record as the browser gets it: ``{"kind", "series_key", "data"}``.

    ``kind`` is ``metrics`` (WindowMetrics), ``resources`` (ResourceMetrics, named by the
    contract header), ``scores`` or ``alert``; ``None`` for a record that is not JSON
    (it is skipped: the workers validated what they published) or another contract of the
    metrics topic (``QualityWindow``, ``VersionSummary``), which no live chart draws.
    """
    if value is None:
        return None
    try:
        data = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None
    if not isinstance(data, dict):
        return None
    kind = topic_kind
    if topic_kind == "metrics":
        contract = headers.get("inferwatch-contract", b"WindowMetrics")
        if contract not in _METRICS_KINDS:
            return None  # quality windows and version sums share the topic: not series charts
        kind = _METRICS_KINDS[contract]
    return {"kind": kind, "series_key": data.get("series_key", ""), "data": data}


async def consume(settings: Settings, hub: Hub, ready: asyncio.Event | None = None) -> None:
    """Read the metrics, scores and alerts topics from their ends into ``hub`` until
    cancelled; a broker outage is retried with backoff, logged once per outage."""
    from aiokafka import AIOKafkaConsumer

    from pipeline.runtime.kafka import client_options, diagnose

    kinds = {settings.topics.metrics: "metrics", settings.topics.scores: "scores",
             settings.topics.alerts: "alert"}
    backoff, refused = 1.0, ""
    while True:
        consumer = AIOKafkaConsumer(*kinds, **client_options(settings.kafka), group_id=None,
                                    auto_offset_reset="latest", enable_auto_commit=False)
        try:
            await consumer.start()
            # no group: wait for the partitions, then start at their ends
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
            await consumer.seek_to_end(*consumer.assignment())
            for tp in consumer.assignment():
                await consumer.position(tp)
            if ready is not None:
                ready.set()
            if refused:
                log.warning("live updates on again: Kafka accepts the dashboard")
            backoff, refused = 1.0, ""
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
                for tp, records in batch.items():
                    for record in records:
                        headers = {k: v for k, v in (record.headers or ())}
                        item = decode_record(kinds[tp.topic], record.value, headers)
                        if item is not None:
                            hub.publish(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker gone: retry, the page keeps its data
            access = await diagnose(settings.kafka, exc)
            if access is None:
                log.warning("live updates paused (%s); retrying in %.0f s", exc, backoff)
            elif refused != str(access):  # credentials, certificate, ACLs: once, clearly
                refused = str(access)
                log.error("live updates off: Kafka refused the dashboard: %s; asking again "
                          "every %.0f s (the pages still answer from the store)", access,
                          REFUSED_RETRY_SECONDS)
            await asyncio.sleep(backoff if access is None else REFUSED_RETRY_SECONDS)
            backoff = min(backoff * 2, 30.0)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
