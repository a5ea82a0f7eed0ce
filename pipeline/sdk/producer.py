"""The producer SDK: one ``InferenceEvent`` per inference, to Kafka, off the request path.

Model servers time an inference with ``track()`` (a context manager, sync or async,
or a decorator) or hand over ready events with ``emit()``. Neither ever blocks on the
network nor raises: events go into a bounded in-memory buffer, and one background
thread (its own asyncio loop and aiokafka producer) sends them in batches::

    producer = Producer(service="chat-api", environment="prod", region="eu-west-1")

    with producer.track("gpt-x", request_id=request.id) as span:
        for i, chunk in enumerate(generate(prompt)):
            if i == 0:
                span.first_token()
            ...
        span.set(input_tokens=812, output_tokens=64, cost_usd=0.0021)

    async with producer.track("gpt-x") as span:       # the same, in async code
        ...

    @producer.track("classifier-v3", operation="classify")
    async def classify(text: str) -> str:             # or a plain function, or a generator
        Span.current().set(prediction="spam", confidence=0.93)
        ...

    producer.close(timeout=5)                         # or ``with Producer() as producer:``

Feedback that arrives later (a label from review, a thumbs up, a conversion) goes the
same way, to ``settings.topics.feedback`` as a ``FeedbackEvent`` (docs/feedback.md)::

    producer.feedback(request_id=request.id, satisfaction=1.0, source="thumbs")
    producer.feedback(event_id="e-81", label="spam", source="human_review")
    producer.feedback(request_id=request.id, value=49.90, source="checkout")

Behaviour:

* Batching: up to ``batch_size`` events (or whatever arrived within ``linger`` seconds)
  become one Kafka message whose value is a JSON array (or a MessagePack array), with
  the ``content-type`` header set accordingly and ``key=None`` so batches spread over
  partitions. With ``batch_size=1`` each message is one event keyed by its
  ``event_id``. A message never exceeds ``settings.limits.max_message_bytes``, the
  size the consumers accept. Kafka-level compression is gzip unless told otherwise.
  Feedback shares the buffer, the sender and everything below with events; a message
  holds records of one topic only (consecutive records of a topic are batched).
* Bounded buffer: at most ``buffer_size`` events wait (including the batch in flight).
  When it is full the *newest* event is dropped and counted: the oldest are kept, in
  order. ``emit()`` returns False for a dropped event; ``producer.stats`` counts them.
* Kafka down: the sender retries with capped exponential backoff (and jitter), keeps
  the unsent batch at the head of the buffer, recreates the aiokafka producer after
  any failure, and recovers by itself when the broker is back. One warning per outage,
  not one per attempt (aiokafka's own log records from the sender thread are muted
  during an outage and rate-limited otherwise). Delivery is at least once: a batch whose
  acknowledgement was lost is sent again; consumers deduplicate by ``event_id``.
* Kafka refusing the producer (credentials, an untrusted certificate) is not an outage:
  the sender stops sending at once with one error, ``stats.error`` says why and records
  are dropped and counted. It asks again every ``_REPROBE_SECONDS`` (60 s, quietly), so a
  user or certificate fixed on the broker's side brings it back without a restart. A
  topic the ACLs refuse drops only that topic's records (docs/security.md).
* Identities: ``privacy.pseudonymize`` fields (``user`` by default) leave as a keyed HMAC,
  or not at all without the key (``pipeline.sdk.pseudonym``, docs/privacy.md).
* ``flush(timeout)`` waits for the buffer to drain; ``close(timeout)`` flushes and stops
  the thread. Producers not closed are flushed for up to 2 s at interpreter exit. A
  forked child starts with an empty buffer and its own sender thread.

Nothing listens on port 1, so this event stays buffered and ``close`` says so:

>>> from pipeline.config import KafkaSettings, Settings
>>> producer = Producer(Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")))
>>> with producer.track("gpt-x", request_id="r-1") as span:
...     span.set(input_tokens=12, output_tokens=30)
>>> producer.stats.buffered, producer.stats.dropped
(1, 0)
>>> producer.close(timeout=0.2)
False
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from pipeline.config import Settings, load_settings
from pipeline.sdk.feedback import feedback_event, one_value
from pipeline.sdk.pseudonym import Pseudonyms
from pipeline.sdk.sender import FRAMING, Sender
from pipeline.sdk.sender_log import SenderThread
from pipeline.sdk.span import Span
from pipeline.sdk.wire import JSON, MSGPACK, encode_events
from schemas.event import InferenceEvent
from schemas.feedback import FeedbackEvent

__all__ = ["Producer", "ProducerStats", "Span"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_FIELDS = frozenset(InferenceEvent.__struct_fields__)
_COMPRESSIONS = (None, "gzip", "snappy", "lz4", "zstd")
_DECODERS = {
    JSON: msgspec.json.Decoder(InferenceEvent),
    MSGPACK: msgspec.msgpack.Decoder(InferenceEvent),
}
_FEEDBACK_DECODERS = {
    JSON: msgspec.json.Decoder(FeedbackEvent),
    MSGPACK: msgspec.msgpack.Decoder(FeedbackEvent),
}


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """A snapshot of a producer's counters."""

    buffered: int  # records (events and feedback) waiting, including the batch in flight
    sent: int  # records acknowledged by Kafka
    dropped: int  # records refused: buffer full, producer closed, invalid, unencodable, oversize
    send_errors: int  # failed attempts to connect or to send a batch
    connected: bool  # whether the last connection or send attempt succeeded
    error: str | None = None  # why Kafka refuses this producer (None again once it accepts)


