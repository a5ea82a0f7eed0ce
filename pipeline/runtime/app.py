"""The alert agent, the last faust part of the processing role.

Stage 1 and stage 2 run on the runtime's own consumers (:mod:`pipeline.runtime.consumer`);
with ``alerts.rules`` set, this faust app evaluates the rules per series on
``inferwatch.metrics`` (see :mod:`pipeline.runtime.alerting`) and publishes
``AlertEvent``s on ``inferwatch.alerts``. It follows the stages onto the runtime next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
import msgspec
from faust.types import TP

from pipeline.alerting.rules import load_rules
from pipeline.config import Settings
from pipeline.runtime.alerting import AlertStage, read_silences
from pipeline.runtime.kafka import faust_broker_options
from pipeline.runtime.offsets import Admitted, GapGuard
from pipeline.runtime.retry import forever
from pipeline.sources.codec import describe
from schemas.alert import AlertEvent
from schemas.metrics import CONTRACT_HEADER, WindowMetrics

__all__ = ["build_app"]

log = logging.getLogger(__name__)
_WINDOW = msgspec.json.Decoder(WindowMetrics)


class PartitionKeyedTable(faust.Table):
    """A table whose key names its changelog partition: ``"<partition>|<rest>"``.

    faust picks a changelog partition from the *current event*, which inside a batch
    (``take_events``) may belong to another partition; the key is unambiguous.
    """

    def partition_for_key(self, key: Any) -> int:
        return int(str(key).split("|", 1)[0])


def admit(gaps: GapGuard, topic: str, partition: int, done: int,
          offsets: list[int]) -> Admitted:
    """:meth:`GapGuard.admit` for a stage whose state covers ``topic[partition]`` up to
    offset ``done`` (-1: nothing yet), with the gap and the give-up logged."""
    admitted = gaps.admit((topic, partition), done + 1 if done >= 0 else None, offsets,
                          time.monotonic())
    if admitted.seek is not None:
        log.warning("%s[%d]: offset %d never arrived (got %d next): re-reading from it",
                    topic, partition, admitted.seek, offsets[admitted.take])
    if admitted.skipped:
        log.error("%s[%d]: %d offsets missing after repeated re-reads: skipped",
                  topic, partition, admitted.skipped)
    return admitted


def build_app(settings: Settings) -> faust.App:
    """The faust app of the alert agent (``settings.alerts.rules`` must be set)."""
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
        table_standby_replicas=0,
        broker_session_timeout=worker.session_timeout_seconds,
        consumer_group_instance_id=worker.instance_id or None,  # static membership (KIP-345)
        producer_acks=-1,
        producer_max_request_size=8 << 20,
        stream_wait_empty=False,
        broker_client_id=settings.kafka.client_id,
    )
    metrics_topic = app.topic(settings.topics.metrics, key_serializer="raw",
                              value_serializer="raw")
    owned: set[tuple[str, int]] = set()
    # Set while no rebalance is in progress: a batch fetched before a rebalance waits for
    # it, so it never drops (and acks) messages of a partition that comes straight back.
    settled = asyncio.Event()

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

    alerting = _alerting(app, settings, metrics_topic, owned, settled, seek)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **kwargs: Any) -> None:
        settled.clear()
        async with alerting.lock:  # let the batch in flight finish
            for tp in revoked:
                owned.discard((tp.topic, tp.partition))
            alerting.revoke(tp.partition for tp in revoked
                            if tp.topic == settings.topics.metrics)
        await flush_producer()

    @app.on_rebalance_complete.connect
    async def on_rebalance_complete(app: faust.App, **kwargs: Any) -> None:
        assignment = app.consumer.assignment()
        owned.update((tp.topic, tp.partition) for tp in assignment)
        alerting.adopt(tp.partition for tp in assignment
                       if tp.topic == settings.topics.metrics)
        settled.set()

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info("alerting: %s", alerting.summary())

    return app


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
