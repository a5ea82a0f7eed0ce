"""Kafka → ClickHouse sink: consume a batch, insert it, and only then commit its offsets.

Why a bare aiokafka consumer rather than a faust agent: the sink's one promise is
"offsets are committed only after the rows they cover are durable", which is a
plain loop — getmany, insert, commit — with no per-message tasks in between. It
runs in its own consumer group (``<app_id>-sink``), so it sees every event
whatever the processing workers do, and scales by adding sink workers when the
store is a ClickHouse server.

It writes raw events and resource samples, the window and resource metrics of
``inferwatch.metrics``, the audit trail of ``inferwatch.audit``, and refreshes the
1-minute / 1-hour roll-ups on a timer.
The next batch is fetched and decoded while one is inserted (see ``ClickHouseSink.run``).
A crash between insert and commit re-delivers the batch; the tables are
ReplacingMergeTree keyed by event_id (metrics: by series, window and version), so
each row is kept once. Rejected messages are skipped here and counted: the
processing role owns the DLQ for what does not decode.

One row the store refuses never blocks the sink. An insert that fails for its data
(a value outside a column's range, a constraint) is split (:mod:`pipeline.sinks.clickhouse.isolate`)
until the refused rows stand alone; the rest is stored, and each refused row goes to
the dead-letter topic with reason ``store_refused`` and the database's error, before
the offsets are committed. Its value is the original message when that message held
this one row (and is at most ``_RAW_LIMIT`` bytes); otherwise (an element of a batch)
it is the row re-encoded alone as JSON, with ``inferwatch-batch-index`` giving its
position and ``inferwatch-original-content-type`` the message's own content type.
Errors that are not about the data (store down, connection lost, too busy) keep the
batch and retry it with capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DataError,
    OperationalError,
)

from pipeline.config import Settings
from pipeline.quality.records import OutcomeBatch
from pipeline.runtime.kafka import client_options
from pipeline.runtime.memory_tuning import COLLECTOR_PAUSED
from pipeline.runtime.retry import Backoff
from pipeline.sinks.clickhouse.batch import Batch, Refusal, Table, positions
from pipeline.sinks.clickhouse.client import apply_migrations, apply_retention, connect
from pipeline.sinks.clickhouse.isolate import isolate
from pipeline.sinks.clickhouse.rollups import refresh_rollups
from pipeline.sources.codec import Rejection, decode_events, describe
from pipeline.sources.dlq import DeadLetter, dead_letter, deliver
from pipeline.sources.pricing import price_table
from pipeline.sources.redaction import Redaction
from pipeline.telemetry import (
    CONSUMER_LAG,
    DLQ_DELIVERIES,
    HEALTH,
    MESSAGES_CONSUMED,
    SINK_INSERT_FAILURES,
    SINK_INSERT_SECONDS,
    SINK_ROWS,
    count_letters,
)
from schemas.alert import AlertEvent
from schemas.audit import AuditEvent
from schemas.event import InferenceEvent, ResourceSample
from schemas.metrics import CONTRACT_HEADER, ResourceMetrics, WindowMetrics
from schemas.quality import QUALITY_CONTRACT, VERSION_CONTRACT, QualityWindow
from schemas.scores import WindowScores

__all__ = ["ClickHouseSink", "SinkStats", "refused_by_store"]

log = logging.getLogger(__name__)
_WINDOW = msgspec.json.Decoder(WindowMetrics)
_HOST_WINDOW = msgspec.json.Decoder(ResourceMetrics)
_ALERT = msgspec.json.Decoder(AlertEvent)
_SCORES = msgspec.json.Decoder(WindowScores)
_QUALITY = msgspec.json.Decoder(QualityWindow)
_OUTCOMES = msgspec.msgpack.Decoder(OutcomeBatch)
_AUDIT = msgspec.json.Decoder(AuditEvent)
_JSON = msgspec.json.Encoder()

REASON = "store_refused"
_RAW_LIMIT = 256 * 1024  # a refused row's own message up to this size is dead-lettered as is
_ORIGINAL_CONTENT_TYPE = "inferwatch-original-content-type"

# ClickHouse errors about the rows of an insert, not the state of the store.
_DATA_ERRORS = {
    6: "CANNOT_PARSE_TEXT",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    131: "TOO_LARGE_STRING_SIZE",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    407: "DECIMAL_OVERFLOW",
    469: "VIOLATED_CONSTRAINT",
    691: "UNKNOWN_ELEMENT_OF_ENUM",
}
# Raised while turning rows into columns or serialising them: the same rows fail again.
_ROW_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError, AttributeError,
               UnicodeError, struct.error)


# Errors that say the store is away or overloaded, never that a row is bad.
_OUTAGES = (OperationalError, OSError, MemoryError)
_SUSPECT_AFTER = 3  # failures of one batch with another error before rows are isolated


def _refused_by_anything_but_an_outage(exc: BaseException) -> bool:
    """The lenient test for a batch that keeps failing: any error but an outage counts
    as a refusal of the rows inserted (an unknown error code must not loop the sink)."""
    return not isinstance(exc, _OUTAGES)


def refused_by_store(exc: BaseException) -> bool:
    """True when ``exc`` is about the rows inserted (retrying them cannot help).

    clickhouse-connect raises ``DataError`` when it cannot serialise a value into its
    column (65536 into ``UInt16``: both the HTTP and the chDB backends do this client
    side), and a ``DatabaseError`` carrying the server's code for what the server
    refuses (a constraint, a parse error). ``OperationalError`` (connection lost, store
    down), any other server code (memory limit, too many parts, unknown table) and
    ``OSError`` are transient or the store's own state: the batch is retried.

    >>> refused_by_store(DataError("Unable to create native array for column `x`"))
    True
    >>> refused_by_store(OperationalError("Error executing HTTP request"))
    False
    >>> refused_by_store(ConnectionResetError())
    False
    """
    if isinstance(exc, DataError):
        return True
    if isinstance(exc, OperationalError):
        return False
    if isinstance(exc, ClickHouseError):
        code, name = getattr(exc, "code", None), getattr(exc, "name", None)
        return code in _DATA_ERRORS or name in _DATA_ERRORS.values()
    if isinstance(exc, (OSError, MemoryError)):
        return False
    return isinstance(exc, _ROW_ERRORS)


class _QuietSerialisationErrors(logging.Filter):
    """clickhouse-connect logs a traceback for every value it cannot serialise; the sink
    turns that error into one ``store_refused`` line per row, so the traceback (repeated
    at each bisection step) is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Error serializing column")