class Producer(Sender):
    """Batches inference events to Kafka from a background thread; never blocks callers.

    ``settings`` default to ``load_settings()``; ``topic`` to ``settings.topics.events``.
    Feedback (``feedback()``) goes to ``settings.topics.feedback``.
    ``service``, ``environment``, ``region`` and ``tenant`` are defaults for tracked
    events. Nothing connects here: the sender thread starts with the first event.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        topic: str | None = None,
        service: str = "",
        environment: str = "",
        region: str = "",
        tenant: str = "",
        batch_size: int = 500,
        linger: float = 0.05,
        buffer_size: int = 10_000,
        content_type: str = JSON,
        compression: str | None = "gzip",
    ) -> None:
        if content_type not in (JSON, MSGPACK):
            raise ValueError(f"content_type must be {JSON!r} or {MSGPACK!r}, not {content_type!r}")
        if compression not in _COMPRESSIONS:
            raise ValueError(f"compression must be one of {_COMPRESSIONS}, not {compression!r}")
        if batch_size < 1 or buffer_size < 1 or linger < 0:
            raise ValueError("batch_size and buffer_size must be >= 1 and linger >= 0")
        self._settings = settings if settings is not None else load_settings()
        # privacy.pseudonymize: the key is read from the environment once, here
        self._pseudonyms = Pseudonyms.from_settings(self._settings.privacy)
        self.topic: str = topic or self._settings.topics.events
        self.feedback_topic: str = self._settings.topics.feedback
        self._defaults = {
            name: value
            for name, value in (
                ("service", service), ("environment", environment),
                ("region", region), ("tenant", tenant),
            )
            if value
        }
        self._batch_size = min(batch_size, self._settings.limits.max_batch_events)
        self._chunk = self._batch_size  # shrinks if Kafka says a message is too large
        self._linger = linger
        self._buffer_size = buffer_size
        self._content_type = content_type
        self._compression = compression
        self._max_bytes = self._settings.limits.max_message_bytes
        self._headers = [("content-type", content_type.encode())]

        self._cond = threading.Condition(threading.Lock())  # guards _buf and the counters
        self._start_lock = threading.Lock()
        self._buf: deque[tuple[str, bytes | None, bytes]] = deque()  # (topic, key, record)
        self._sent = 0
        self._dropped = 0
        self._send_errors = 0
        self._connected = False
        self._closed = False
        self._error: str | None = None  # Kafka refused us (credentials, certificate)
        self._abort = False  # close() gave up: the sender stops without sending the rest
        self._flushing = 0
        self._warned: set[str] = set()

        self._thread: SenderThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None  # something to send, or a batch is full
        self._kick: asyncio.Event | None = None  # flush/close: stop waiting (linger, backoff)
        _LIVE.add(self)

    # the caller's side: cheap, non-blocking, never raises

    def track(self, model: str, *, request_id: str | None = None, **fields: Any) -> Span:
        """A span timing one inference of ``model``: ``with``, ``async with`` or decorator.

        ``fields`` are any ``InferenceEvent`` fields (``operation=``, ``attributes=``, …).
        """
        fields = dict(self._known(fields))
        fields["model"] = model
        if request_id is not None:
            fields["request_id"] = request_id
        return Span(self, fields)

    def emit(self, event: InferenceEvent) -> bool:
        """Buffer one event for sending: True if buffered, False if dropped (and counted)."""
        try:
            if not isinstance(event, InferenceEvent):
                raise TypeError(f"expected an InferenceEvent, got {type(event).__name__}")
            if self._pseudonyms is not None:
                event = self._pseudonyms.event(event)
            data = encode_events(event, self._content_type)
        except Exception as exc:
            return self._reject("unencodable", exc)
        return self._buffer(self.topic, event.event_id, data)

    def feedback(
        self,
        event_id: str | None = None,
        request_id: str | None = None,
        *,
        label: str | float | None = None,
        satisfaction: float | None = None,
        value: float | None = None,
        source: str = "",
        attributes: dict[str, str] | None = None,
        timestamp: float | None = None,
        feedback_id: str | None = None,
    ) -> bool:
        """Buffer one ``FeedbackEvent`` about the inference ``event_id`` or ``request_id``.

        Give exactly one of ``label`` (ground truth, a string or a number),
        ``satisfaction`` (in [0, 1]) or ``value`` (a business value): it sets the
        feedback's ``kind``. Anything else is a programming error (which keywords a call
        site passes) and raises ``ValueError`` here, at the call.

        Everything else behaves like ``emit()``: never blocks, never raises; returns True
        if buffered, False if dropped and counted: buffer full, producer closed, or a
        record the consumers would dead-letter (neither id given, say a missing request
        header, or a value outside the contract's bounds, e.g. ``satisfaction=1.5``).

        ``timestamp`` (when the feedback was given) defaults to now, ``feedback_id`` (its
        dedup key: pass the same one when re-sending) to a random UUID. Unbatched
        (``batch_size=1``), a feedback message is keyed by its event id, else request id.

        >>> from pipeline.config import KafkaSettings, Settings
        >>> producer = Producer(Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")))
        >>> producer.feedback(request_id="r-1", satisfaction=1.0, source="thumbs")
        True
        >>> producer.feedback(request_id="r-1", satisfaction=7.0)  # outside [0, 1]: dropped
        False
        >>> producer.stats.buffered, producer.stats.dropped
        (1, 1)
        >>> producer.close(timeout=0.2)  # nothing listens on port 1
        False
        """
        given = one_value(label=label, satisfaction=satisfaction, value=value)
        try:
            record = feedback_event(event_id, request_id, given, source=source,
                                    attributes=attributes, timestamp=timestamp,
                                    feedback_id=feedback_id)
            if self._pseudonyms is not None:
                record = self._pseudonyms.feedback(record)
            data = encode_events(record, self._content_type)
            _FEEDBACK_DECODERS[self._content_type].decode(data)  # the bounds, as consumers check
        except Exception as exc:
            return self._reject("invalid feedback", exc)
        key = event_id if event_id is not None else request_id
        return self._buffer(self.feedback_topic, key, data)

    def _buffer(self, topic: str, key: str | None, data: bytes) -> bool:
        """Queue one encoded record for ``topic``; ``key`` is used when unbatched."""
        if len(data) + FRAMING > self._max_bytes:
            detail = f"{len(data)} bytes > max_message_bytes {self._max_bytes}"
            return self._reject("oversize", ValueError(detail))
        kafka_key = key.encode() if self._batch_size == 1 and key is not None else None
        with self._cond:
            if self._closed or self._error or len(self._buf) >= self._buffer_size:
                self._dropped += 1
                return False
            self._buf.append((topic, kafka_key, data))
            n = len(self._buf)
        if self._thread is None:
            self._start()
        if n == 1 or n == self._batch_size:
            self._signal(self._wake)
        return True

    @property
    def stats(self) -> ProducerStats:
        with self._cond:
            return ProducerStats(
                buffered=len(self._buf),
                sent=self._sent,
                dropped=self._dropped,
                send_errors=self._send_errors,
                connected=self._connected,
                error=self._error,
            )

    # lifecycle

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every buffered event is acknowledged; False on timeout.

        Blocks the calling thread: from async code use ``await producer.aflush()``.
        """
        with self._cond:
            if not self._buf:
                return not self._error
            self._flushing += 1
        try:
            self._signal(self._wake)
            self._signal(self._kick)
            with self._cond:
                return self._cond.wait_for(lambda: not self._buf, timeout) and not self._error
        finally:
            with self._cond:
                self._flushing -= 1

    def close(self, timeout: float | None = 10.0) -> bool:
        """Refuse new events, flush for up to ``timeout`` seconds, stop the sender thread.

        Returns True if every event was delivered. Idempotent.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._closed = True
            if self._abort:  # closed before, and gave up then: nothing sends any more
                return not self._buf
        self._signal(self._wake)
        delivered = self.flush(timeout)
        thread = self._thread
        if thread is None:
            return delivered
        if not delivered:
            with self._cond:
                left = len(self._buf)
            if left:  # else Kafka refused us and that was logged (stats.error)
                log.warning("producer closed with %d events undelivered", left)
            self._abort = True
            self._signal(self._wake)
            self._signal(self._kick)
            loop, task = self._loop, self._task
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(task.cancel)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        thread.join(None if remaining is None else remaining + self._STOP_TIMEOUT)
        return delivered

    async def aflush(self, timeout: float | None = 10.0) -> bool:
        """``flush()`` for async code: waits in an executor thread, not on the loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    async def aclose(self, timeout: float | None = 10.0) -> bool:
        """``close()`` for async code."""
        return await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<Producer topic={self.topic!r} buffered={s.buffered} sent={s.sent} "
            f"dropped={s.dropped} connected={s.connected}>"
        )

    # helpers shared with Span

    def _known(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` without names InferenceEvent does not have (warned once per name)."""
        unknown = fields.keys() - _FIELDS
        if not unknown:
            return fields
        for name in sorted(unknown):
            self._log_once(f"field:{name}", logging.WARNING,
                           "ignoring unknown InferenceEvent field %r", name)
        return {k: v for k, v in fields.items() if k in _FIELDS}

    def _reject(self, reason: str, exc: Exception) -> bool:
        with self._cond:
            self._dropped += 1
        self._log_once(
            f"reject:{reason}", logging.WARNING,
            "dropping an event (%s): %s: %s (further ones logged at debug)",
            reason, type(exc).__name__, exc,
        )
        return False

    def _pending(self) -> list[InferenceEvent | FeedbackEvent]:
        """The buffered records, decoded from the bytes that will be sent (tests, debugging)."""
        with self._cond:
            items = [(topic, data) for topic, _, data in self._buf]
        events, feedback = _DECODERS[self._content_type], _FEEDBACK_DECODERS[self._content_type]
        return [(feedback if topic == self.feedback_topic else events).decode(data)
                for topic, data in items]

    def _signal(self, event: asyncio.Event | None) -> None:
        loop = self._loop
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(event.set)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            thread = SenderThread(
                target=self._thread_main, name="inferwatch-producer", daemon=True
            )
            thread.start()
            self._thread = thread

    def _reset_after_fork(self) -> None:
        """In a forked child: fresh locks, no thread; the parent delivers what it buffered."""
        self._cond = threading.Condition(threading.Lock())
        self._start_lock = threading.Lock()
        self._buf.clear()
        self._sent = self._dropped = self._send_errors = self._flushing = 0
        self._connected = False
        self._thread = self._loop = self._task = self._wake = self._kick = None


# Every producer, weakly: closed at interpreter exit, reset in forked children.
_LIVE: weakref.WeakSet[Producer] = weakref.WeakSet()
_EXIT_TIMEOUT = 2.0


def _close_all_at_exit() -> None:
    deadline = time.monotonic() + _EXIT_TIMEOUT
    for producer in list(_LIVE):
        if producer._thread is not None and producer._thread.is_alive():
            producer.close(timeout=max(0.0, deadline - time.monotonic()))


def _reset_all_after_fork() -> None:
    for producer in list(_LIVE):
        producer._reset_after_fork()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)
