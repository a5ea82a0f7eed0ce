"""The processing role's faust app: stage 2 and alerting of design.md.

Stage 1 (decode, validate, dead-letter, partial windows) runs on the runtime's own
aiokafka consumer (:mod:`pipeline.runtime.consumer`, :mod:`pipeline.windows.partial_stage`)
and sends partials and watermarks to ``inferwatch.partials``. Here:

- ``finalize`` (on ``inferwatch.partials``, keyed by series): stage 2 merges
  partials and publishes one ``WindowMetrics`` per closed window and series (and a
  ``ResourceMetrics`` per window and host) on ``inferwatch.metrics``; the
  ``inferwatch-contract`` header names which. It takes events in batches
  (``take_events``); a batch is acked only after its metrics, scores, dead letters and
  state checkpoints are sent.
- With ``alerts.rules`` set, an ``alert`` agent on ``inferwatch.metrics`` evaluates the
  rules per series (see ``pipeline/runtime/alerting.py``).

The raw copy of events in ClickHouse is the sink role's job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
import msgspec
from faust.types import TP

from pipeline.alerting.rules import load_rules
from pipeline.config import Settings
from pipeline.runtime.aggregate import Aggregator, PartitionKeyedTable, admit
from pipeline.runtime.alerting import AlertStage, read_silences
from pipeline.runtime.kafka import faust_broker_options
from pipeline.runtime.offsets import GapGuard
from pipeline.runtime.retry import forever
from pipeline.runtime.scoring import PinnedReferences, Scoring, follow_pinned
from pipeline.sources.codec import Rejection, describe
from pipeline.sources.dlq import DeadLetter, dead_letter, deliver
from schemas.alert import AlertEvent
from schemas.metrics import CONTRACT_HEADER, ResourceMetrics, WindowMetrics
from schemas.scores import WindowScores

__all__ = ["IngestStats", "build_app"]

log = logging.getLogger(__name__)
_JSON = msgspec.json.Encoder()
_WINDOW = msgspec.json.Decoder(WindowMetrics)


class IngestStats:
    """Counters of the processing role, logged periodically."""

    def __init__(self) -> None:
        self.messages = 0
        self.events = 0
        self.rejected: Counter[str] = Counter()
        self.dead_letters = 0
        self.dlq_replaced = 0  # too large for the broker: sent as a bounded reference

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (f"{self.messages} messages, {self.events} valid events, rejected: {reasons}, "
                f"dead letters {self.dead_letters} ({self.dlq_replaced} as references)")


def build_app(settings: Settings, stats: IngestStats | None = None) -> faust.App:
    """The faust app: validation, both aggregation stages, and alerting when rules are set.

    Configured from ``settings`` only; topics, tables and agents are all named here.
    """
    stats = stats or IngestStats()
    worker = settings.worker
    dlq_bytes = settings.limits.max_dead_letter_bytes
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
        table_standby_replicas=0,
        broker_session_timeout=worker.session_timeout_seconds,
        consumer_group_instance_id=worker.instance_id or None,  # static membership (KIP-345)
        producer_acks=-1,
        producer_max_request_size=8 << 20,
        stream_wait_empty=False,
        broker_client_id=settings.kafka.client_id,
    )
    dlq_topic = app.topic(
        settings.topics.dlq, key_serializer="raw", value_serializer="raw",
    )
    partials_topic = app.topic(
        settings.topics.partials, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw",
    )
    metrics_topic = app.topic(settings.topics.metrics, key_serializer="raw",
                              value_serializer="raw")
    scores_topic = app.topic(settings.topics.scores, key_serializer="raw",
                             value_serializer="raw")
    partitions = settings.topics.partitions
    tables = {
        name: app.tables.add(PartitionKeyedTable(
            app, name=name, default=None, beacon=app.tables.beacon, partitions=partitions,
            key_type=str, value_type=bytes,
            help=f"{name} window state, keyed '<partition>|<slot>'",
        ))
        for name in ("stage2",)
    }
    async def flush_producer() -> None:
        """Every table write so far is acknowledged by Kafka. faust's buffer flush gives
        up after 0.1 s without progress, so drain it until empty, then flush aiokafka."""
        buffer = app.producer.buffer
        while buffer.size:
            await buffer.flush()
        await app.producer.flush()

    async def seek(topic: str, partition: int, offset: int) -> None:
        """Re-read a partition from ``offset``. faust's own ``seek`` calls aiokafka from
        the wrong thread (its fetcher then crashes on a KeyError); ``seek_wait`` runs in
        the consumer's thread."""
        await app.consumer.seek_wait({TP(topic, partition): offset})

    scoring = _scoring(app, settings) if settings.drift.enabled else None
    aggregator = Aggregator(settings, tables["stage2"], sources=partitions,
                            flush=flush_producer, seek=seek, scoring=scoring)

    alerting = (_alerting(app, settings, metrics_topic, aggregator.owned, aggregator.settled,
                          seek)
                if settings.alerts.rules else None)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **kwargs: Any) -> None:
        await aggregator.revoke([(tp.topic, tp.partition) for tp in revoked])
        if alerting is not None:  # as for the aggregator: let the batch in flight finish
            async with alerting.lock:
                alerting.revoke(tp.partition for tp in revoked
                                if tp.topic == settings.topics.metrics)
            await flush_producer()

    @app.on_rebalance_complete.connect
    async def on_rebalance_complete(app: faust.App, **kwargs: Any) -> None:
        # tables are recovered by now: load every assigned source partition's windows
        assignment = app.consumer.assignment()
        await aggregator.adopt((tp.topic, tp.partition) for tp in assignment)
        if alerting is not None:
            alerting.adopt(tp.partition for tp in assignment
                           if tp.topic == settings.topics.metrics)

    async def send_metrics(kind: str, result: WindowMetrics | ResourceMetrics) -> Any:
        """WindowMetrics keyed by series, ResourceMetrics by host; the header names which."""
        key = result.series_key if isinstance(result, WindowMetrics) else result.host
        return await metrics_topic.send(key=key.encode(), value=_JSON.encode(result), headers=[
            ("content-type", b"application/json"),
            (CONTRACT_HEADER, type(result).__name__.encode()),
        ])

    async def send_scores(scores: WindowScores) -> Any:
        return await scores_topic.send(key=scores.series_key.encode(), value=_JSON.encode(scores),
                                       headers=[("content-type", b"application/json"),
                                                (CONTRACT_HEADER, b"WindowScores")])

    async def send_letter(letter: DeadLetter) -> Any:
        return await (await dlq_topic.send(key=letter.key, value=letter.value,
                                           headers=letter.headers))

    async def send_dead_letters(letters: list[DeadLetter]) -> None:
        """Deliver every DLQ record before the batch is acked: nothing is lost, nothing
        sent twice, and one the broker refuses for its size goes as a bounded reference."""
        stats.dlq_replaced += await deliver(letters, send_letter)
        stats.dead_letters += len(letters)

    def failure_letter(exc: Exception, raw: bytes, topic: str, partition: int, offset: int,
                       key: bytes | None = None, headers: Any = None) -> DeadLetter:
        """The DLQ record for a message (or record) that failed past decoding."""
        stats.rejected["internal"] += 1
        log.error("%s[%d]@%d failed (%s): to the DLQ", topic, partition, offset, describe(exc))
        return dead_letter(Rejection("internal", describe(exc), raw), key=key,
                           headers=headers or [("content-type", b"application/json")],
                           topic=topic, partition=partition, offset=offset,
                           max_bytes=dlq_bytes)

    @app.agent(partials_topic, name="finalize")
    async def finalize(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(
            worker.process_batch_size, within=worker.process_batch_seconds
        ):
            by_partition: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
            for event in batch:
                message = event.message
                by_partition[message.partition].append((message.offset, message.value or b""))
            failed: list[tuple[int, int, bytes, Exception]] = []
            await aggregator.add_partials(by_partition, send_metrics, send_scores, failed)
            if failed:
                messages = {(e.message.partition, e.message.offset): e for e in batch}
                await send_dead_letters([
                    failure_letter(exc, raw, settings.topics.partials, partition, offset,
                                   messages[partition, offset].message.key,
                                   messages[partition, offset].headers)
                    for partition, offset, raw, exc in failed])


    @app.timer(interval=10.0)
    async def report() -> None:
        alerts = f"; {alerting.summary()}" if alerting is not None else ""
        log.info("processing: %s; %s%s", stats.summary(), aggregator.summary(), alerts)

    return app


def _scoring(app: faust.App, settings: Settings) -> Scoring:
    """Drift and anomaly scoring in stage 2: the monitors' table and the pinned baselines."""
    table = app.tables.add(PartitionKeyedTable(
        app, name="monitors", default=None, beacon=app.tables.beacon,
        partitions=settings.topics.partitions, key_type=str, value_type=bytes,
        help="drift reference, detectors and anomaly scorer per series, "
             "keyed '<partition>|<series key>'",
    ))
    pinned = PinnedReferences()
    scoring = Scoring(settings, table, pinned)

    @app.task
    async def follow_baselines() -> None:  # a broker hiccup must not stop baselines
        await forever("reading baselines", lambda: follow_pinned(settings, pinned))

    return scoring


def _alerting(app: faust.App, settings: Settings, metrics_topic: Any,
              owned: set[tuple[str, int]], settled: asyncio.Event,
              seek: Callable[[str, int, int], Awaitable[None]]) -> AlertStage:
    """The alert agent on the metrics topic, its state table and the silences reader."""
    rules = load_rules(settings.alerts.rules)  # RuleError names file:line:col
    table = app.tables.add(PartitionKeyedTable(
        app, name="alerts", default=None, beacon=app.tables.beacon,
        partitions=settings.topics.partitions, key_type=str, value_type=bytes,
        help="alert state per series, keyed '<partition>|<series key>'",
    ))
    stage = AlertStage(settings, rules, table)
    alerts_topic = app.topic(settings.topics.alerts, key_serializer="raw", value_serializer="raw")
    encode = msgspec.json.Encoder().encode
    worker = settings.worker

    async def send(event: AlertEvent) -> Any:
        return await alerts_topic.send(key=event.fingerprint.encode(), value=encode(event),
                                       headers=[("content-type", b"application/json")])

    metrics = settings.topics.metrics
    read = stage.read  # last metrics offset evaluated per partition (in memory)
    gaps = GapGuard()

    @app.agent(metrics_topic, name="alert")
    async def alert(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(
            worker.process_batch_size, within=worker.process_batch_seconds
        ):
            await settled.wait()  # ownership is known (see Aggregator.settled)
            by_partition: dict[int, list[Any]] = defaultdict(list)
            for event in batch:
                if (metrics, event.message.partition) in owned:  # else: moved mid-batch
                    by_partition[event.message.partition].append(event)
            windows: dict[int, list[WindowMetrics]] = defaultdict(list)
            for partition, events in by_partition.items():
                offsets = [e.message.offset for e in events]
                done = read.get(partition, -1)
                admitted = admit(gaps, metrics, partition, done, offsets)
                if admitted.take:
                    read[partition] = max(offsets[admitted.take - 1], done)
                if admitted.seek is not None:  # a window faust never delivered: re-read
                    await seek(metrics, partition, admitted.seek)
                for event in events[:admitted.take]:
                    headers = dict(event.headers or {})
                    if headers.get(CONTRACT_HEADER, b"WindowMetrics") == b"WindowMetrics":
                        try:
                            windows[partition].append(_WINDOW.decode(event.message.value))
                        except Exception as exc:  # the sink dead-letters it; go on
                            log.warning("%s[%d]@%d is not a WindowMetrics (%s): skipped",
                                        metrics, partition, event.message.offset,
                                        describe(exc))
            await stage.evaluate(windows, send)

    @app.timer(interval=settings.metrics.window_seconds)
    async def resolve_stale_series() -> None:
        if app.rebalancing:
            return
        try:
            await stage.sweep(send)
        except Exception:  # a timer that raises crashes the worker: log, retry next time
            log.exception("resolving stale alert series failed; retrying")

    @app.task
    async def follow_silences() -> None:  # a broker hiccup must not stop silences
        await forever("reading silences", lambda: read_silences(settings, stage.silences))

    log.info("alerting with %d rules from %s", len(rules), settings.alerts.rules)
    return stage