_QUIET = _QuietSerialisationErrors()




@dataclass
class SinkStats:
    events: int = 0
    resources: int = 0
    windows: int = 0
    alerts: int = 0
    scores: int = 0
    rejected: int = 0
    refused: int = 0  # rows the store refused, sent to the DLQ as store_refused
    batches: int = 0
    insert_failures: int = 0
    commit_failures: int = 0


def _observe_lag(consumer: Any, offsets: dict[TopicPartition, int]) -> None:
    """``/metrics``: records left to read after a commit, per partition of the batch (from
    the end offsets the last fetch saw; a consumer that keeps none reports nothing)."""
    highwater = getattr(consumer, "highwater", None)
    if highwater is None:
        return
    stable = getattr(consumer, "last_stable_offset", lambda tp: None)  # read_committed's end
    for tp, offset in offsets.items():
        end = stable(tp)
        if end is None:
            end = highwater(tp)
        if end is not None:
            CONSUMER_LAG.labels(stage="sink", topic=tp.topic,
                                partition=str(tp.partition)).set(max(0, end - offset))


class ClickHouseSink:
    """Writes raw events and resource samples to ClickHouse, at least once, deduplicated."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self._client = client
        self._ping_client: Any | None = None
        # the same prices as stage 1, so stored rows and windows agree on every cost;
        # a bad table file fails here, when the worker starts
        self.prices = price_table(settings.pricing)
        self.redaction = Redaction.from_settings(settings.privacy)  # as stage 1 drops keys

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def ping(self) -> None:
        """``SELECT 1`` on a client of its own (blocking): ``/readyz`` asks it."""
        if self._ping_client is None:
            self._ping_client = connect(self.settings, database=False)
        self._ping_client.command("SELECT 1")

    def prepare(self) -> None:
        """Connect, apply pending migrations and the configured retention (blocking: call
        from a thread)."""
        apply_migrations(self.client, self.settings)
        apply_retention(self.client, self.settings)
        transform = logging.getLogger("clickhouse_connect.driver.transform")
        if _QUIET not in transform.filters:
            transform.addFilter(_QUIET)

    def _consumer(self) -> AIOKafkaConsumer:
        topics = self.settings.topics
        return AIOKafkaConsumer(
            topics.events,
            topics.resources,
            topics.metrics,
            topics.scores,
            topics.alerts,
            topics.outcomes,
            topics.audit,
            **client_options(self.settings.kafka),
            group_id=f"{self.settings.worker.app_id}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",  # aborted transactions are never stored
            session_timeout_ms=int(self.settings.worker.session_timeout_seconds * 1000),
            group_instance_id=self.settings.worker.instance_id or None,  # static membership
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=64 << 20,
        )

    def _producer(self) -> AIOKafkaProducer:
        """The dead-letter producer: acks from every in-sync replica before a commit."""
        return AIOKafkaProducer(**client_options(self.settings.kafka), acks="all")

    def collect(self, records: dict[TopicPartition, list[ConsumerRecord]], batch: Batch) -> None:
        """Decode fetched records into ``batch`` (pure apart from the wall clock)."""
        with COLLECTOR_PAUSED:
            self._collect(records, batch)

    def _collect(self, records: dict[TopicPartition, list[ConsumerRecord]],
                 batch: Batch) -> None:
        topics = self.settings.topics
        limits = self.settings.limits
        now = time.time()
        for tp, messages in records.items():
            MESSAGES_CONSUMED.labels(stage="sink", topic=tp.topic).inc(len(messages))
            if tp.topic in (topics.metrics, topics.scores, topics.alerts, topics.outcomes,
                            topics.audit):
                for msg in messages:
                    try:
                        contract = dict(msg.headers).get(CONTRACT_HEADER)
                        if tp.topic == topics.audit:
                            batch.audit.add(_AUDIT.decode(msg.value), msg)
                        elif tp.topic == topics.alerts:
                            batch.alerts.add(_ALERT.decode(msg.value), msg)
                        elif tp.topic == topics.scores:
                            batch.scores.add(_SCORES.decode(msg.value), msg)
                        elif tp.topic == topics.outcomes:
                            fates = _OUTCOMES.decode(msg.value).fates
                            batch.fates.extend(fates, msg, list(range(len(fates))))
                        elif contract == b"ResourceMetrics":
                            batch.host_windows.add(_HOST_WINDOW.decode(msg.value), msg)
                        elif contract == QUALITY_CONTRACT:
                            batch.quality_windows.add(_QUALITY.decode(msg.value), msg)
                        elif contract == VERSION_CONTRACT:
                            pass  # version sums: for comparison rules, not stored
                        else:
                            batch.windows.add(_WINDOW.decode(msg.value), msg)
                    except Exception as exc:  # our own topic: a bug or a stranger; DLQ it
                        log.error("undecodable record at %s:%d: %s", tp, msg.offset, exc)
                        batch.rejected += 1
                        if tp.topic != topics.outcomes:  # the quality stage dead-letters
                            batch.letters.append(self.undecodable(msg, exc))  # those
                    batch.next_offsets[tp] = msg.offset + 1
                    batch.messages += 1
                continue
            contract = ResourceSample if tp.topic == topics.resources else InferenceEvent
            rows = batch.resources if contract is ResourceSample else batch.events
            for msg in messages:
                decoded = decode_events(msg.value, msg.headers, limits, now, contract,
                                        self.prices, redaction=self.redaction)
                batch.rejected += len(decoded.rejections)
                places = positions(len(decoded.events), decoded.rejections)
                rows.extend(decoded.events, msg, places)  # a whole message at once
                batch.next_offsets[tp] = msg.offset + 1
                batch.messages += 1

    def insert(self, batch: Batch) -> None:
        """Write one batch, isolating the rows the store refuses into ``batch.refused``.

        Raises on a transient failure so the caller retries (blocking). Tables already
        written are skipped on the retry.
        """
        with COLLECTOR_PAUSED:
            for table in batch.tables():
                if table.name in batch.written:
                    continue
                if table.rows.items:
                    self._insert_table(table, batch)
                batch.written.add(table.name)

    def _insert_table(self, table: Table, batch: Batch) -> None:
        rows, records = table.rows.items, table.rows.records

        def write(indices: Sequence[int]) -> None:
            if len(indices) == len(rows):  # the whole table, as it nearly always is: no copy
                chosen, sources = rows, records
            else:
                chosen, sources = [rows[i] for i in indices], [records[i] for i in indices]
            started = time.perf_counter()
            try:
                self.client.insert(table.name, table.build(chosen, sources),
                                   column_names=table.columns, column_oriented=True)
            except Exception:
                SINK_INSERT_FAILURES.labels(table=table.name).inc()
                raise
            SINK_INSERT_SECONDS.labels(table=table.name).observe(time.perf_counter() - started)

        refused_by = _refused_by_anything_but_an_outage if batch.suspect else refused_by_store
        refusals = isolate(range(len(rows)), write, refused_by)
        if batch.suspect and len(refusals) == len(rows) > 1:
            # every row refused even alone: the store's problem, not the rows'
            raise RuntimeError(f"{table.name} refused all {len(rows)} rows one by one: "
                               f"{refusals[0].error}")
        SINK_ROWS.labels(table=table.name).inc(len(rows) - len(refusals))
        for refused in refusals:
            source = table.rows.source(refused.row)
            msg = source.record
            log.warning("%s refused a row from %s[%d]@%d%s (to the DLQ as %s): %s",
                        table.name, msg.topic, msg.partition, msg.offset,
                        "" if source.element is None else f" element {source.element}",
                        REASON, refused.error)
            batch.refused.append(Refusal(table.name, rows[refused.row], source,
                                          refused.error))

    def refresh_rollups(self) -> None:
        """Re-aggregate the roll-up buckets touched since the last refresh (blocking).

        Bounded per call; a backlog (late or replayed events of any age) is worked off
        over the next calls, and the store records how far it got.
        """
        refresh_rollups(self.client, self.settings.clickhouse.database)

    async def _insert_until_done(self, batch: Batch, stop: asyncio.Event) -> bool:
        """Retry the insert with capped backoff; False if asked to stop before it succeeded."""
        backoff = Backoff(first=0.5, cap=self.settings.worker.sink_retry_max_seconds)
        failures = 0
        while True:
            try:
                await asyncio.to_thread(self.insert, batch)
                return True
            except Exception as exc:  # ClickHouse down or busy: keep the batch, retry
                self.stats.insert_failures += 1
                if not isinstance(exc, _OUTAGES):
                    failures += 1
                if failures >= _SUSPECT_AFTER and not batch.suspect:
                    # an error that is neither an outage nor a known data error, again and
                    # again: suspect a row the store cannot take, and isolate it next time
                    batch.suspect = True
                    log.warning("insert failed %d times with %s: isolating rows next",
                                failures, type(exc).__name__)
                delay = backoff.next()
                log.error("ClickHouse insert of %d rows failed (retry in %.1fs): %s",
                          len(batch.events) + len(batch.resources), delay, exc)
            if not await self._pause(stop, delay):
                return False

    async def _pause(self, stop: asyncio.Event, delay: float) -> bool:
        """Sleep ``delay`` seconds; False if ``stop`` was set meanwhile."""
        if stop.is_set():
            return False
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
            return False
        except TimeoutError:
            return True

    def undecodable(self, msg: ConsumerRecord, exc: Exception) -> DeadLetter:
        """The DLQ record of a metrics, scores or alerts record that does not decode.

        The sink reads all three topics whatever else runs, so it alone dead-letters
        them (the alert agent only skips them): one letter per bad record."""
        reason = ("schema" if isinstance(exc, msgspec.ValidationError)
                  else "malformed" if isinstance(exc, msgspec.DecodeError) else "internal")
        return dead_letter(Rejection(reason, describe(exc), msg.value or b""),  # type: ignore[arg-type]
                           key=msg.key, headers=msg.headers, topic=msg.topic,
                           partition=msg.partition, offset=msg.offset,
                           max_bytes=self.settings.limits.max_dead_letter_bytes)

    def letter(self, refusal: Refusal) -> DeadLetter:
        """The DLQ record of one refused row (see the module docstring for its value)."""
        msg = refusal.source.record
        row = refusal.row[0] if isinstance(refusal.row, tuple) else refusal.row  # drift: its window
        headers = list(msg.headers or ())
        element = refusal.source.element
        if element is None and msg.value is not None and len(msg.value) <= _RAW_LIMIT:
            value = msg.value
        else:  # one element of a batch, or a message too large to copy: the row alone, as JSON
            kept = [(k, v) for k, v in headers
                    if k.lower() not in ("content-type", "content-encoding")]
            original = dict((k.lower(), v) for k, v in headers).get("content-type")
            headers = [*kept, ("content-type", b"application/json")]
            if original is not None:
                headers.append((_ORIGINAL_CONTENT_TYPE, original))
            value = _JSON.encode(row)
        rejection = Rejection(REASON, f"{refusal.table}: {refusal.error}",  # type: ignore[arg-type]
                              value, element)
        return dead_letter(rejection, key=msg.key, headers=headers, topic=msg.topic,
                           partition=msg.partition, offset=msg.offset)

    async def _deliver_refused(self, producer: AIOKafkaProducer, batch: Batch,
                               stop: asyncio.Event) -> bool:
        """Send every refused row to the DLQ, acknowledged, before the offsets move on.

        :func:`pipeline.sources.dlq.deliver` retries what failed (a delivered letter is not sent
        again) and replaces a letter the broker refuses for good by its bounded reference.
        False if asked to stop first: then nothing is committed and the batch returns.
        """
        if not batch.refused and not batch.letters:
            return True
        topic = self.settings.topics.dlq

        async def send(letter: DeadLetter) -> Any:
            future = await producer.send(topic, letter.value, key=letter.key,
                                         headers=letter.headers)
            return await future

        letters = [*batch.letters, *(self.letter(r) for r in batch.refused)]
        delivery = asyncio.ensure_future(deliver(
            letters, send, self.settings.worker.sink_retry_max_seconds))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({delivery, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not delivery.done():
            delivery.cancel()
            return False
        delivery.result()
        count_letters("sink", letters)
        DLQ_DELIVERIES.labels(stage="sink").inc(len(letters))
        return True

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set. Offsets are committed after each durable insert.

        One batch is fetched and decoded while the one before is stored: the insert runs
        in a thread, and the store releases the GIL while it writes, so its work and the
        next batch's decoding overlap. Batches still commit one at a time and in order,
        each after its own insert and dead letters. A stop fetches nothing more: the
        insert under way finishes and commits, then the batch already fetched is stored
        and committed the same way (as before the overlap, when a stop stored the batch
        in hand); only a store that fails while stopping leaves a batch uncommitted.
        """
        await asyncio.to_thread(self.prepare)
        HEALTH.store_probe = self.ping  # /readyz: the store answers
        worker = self.settings.worker
        consumer = self._consumer()
        producer = self._producer()
        await producer.start()
        try:
            await consumer.start()
        except BaseException:
            await producer.stop()
            raise
        if ready is not None:
            ready.set()
        log.info("sink consuming %s, %s into %s", self.settings.topics.events,
                 self.settings.topics.resources, self.settings.clickhouse.database)
        next_rollup = time.monotonic() + worker.rollup_interval_seconds
        stored: asyncio.Future[bool] | None = None  # the batch before: insert, DLQ, commit
        try:
            while not stop.is_set():
                if time.monotonic() >= next_rollup:
                    if stored is not None and not await stored:
                        break
                    stored = None
                    try:
                        await asyncio.to_thread(self.refresh_rollups)
                    except Exception as exc:  # the raw rows are safe; retry next interval
                        log.error("roll-up refresh failed: %s", exc)
                    next_rollup = time.monotonic() + worker.rollup_interval_seconds
                batch = await self._fill(consumer, stop)  # while the batch before is stored
                if stored is not None and not await stored:
                    break  # stopping: this batch is not written, so not committed either
                stored = None
                if batch.next_offsets:
                    stored = asyncio.ensure_future(self._store(consumer, producer, batch, stop))
            if stored is not None:
                await stored  # a stop still stores (and commits) what was fetched
                stored = None
        finally:
            try:
                if stored is not None and not stored.done():  # leaving on an error:
                    stored.cancel()  # the batch is not committed, so it is re-delivered
                    with contextlib.suppress(asyncio.CancelledError):
                        await stored
                await consumer.stop()
            finally:
                await producer.stop()

    async def _fill(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> Batch:
        """The next batch: ``sink_batch_size`` messages or what came in ``sink_flush_seconds``."""
        worker = self.settings.worker
        batch = Batch()
        deadline = time.monotonic() + worker.sink_flush_seconds
        while not stop.is_set() and batch.messages < worker.sink_batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            records = await consumer.getmany(timeout_ms=int(left * 1000),
                                             max_records=worker.sink_batch_size)
            self.collect(records, batch)
        return batch

    async def _store(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                     batch: Batch, stop: asyncio.Event) -> bool:
        """Insert ``batch``, dead-letter its refused rows, then commit its offsets, in that
        order; False if asked to stop before the rows were durable (nothing committed)."""
        if not await self._insert_until_done(batch, stop):
            return False  # stopping with an unwritten batch: it is re-delivered
        if not await self._deliver_refused(producer, batch, stop):
            return False  # refused rows not in the DLQ yet: do not commit either
        await self._commit(consumer, batch)
        return True

    async def _commit(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        try:
            await consumer.commit(batch.next_offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions away; the new owner re-reads and dedup holds.
            self.stats.commit_failures += 1
            log.warning("offset commit failed after a durable insert (re-delivery is safe): %s",
                        exc)
        _observe_lag(consumer, batch.next_offsets)
        stats = self.stats
        stored_events = len(batch.events) - batch.refused_in("events")
        stats.events += stored_events
        stats.resources += len(batch.resources) - batch.refused_in("resources")
        stats.windows += (len(batch.windows) + len(batch.host_windows)
                          - batch.refused_in("window_metrics")
                          - batch.refused_in("resource_metrics"))
        stats.alerts += len(batch.alerts) - batch.refused_in("alerts")
        stats.scores += len(batch.scores) - batch.refused_in("anomaly_scores")
        stats.rejected += batch.rejected
        stats.refused += len(batch.refused)
        stats.batches += 1
        log.info("sink batch: %d events, %d resource samples, %d windows, %d rejected, "
                 "%d refused (totals %d/%d/%d/%d/%d)", stored_events, len(batch.resources),
                 len(batch.windows), batch.rejected, len(batch.refused), stats.events,
                 stats.resources, stats.windows, stats.rejected, stats.refused)
