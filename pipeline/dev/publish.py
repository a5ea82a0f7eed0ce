"""Publish a stream of records to Kafka at a pace: the I/O half of ``inferwatch simulate``.

Generation and sending are decoupled by a bounded outbox, so a broker outage neither
stops the run nor loses what was generated, the way the producer SDK rides one out:

* Records are encoded into messages and put in the outbox (at most ``buffer_events``
  records); one task sends the outbox's head, removing a message only once Kafka
  acknowledged it. Delivery is at least once (a message whose acknowledgement was lost is
  sent again; consumers deduplicate by ``event_id``).
* Kafka down: the sender logs one warning, retries with capped exponential backoff,
  recreates the aiokafka producer after every failure, and logs once when Kafka is back.
* Outbox full during an outage: a paced run (``speed`` > 0) keeps its pace, like a model
  server with the SDK, and drops the newest records (counted); an unpaced run
  (``speed`` 0) waits for room, so it loses nothing.
* Feedback (:class:`FeedbackEvent`, from :mod:`pipeline.dev.feedback`) goes through the
  same outbox to the feedback topic, sent when its offset (its due time) comes.
* At the end the outbox is drained for up to ``drain_timeout`` seconds. What was not
  acknowledged by then (or when the run is interrupted) is counted in
  :class:`PublishStats` (``unsent_events`` …, with its event-time range), never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from pipeline.config import KafkaSettings, Settings
from pipeline.runtime.kafka import client_options, diagnose
from pipeline.sources.codec import JSON, encode_events
from schemas.event import InferenceEvent, ResourceSample
from schemas.feedback import FeedbackEvent

__all__ = ["PublishStats", "publish"]

log = logging.getLogger(__name__)

_IN_FLIGHT = 500  # messages sent before waiting for their acknowledgements
_BACKOFF_INITIAL = 0.2
_BACKOFF_MAX = 5.0
_CONNECT_TIMEOUT = 10.0
_STOP_TIMEOUT = 2.0
_TRANSIENT = (KafkaError, OSError, TimeoutError)  # anything else is a bug: let it raise


@dataclass
class PublishStats:
    """What a run sent and what it could not. ``events``, ``resources``, ``feedback`` and
    ``messages`` count what Kafka acknowledged; generated = sent + unsent."""

    events: int = 0
    resources: int = 0
    messages: int = 0
    seconds: float = 0.0
    generated_events: int = 0
    generated_resources: int = 0
    unsent_events: int = 0  # dropped (outbox full) or still in the outbox at the end
    unsent_resources: int = 0
    dropped_events: int = 0  # of the unsent: dropped because the outbox was full
    dropped_resources: int = 0
    feedback: int = 0
    generated_feedback: int = 0
    unsent_feedback: int = 0
    dropped_feedback: int = 0
    outages: int = 0  # times Kafka became unreachable during the run
    unsent_first: float | None = None  # event-time range of the unsent events
    unsent_last: float | None = None

    @property
    def complete(self) -> bool:
        """Whether everything generated was acknowledged."""
        return not (self.unsent_events or self.unsent_resources or self.unsent_feedback)

    def line(self) -> str:
        rate = self.events / self.seconds if self.seconds else 0.0
        text = (f"sent {self.events} events in {self.messages} messages "
                f"and {self.resources} resource samples in {self.seconds:.1f}s ({rate:,.0f} ev/s)")
        if self.generated_feedback:
            text += f"; {self.feedback} of {self.generated_feedback} feedback events"
        if self.outages:
            text += f"; Kafka was unreachable {self.outages} time(s) during the run"
        return text

    def unsent_line(self) -> str:
        """What was generated but not sent, or '' when nothing was lost."""
        if self.complete:
            return ""
        left_events = self.unsent_events - self.dropped_events
        left_resources = self.unsent_resources - self.dropped_resources
        text = (f"NOT sent: {self.unsent_events} of {self.generated_events} events and "
                f"{self.unsent_resources} of {self.generated_resources} resource samples "
                f"({self.dropped_events} events and {self.dropped_resources} samples dropped "
                f"while the outbox was full, {left_events} events and {left_resources} samples "
                "still unacknowledged at the end)")
        if self.unsent_first is not None:
            text += (f"; unsent events' timestamps {self.unsent_first:.3f} .. "
                     f"{self.unsent_last:.3f}")
        if self.unsent_feedback:
            text += (f"; {self.unsent_feedback} of {self.generated_feedback} feedback events "
                     f"({self.dropped_feedback} dropped while the outbox was full)")
        return text

    def _unsent(self, message: _Message, dropped: bool) -> None:
        self.unsent_events += message.events
        self.unsent_resources += message.resources
        self.unsent_feedback += message.feedback
        if dropped:
            self.dropped_events += message.events
            self.dropped_resources += message.resources
            self.dropped_feedback += message.feedback
        if message.events:
            first, last = message.span
            self.unsent_first = first if self.unsent_first is None else min(self.unsent_first,
                                                                            first)
            self.unsent_last = last if self.unsent_last is None else max(self.unsent_last, last)


@dataclass(eq=False, slots=True)
class _Message:
    topic: str
    value: bytes
    key: bytes | None
    events: int = 0
    resources: int = 0
    span: tuple[float, float] = (0.0, 0.0)  # event-time range of its events
    feedback: int = 0

    @property
    def records(self) -> int:
        return self.events + self.resources + self.feedback


@dataclass(eq=False)
class _Outbox:
    """Bounded queue of encoded messages plus the task that delivers its head."""

    connect: Callable[[], Any]  # -> a started-on-demand AIOKafkaProducer (or a fake)
    headers: list[tuple[str, bytes]]
    capacity: int
    stats: PublishStats
    bootstrap: str
    kafka: KafkaSettings | None = None  # to tell a refusal (credentials, ACLs) from an outage
    queue: deque[_Message] = field(default_factory=deque)
    size: int = 0  # records in the queue
    closing: bool = False
    stopped: bool = False  # the sender task ended
    down_since: float | None = None
    warned_full: bool = False
    _work: asyncio.Event = field(default_factory=asyncio.Event)
    _room: asyncio.Event = field(default_factory=asyncio.Event)

    async def put(self, message: _Message, wait: bool) -> None:
        """Queue ``message``; when full, wait for room (``wait``) or drop it, counted."""
        while self.queue and self.size + message.records > self.capacity:
            if self.stopped:
                break
            if not wait:
                if not self.warned_full:
                    self.warned_full = True
                    log.warning("outbox full (%d records) while Kafka is unreachable: dropping "
                                "the newest records until it drains", self.capacity)
                self.stats._unsent(message, dropped=True)
                return
            self._room.clear()
            await self._room.wait()
        self.queue.append(message)
        self.size += message.records
        self._work.set()
        await asyncio.sleep(0)  # let the sender run between messages of an unpaced run

    async def run(self) -> None:
        """Send until closed and empty; ride out outages with backoff and reconnects."""
        kafka = None
        failures = 0
        try:
            while True:
                if not self.queue:
                    if self.closing:
                        return
                    self._work.clear()
                    await self._work.wait()
                    continue
                try:
                    if kafka is None:
                        kafka = self.connect()
                        async with asyncio.timeout(_CONNECT_TIMEOUT):
                            await kafka.start()
                    await self._send_head(kafka)
                except _TRANSIENT as exc:
                    access = await diagnose(self.kafka, exc) if self.kafka else None
                    if access is not None:  # Kafka refuses us: waiting cannot help
                        raise access from None
                    failures += 1
                    self._on_failure(exc, failures)
                    if kafka is not None:
                        await _stop(kafka)
                        kafka = None
                    delay = min(_BACKOFF_MAX, _BACKOFF_INITIAL * 2.0 ** min(failures - 1, 30))
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                else:
                    if failures:
                        self._on_recovery(failures)
                        failures = 0
        finally:
            self.stopped = True
            self._room.set()
            if kafka is not None:
                await _stop(kafka)

    async def _send_head(self, kafka: Any) -> None:
        """Send up to ``_IN_FLIGHT`` messages from the head; drop the acknowledged ones."""
        window = [self.queue[i] for i in range(min(_IN_FLIGHT, len(self.queue)))]
        futures: list[asyncio.Future[Any]] = []
        error: BaseException | None = None
        try:
            for message in window:
                futures.append(await kafka.send(message.topic, message.value, key=message.key,
                                                headers=self.headers))
        except _TRANSIENT as exc:
            error = exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        keep: list[_Message] = []
        for i, message in enumerate(window):
            result = results[i] if i < len(results) else error  # never handed to Kafka
            if isinstance(result, MessageSizeTooLargeError | RecordListTooLargeError):
                log.warning("Kafka refused a %d-byte message of %d records as too large (%s); "
                            "counted as unsent", len(message.value), message.records, result)
                self.stats._unsent(message, dropped=False)
            elif isinstance(result, BaseException):
                keep.append(message)
                error = error or result
            else:
                self.stats.events += message.events
                self.stats.resources += message.resources
                self.stats.feedback += message.feedback
                self.stats.messages += 1
        for _ in window:
            self.size -= self.queue.popleft().records
        for message in reversed(keep):
            self.queue.appendleft(message)
            self.size += message.records
        self._room.set()
        if error is not None:
            raise error

    def _on_failure(self, exc: BaseException, failures: int) -> None:
        if failures == 1:
            self.down_since = time.monotonic()
            self.stats.outages += 1
            name, text = type(exc).__name__, str(exc)
            reason = text if text.startswith(name) else f"{name}: {text}"
            log.warning("Kafka at %s unavailable (%s); keeping up to %d records and retrying",
                        self.bootstrap, reason, self.capacity)
        else:
            log.debug("Kafka still unavailable (attempt %d): %s", failures, exc)

    def _on_recovery(self, failures: int) -> None:
        down = time.monotonic() - (self.down_since or time.monotonic())
        self.down_since = None
        self.warned_full = False
        log.warning("Kafka at %s reachable again after %.1f s (%d failed attempts); "
                    "%d events dropped so far", self.bootstrap, down, failures,
                    self.stats.dropped_events)

    def give_up(self) -> None:
        """Count what is still queued as unsent."""
        while self.queue:
            message = self.queue.popleft()
            self.size -= message.records
            self.stats._unsent(message, dropped=False)


async def _stop(kafka: Any) -> None:
    try:
        async with asyncio.timeout(_STOP_TIMEOUT):
            await kafka.stop()
    except Exception as exc:  # an outage: nothing more to do with this producer
        log.debug("stopping the Kafka producer: %s: %s", type(exc).__name__, exc)


async def publish(
    settings: Settings,
    records: Iterable[tuple[float, InferenceEvent | ResourceSample | FeedbackEvent]],
    *,
    speed: float = 1.0,
    batch_size: int = 500,
    content_type: str = JSON,
    progress: Callable[[PublishStats], None] | None = None,
    progress_every: float = 5.0,
    buffer_events: int = 50_000,
    drain_timeout: float | None = 60.0,
    stats: PublishStats | None = None,
    otlp: tuple[str, str] | None = None,
    _connect: Callable[[], Any] | None = None,
) -> PublishStats:
    """Send ``(offset, record)`` pairs; ``speed`` 1 = real time, 10 = 10x faster, 0 = flat out.

    Events go to the events topic in messages of up to ``batch_size`` events (one event
    per message, keyed by ``event_id``, when 1); resource samples go to the resources
    topic, feedback to the feedback topic (batched alike; native, never OTLP). Kafka
    outages are ridden out (see the module docstring); nothing raises for one. ``stats``
    (default: a new one) is filled as the run goes, so a caller still has the counts when
    the run is interrupted. ``otlp`` = (topic, encoding) sends the events
    as OTLP spans there instead, as an OTel Collector would (:mod:`pipeline.dev.otlp_spans`).
    ``_connect`` replaces the aiokafka producer (tests).
    """
    topics = settings.topics
    events_topic = topics.events

    def encode(batch: InferenceEvent | list[InferenceEvent]) -> bytes:
        return encode_events(batch, content_type)

    if otlp is not None:
        from pipeline.dev.otlp_spans import encode_spans

        events_topic, encoding = otlp

        def encode(batch: InferenceEvent | list[InferenceEvent]) -> bytes:
            return encode_spans(batch if isinstance(batch, list) else [batch], encoding)
    stats = stats if stats is not None else PublishStats()
    connect = _connect or (lambda: AIOKafkaProducer(
        **client_options(settings.kafka), acks="all", linger_ms=5, request_timeout_ms=15_000,
        max_request_size=8 << 20, compression_type="gzip" if batch_size > 1 else None,
    ))
    outbox = _Outbox(connect, [("content-type", content_type.encode())], max(1, buffer_events),
                     stats, settings.kafka.bootstrap_servers,
                     kafka=settings.kafka if _connect is None else None)
    sender = asyncio.create_task(outbox.run())
    started = time.monotonic()
    last_report = started
    events: list[InferenceEvent] = []
    samples: list[ResourceSample] = []
    feedback: list[FeedbackEvent] = []
    wait = speed <= 0  # unpaced: wait for room; paced: keep the pace, drop when full

    async def flush() -> None:
        if sender.done():
            sender.result()  # the sender failed on something that is not an outage: raise it
        if events:
            span = (min(e.timestamp for e in events), max(e.timestamp for e in events))
            if batch_size == 1:
                for e in events:
                    await outbox.put(_Message(events_topic, encode(e), e.event_id.encode(),
                                              events=1, span=(e.timestamp, e.timestamp)), wait)
            else:
                await outbox.put(_Message(events_topic, encode(events), None,
                                          events=len(events), span=span), wait)
            events.clear()
        if samples:
            await outbox.put(_Message(topics.resources, encode_events(samples, content_type),
                                      None, resources=len(samples)), wait)
            samples.clear()
        if feedback:
            if batch_size == 1:
                for f in feedback:
                    key = (f.event_id or f.request_id or "").encode()
                    await outbox.put(_Message(topics.feedback, encode_events(f, content_type),
                                              key, feedback=1), wait)
            else:
                await outbox.put(_Message(topics.feedback, encode_events(feedback, content_type),
                                          None, feedback=len(feedback)), wait)
            feedback.clear()

    try:
        for offset, record in records:
            if speed > 0:
                pause = started + offset / speed - time.monotonic()
                if pause > 0.05:
                    await flush()
                    await asyncio.sleep(pause)
            if isinstance(record, ResourceSample):
                samples.append(record)
                stats.generated_resources += 1
            elif isinstance(record, FeedbackEvent):
                feedback.append(record)
                stats.generated_feedback += 1
                if len(feedback) >= batch_size:
                    await flush()
            else:
                events.append(record)
                stats.generated_events += 1
                if len(events) >= batch_size:
                    await flush()
            now = time.monotonic()
            if progress is not None and now - last_report >= progress_every:
                stats.seconds = now - started
                progress(stats)
                last_report = now
        await flush()
        outbox.closing = True
        outbox._work.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sender), drain_timeout)
        if outbox.queue:
            log.warning("gave up waiting for Kafka after %.0f s with %d records unsent",
                        drain_timeout or 0, outbox.size)
    finally:
        if not sender.done():
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        for record in (*events, *samples, *feedback):  # generated, never queued (interrupted)
            if isinstance(record, InferenceEvent):
                message = _Message("", b"", None, events=1, span=(record.timestamp,) * 2)
            elif isinstance(record, FeedbackEvent):
                message = _Message("", b"", None, feedback=1)
            else:
                message = _Message("", b"", None, resources=1)
            stats._unsent(message, dropped=False)
        outbox.give_up()
        stats.seconds = time.monotonic() - started
    return stats
