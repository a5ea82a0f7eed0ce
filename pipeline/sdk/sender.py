"""The producer's sender thread: the buffer goes out as batched messages, with capped
backoff while Kafka is down, one error and a quiet re-probe while Kafka refuses the
producer, and a per-topic drop when the ACLs refuse a topic. The base of
:class:`~pipeline.sdk.producer.Producer`, which owns the buffer and the counters (its
``__init__`` sets the attributes declared here); all logging goes to the producer's
logger, the one name SDK users filter on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)

from pipeline.config import Settings
from pipeline.runtime.kafka import (
    KafkaAccessError,
    access_error,
    client_options,
    describe_error,
    diagnose,
)
from pipeline.sdk.sender_log import SenderThread
from pipeline.sdk.wire import encode_events

__all__ = ["FRAMING", "Sender"]

log = logging.getLogger("pipeline.sdk.producer")

FRAMING = 8  # bytes of array framing to reserve around a batch (JSON brackets, msgpack header)


class Sender:
    """The sending half of a producer: runs on its own thread and event loop."""

    # Retry timing; class attributes so tests can shorten them.
    _BACKOFF_INITIAL = 0.2
    _BACKOFF_MAX = 5.0
    _CONNECT_TIMEOUT = 10.0
    _REPROBE_SECONDS = 60.0  # after a refusal: how often to ask Kafka again
    _SEND_TIMEOUT = 20.0
    _STOP_TIMEOUT = 2.0

    # set by Producer.__init__
    _settings: Settings
    _cond: threading.Condition
    _buf: deque[tuple[str, bytes | None, bytes]]
    _batch_size: int
    _chunk: int
    _linger: float
    _compression: str | None
    _content_type: str
    _max_bytes: int
    _headers: list[tuple[str, bytes]]
    _sent: int
    _dropped: int
    _send_errors: int
    _connected: bool
    _closed: bool
    _error: str | None
    _abort: bool
    _flushing: int
    _warned: set[str]
    _loop: asyncio.AbstractEventLoop | None
    _task: asyncio.Task[None] | None
    _wake: asyncio.Event | None
    _kick: asyncio.Event | None
    _reject: Callable[[str, Exception], bool]  # count and warn about one dropped record

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run())
        except asyncio.CancelledError:
            pass  # close() gave up waiting
        except Exception:
            log.exception("producer sender thread failed")
        finally:
            self._loop = None
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()  # last: emit() signals only once all is set
        kafka: AIOKafkaProducer | None = None
        failures = 0
        try:
            while not self._abort and await self._batch_due():
                try:
                    if kafka is None:
                        kafka = await self._connect()
                    await self._send_batch(kafka)
                except Exception as exc:
                    refused = access_error(self._settings.kafka, exc)  # raised, or mid-session
                    if refused is not None:
                        self._give_up(refused)
                        if kafka is not None:
                            await self._stop(kafka)
                        kafka = await self._reprobe()
                        if kafka is None:
                            return  # closed while refused
                        continue
                    failures += 1
                    self._on_failure(exc, failures)
                    if kafka is not None:
                        await self._stop(kafka)
                        kafka = None
                    await self._backoff(failures)
                else:
                    if failures:
                        self._on_recovery(failures)
                        failures = 0
        finally:
            self._connected = False
            if kafka is not None:
                await self._stop(kafka)

    async def _batch_due(self) -> bool:
        """Wait until a batch is due (full, lingered, flushing); False once closed and empty."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            self._wake.clear()  # before looking: a later emit() sets it again
            with self._cond:
                n = len(self._buf)
            if self._abort:
                return False
            if n == 0:
                if self._closed:
                    return False
                deadline = None
                await self._wake.wait()
                continue
            if n >= self._batch_size or self._closed or self._flushing:
                return True
            if deadline is None:
                deadline = loop.time() + self._linger
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    async def _connect(self) -> AIOKafkaProducer:
        kafka = AIOKafkaProducer(
            **client_options(self._settings.kafka),
            acks="all",
            compression_type=self._compression,
            linger_ms=0,  # batching happens here; the one message in flight should go now
            max_request_size=max(1 << 20, self._max_bytes + (64 << 10)),
            request_timeout_ms=15_000,
        )
        try:
            async with asyncio.timeout(self._CONNECT_TIMEOUT):
                await kafka.start()
        except BaseException as exc:
            await self._stop(kafka)
            access = await diagnose(self._settings.kafka, exc) \
                if isinstance(exc, Exception) else None
            if access is not None:
                raise access from None
            raise
        self._connected = True
        return kafka

    async def _send_batch(self, kafka: AIOKafkaProducer) -> None:
        """Send the head of the buffer as one message (records of the head's topic only);
        remove it only once acknowledged."""
        with self._cond:
            items = list(itertools.islice(self._buf, self._chunk))
        topic = items[0][0]
        if self._batch_size == 1:
            count = 1
            _, key, value = items[0]
        else:
            count, size = 0, FRAMING
            for item_topic, _, data in items:
                if item_topic != topic or (count and size + len(data) + 1 > self._max_bytes):
                    break
                size += len(data) + 1
                count += 1
            key = None
            value = encode_events([msgspec.Raw(data) for _, _, data in items[:count]],
                                  self._content_type)
        try:
            async with asyncio.timeout(self._SEND_TIMEOUT):
                await kafka.send_and_wait(topic, value, key=key, headers=self._headers)
        except TopicAuthorizationFailedError as exc:  # this topic only: drop its batch
            self._denied(topic, count, exc)
            return
        except (MessageSizeTooLargeError, RecordListTooLargeError) as exc:
            if count > 1:  # the broker's limit is below ours: send smaller batches
                self._chunk = max(1, count // 2)
                log.warning("Kafka refused a %d-byte batch of %d events (%s); sending at most "
                            "%d events per message", len(value), count, exc, self._chunk)
                return
            with self._cond:  # a single event Kafka will never take: drop it
                self._buf.popleft()
                if not self._buf:
                    self._cond.notify_all()
            self._reject("too large for Kafka", exc)
            return
        with self._cond:
            for _ in range(count):
                self._buf.popleft()
            self._sent += count
            self._connected = True
            if not self._buf:
                self._cond.notify_all()

    def _give_up(self, exc: KafkaAccessError) -> None:
        """Kafka refused who we are: retrying cannot help. One error; what is buffered and
        whatever comes later is dropped and counted."""
        with self._cond:
            self._error = str(exc)
            self._dropped += len(self._buf)
            left = len(self._buf)
            self._buf.clear()
            self._connected = False
            self._cond.notify_all()
        log.error("Kafka refused this producer: %s; %d buffered events dropped, and every "
                  "later one will be until Kafka accepts it (asked again every %.0f s)", exc,
                  left, self._REPROBE_SECONDS)

    async def _reprobe(self) -> AIOKafkaProducer | None:
        """After a refusal: connect again every ``_REPROBE_SECONDS`` until Kafka accepts
        this producer (then sending resumes, with one line) or it is closed (None)."""
        assert self._kick is not None
        refused_at, tries = time.monotonic(), 0
        while True:
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._REPROBE_SECONDS):
                    await self._kick.wait()  # close() kicks
            if self._closed or self._abort:
                return None
            tries += 1
            try:
                kafka = await self._connect()
            except Exception as exc:  # still refused, or unreachable: ask again later
                log.debug("Kafka still refuses this producer (%d tries): %s", tries, exc)
                continue
            with self._cond:
                self._error = None
                dropped = self._dropped
            log.warning("Kafka accepts this producer again after %.0f s; sending resumes "
                        "(%d records dropped in all, stats.dropped)",
                        time.monotonic() - refused_at, dropped)
            return kafka

    def _denied(self, topic: str, count: int, exc: Exception) -> None:
        """The ACLs do not let us write ``topic``: drop the batch, one error per topic."""
        with self._cond:
            for _ in range(count):
                self._buf.popleft()
            self._dropped += count
            if not self._buf:
                self._cond.notify_all()
        self._log_once(f"denied:{topic}", logging.ERROR,
                       "dropping records for %s: %s (further drops are counted in "
                       "stats.dropped)", topic, access_error(self._settings.kafka, exc) or exc)

    def _log_once(self, key: str, level: int, message: str, *args: Any) -> None:
        """``message`` at ``level`` the first time for ``key``, at DEBUG after that."""
        if key in self._warned:
            log.debug(message, *args)
        else:
            self._warned.add(key)
            log.log(level, message, *args)

    def _on_failure(self, exc: Exception, failures: int) -> None:
        self._send_errors += 1
        self._connected = False
        thread = threading.current_thread()
        if failures == 1:
            log.warning(
                "Kafka at %s unavailable (%s); buffering up to %d events and retrying",
                self._settings.kafka.bootstrap_servers, describe_error(exc), self._buffer_size,
            )
            if isinstance(thread, SenderThread):
                thread.quiet = True
        else:
            log.debug("Kafka still unavailable (attempt %d): %s", failures, describe_error(exc))

    def _on_recovery(self, failures: int) -> None:
        thread = threading.current_thread()
        if isinstance(thread, SenderThread):
            thread.quiet = False
        log.info("Kafka at %s reachable again after %d failed attempts; %d events dropped so far",
                 self._settings.kafka.bootstrap_servers, failures, self._dropped)

    async def _backoff(self, failures: int) -> None:
        """Capped exponential backoff with jitter; flush() and close() cut it short."""
        assert self._kick is not None
        delay = min(self._BACKOFF_MAX, self._BACKOFF_INITIAL * 2.0 ** min(failures - 1, 30))
        self._kick.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                await self._kick.wait()

    async def _stop(self, kafka: AIOKafkaProducer) -> None:
        try:
            async with asyncio.timeout(self._STOP_TIMEOUT):
                await kafka.stop()
        except Exception as exc:
            log.debug("stopping the Kafka producer: %s: %s", type(exc).__name__, exc)

