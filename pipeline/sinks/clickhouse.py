"""Kafka → ClickHouse sink: consume a batch, insert it, and only then commit its offsets.

Why a bare aiokafka consumer rather than a faust agent: the sink's one promise is
"offsets are committed only after the rows they cover are durable", which is a
plain loop — getmany, insert, commit — with no per-message tasks in between. It
runs in its own consumer group (``<app_id>-sink``), so it sees every event
whatever the processing workers do, and scales by adding sink workers when the
store is a ClickHouse server.

It writes raw events and resource samples, the window and resource metrics of
``inferwatch.metrics``, and refreshes the 1-minute / 1-hour roll-ups on a timer.
A crash between insert and commit re-delivers the batch; the tables are
ReplacingMergeTree keyed by event_id (metrics: by series, window and version), so
each row is kept once. Rejected messages are skipped here and counted: the
processing role owns the DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from pipeline.codec import decode_events
from pipeline.config import Settings
from pipeline.kafka import client_options
from pipeline.storage.clickhouse import apply_migrations, connect
from pipeline.storage.rollups import refresh_rollups
from pipeline.storage.rows import (
    ALERT_COLUMNS,
    ANOMALY_COLUMNS,
    DRIFT_COLUMNS,
    EVENT_COLUMNS,
    METRICS_COLUMNS,
    RESOURCE_COLUMNS,
    RESOURCE_METRICS_COLUMNS,
    drift_columns,
    event_columns,
    resource_columns,
    struct_columns,
)
from schemas.alert import AlertEvent
from schemas.event import InferenceEvent, ResourceSample
from schemas.metrics import CONTRACT_HEADER, ResourceMetrics, WindowMetrics
from schemas.scores import WindowScores

__all__ = ["ClickHouseSink", "SinkStats"]

log = logging.getLogger(__name__)
_WINDOW = msgspec.json.Decoder(WindowMetrics)
_HOST_WINDOW = msgspec.json.Decoder(ResourceMetrics)
_ALERT = msgspec.json.Decoder(AlertEvent)
_SCORES = msgspec.json.Decoder(WindowScores)


@dataclass
class SinkStats:
    events: int = 0
    resources: int = 0
    windows: int = 0
    alerts: int = 0
    scores: int = 0
    rejected: int = 0
    batches: int = 0
    insert_failures: int = 0
    commit_failures: int = 0


@dataclass
class _Batch:
    events: list[InferenceEvent] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    resources: list[ResourceSample] = field(default_factory=list)
    windows: list[WindowMetrics] = field(default_factory=list)
    host_windows: list[ResourceMetrics] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    scores: list[WindowScores] = field(default_factory=list)
    rejected: int = 0
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    messages: int = 0


class ClickHouseSink:
    """Writes raw events and resource samples to ClickHouse, at least once, deduplicated."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def prepare(self) -> None:
        """Connect and apply pending migrations (blocking: call from a thread)."""
        apply_migrations(self.client, self.settings)

    def _consumer(self) -> AIOKafkaConsumer:
        topics = self.settings.topics
        return AIOKafkaConsumer(
            topics.events,
            topics.resources,
            topics.metrics,
            topics.scores,
            topics.alerts,
            **client_options(self.settings.kafka),
            group_id=f"{self.settings.worker.app_id}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.worker.session_timeout_seconds * 1000),
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=64 << 20,
        )

    def collect(self, records: dict[TopicPartition, list[ConsumerRecord]], batch: _Batch) -> None:
        """Decode fetched records into ``batch`` (pure apart from the wall clock)."""
        topics = self.settings.topics
        limits = self.settings.limits
        now = time.time()
        for tp, messages in records.items():
            if tp.topic in (topics.metrics, topics.scores, topics.alerts):
                for msg in messages:
                    try:
                        if tp.topic == topics.alerts:
                            batch.alerts.append(_ALERT.decode(msg.value))
                        elif tp.topic == topics.scores:
                            batch.scores.append(_SCORES.decode(msg.value))
                        elif dict(msg.headers).get(CONTRACT_HEADER) == b"ResourceMetrics":
                            batch.host_windows.append(_HOST_WINDOW.decode(msg.value))
                        else:
                            batch.windows.append(_WINDOW.decode(msg.value))
                    except msgspec.DecodeError as exc:  # our own topic: a bug, say so loudly
                        log.error("undecodable record at %s:%d: %s", tp, msg.offset, exc)
                        batch.rejected += 1
                    batch.next_offsets[tp] = msg.offset + 1
                    batch.messages += 1
                continue
            contract = ResourceSample if tp.topic == topics.resources else InferenceEvent
            for msg in messages:
                decoded = decode_events(msg.value, msg.headers, limits, now, contract)
                batch.rejected += len(decoded.rejections)
                if contract is ResourceSample:
                    batch.resources.extend(decoded.events)
                else:
                    n = len(decoded.events)
                    batch.events.extend(decoded.events)
                    batch.partitions.extend([msg.partition] * n)
                    batch.offsets.extend([msg.offset] * n)
                batch.next_offsets[tp] = msg.offset + 1
                batch.messages += 1

    def insert(self, batch: _Batch) -> None:
        """Write one batch; raises on failure so the caller retries (blocking)."""
        tables = (
            ("events", batch.events,
             lambda: event_columns(batch.events, batch.partitions, batch.offsets), EVENT_COLUMNS),
            ("resources", batch.resources,
             lambda: resource_columns(batch.resources), RESOURCE_COLUMNS),
            ("window_metrics", batch.windows,
             lambda: struct_columns(batch.windows, METRICS_COLUMNS), METRICS_COLUMNS),
            ("resource_metrics", batch.host_windows,
             lambda: struct_columns(batch.host_windows, RESOURCE_METRICS_COLUMNS),
             RESOURCE_METRICS_COLUMNS),
            ("alerts", batch.alerts,
             lambda: struct_columns(batch.alerts, ALERT_COLUMNS), ALERT_COLUMNS),
            ("anomaly_scores", batch.scores,
             lambda: struct_columns(batch.scores, ANOMALY_COLUMNS), ANOMALY_COLUMNS),
            ("drift_scores", [d for w in batch.scores for d in w.drift],
             lambda: drift_columns(batch.scores), DRIFT_COLUMNS),
        )
        for table, rows, columns, names in tables:
            if rows:
                self.client.insert(table, columns(), column_names=names, column_oriented=True)

    def refresh_rollups(self) -> None:
        """Rewrite the recent roll-up buckets from the raw events (blocking)."""
        refresh_rollups(self.client, self.settings.clickhouse.database, time.time(),
                        self.settings.worker.rollup_lookback_minutes)

    async def _insert_until_done(self, batch: _Batch, stop: asyncio.Event) -> bool:
        """Retry the insert with capped backoff; False if asked to stop before it succeeded."""
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(self.insert, batch)
                return True
            except Exception as exc:  # ClickHouse down or refusing: keep the batch, retry
                self.stats.insert_failures += 1
                log.error("ClickHouse insert of %d rows failed (retry in %.1fs): %s",
                          len(batch.events) + len(batch.resources), delay, exc)
            if stop.is_set():
                return False
            with_timeout = asyncio.wait_for(stop.wait(), timeout=delay)
            try:
                await with_timeout
                return False
            except TimeoutError:
                pass
            delay = min(delay * 2, self.settings.worker.sink_retry_max_seconds)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set. Offsets are committed after each durable insert."""
        await asyncio.to_thread(self.prepare)
        worker = self.settings.worker
        consumer = self._consumer()
        await consumer.start()
        if ready is not None:
            ready.set()
        log.info("sink consuming %s, %s into %s", self.settings.topics.events,
                 self.settings.topics.resources, self.settings.clickhouse.database)
        next_rollup = time.monotonic() + worker.rollup_interval_seconds
        try:
            while not stop.is_set():
                if time.monotonic() >= next_rollup:
                    try:
                        await asyncio.to_thread(self.refresh_rollups)
                    except Exception as exc:  # the raw rows are safe; retry next interval
                        log.error("roll-up refresh failed: %s", exc)
                    next_rollup = time.monotonic() + worker.rollup_interval_seconds
                batch = _Batch()
                deadline = time.monotonic() + worker.sink_flush_seconds
                while not stop.is_set() and batch.messages < worker.sink_batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    records = await consumer.getmany(
                        timeout_ms=int(left * 1000), max_records=worker.sink_batch_size
                    )
                    self.collect(records, batch)
                if not batch.next_offsets:
                    continue
                if not await self._insert_until_done(batch, stop):
                    break  # stopping with an unwritten batch: do not commit, it is re-delivered
                await self._commit(consumer, batch)
        finally:
            await consumer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer, batch: _Batch) -> None:
        try:
            await consumer.commit(batch.next_offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions away; the new owner re-reads and dedup holds.
            self.stats.commit_failures += 1
            log.warning("offset commit failed after a durable insert (re-delivery is safe): %s",
                        exc)
        stats = self.stats
        stats.events += len(batch.events)
        stats.resources += len(batch.resources)
        stats.windows += len(batch.windows) + len(batch.host_windows)
        stats.alerts += len(batch.alerts)
        stats.scores += len(batch.scores)
        stats.rejected += batch.rejected
        stats.batches += 1
        log.info("sink batch: %d events, %d resource samples, %d windows, %d rejected "
                 "(totals %d/%d/%d/%d)", len(batch.events), len(batch.resources),
                 len(batch.windows), batch.rejected, stats.events, stats.resources,
                 stats.windows, stats.rejected)
