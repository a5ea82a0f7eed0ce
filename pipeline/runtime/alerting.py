"""Glue between faust and the alert evaluator: per-series state, silences, notifications.

The ``alert`` agent reads ``inferwatch.metrics`` (keyed by series, so a series' windows
arrive in order at one worker), runs :class:`~pipeline.alerting.evaluator.Evaluator`
on each ``WindowMetrics`` and publishes every transition as an ``AlertEvent`` on
``inferwatch.alerts``, keyed by fingerprint. Each series' alert state is written to a
changelog-backed table keyed ``"<partition>|<series key>"`` after its window is
evaluated, so a crash neither re-fires nor forgets a firing alert, and the state
moves with the series on rebalance.

Silences live on a compacted topic (``inferwatch.silences``, key = silence id) that
every worker reads from the start: durable, shared, and written by ``inferwatch
silence``. Notifications go to webhooks in the background; a slow or failing receiver
is retried, counted, and never blocks the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
import msgspec

from pipeline.alerting.evaluator import Evaluator
from pipeline.alerting.grouping import group
from pipeline.alerting.notify.alertmanager import AlertmanagerWebhook
from pipeline.alerting.notify.base import Notifier
from pipeline.alerting.notify.sender import WebhookSender
from pipeline.alerting.notify.slack import SlackWebhook
from pipeline.alerting.rules import RuleSet
from pipeline.alerting.silences import Silences
from pipeline.config import Settings
from pipeline.runtime.follower import follow as follow_topic
from pipeline.runtime.kafka import send_one
from schemas.alert import AlertEvent, Silence
from schemas.metrics import WindowMetrics

__all__ = ["AlertStage", "publish_silence", "read_silences"]

log = logging.getLogger(__name__)
_JSON = msgspec.json.Encoder()
_SILENCE = msgspec.json.Decoder(Silence)
_STATE = msgspec.msgpack.Encoder()
_STATE_DEC = msgspec.msgpack.Decoder()

Send = Callable[[AlertEvent], Awaitable[Any]]


class AlertStage:
    """Alert evaluation for the series of the metrics partitions this worker owns."""

    def __init__(self, settings: Settings, rules: RuleSet, table: faust.Table) -> None:
        self.settings = settings
        self.rules = rules
        self.table = table
        self.silences = Silences()
        self.evaluator = Evaluator(rules, self.silences)
        self.series: dict[int, set[str]] = {}  # partition → series keys loaded
        self.sender = WebhookSender()
        alerts = settings.alerts
        self.notifiers: list[Notifier] = [AlertmanagerWebhook(url) for url in alerts.webhook_urls]
        if alerts.slack_webhook_url:
            self.notifiers.append(SlackWebhook(alerts.slack_webhook_url))
        self.published = 0
        self.lock = asyncio.Lock()  # the agent and the sweep timer share the evaluator
        self.read: dict[int, int] = {}  # last metrics offset taken, per owned partition
        # series key -> (window end, rule variables) of its latest scored window
        self.scores: dict[str, tuple[float, dict[str, float]]] = {}

    def _load(self, partition: int) -> set[str]:
        keys = self.series.get(partition)
        if keys is None:
            prefix = f"{partition}|"
            keys = set()
            for key, raw in list(self.table.items()):
                if str(key).startswith(prefix):
                    series_key = str(key)[len(prefix):]
                    self.evaluator.restore(series_key, _STATE_DEC.decode(raw))
                    keys.add(series_key)
            self.series[partition] = keys
        return keys

    def adopt(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._load(partition)

    def revoke(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.read.pop(partition, None)
            for series_key in self.series.pop(partition, set()):
                self.evaluator.forget(series_key)
                self.scores.pop(series_key, None)

    async def evaluate(self, batches: dict[int, list[WindowMetrics]], send: Send) -> int:
        """Evaluate the rules on each window, publish transitions, then checkpoint the series.

        Publishing before the checkpoint means a crash in between republishes the same
        event (same fingerprint and starts_at) rather than losing it.
        """
        async with self.lock:
            return await self._evaluate(batches, send)

    async def _evaluate(self, batches: dict[int, list[WindowMetrics]], send: Send) -> int:
        now = time.time()
        events: list[AlertEvent] = []
        touched: dict[str, int] = {}
        for partition, windows in batches.items():
            self._load(partition)
            for metrics in sorted(windows, key=lambda m: (m.window_end, m.version)):
                scores = metrics.scores
                last = self.scores.get(metrics.series_key)
                if scores:  # the first emission of a window carries its drift/anomaly scores
                    self.scores[metrics.series_key] = (metrics.window_end, scores)
                elif last is not None and last[0] == metrics.window_end:
                    scores = last[1]  # a correction of that window: same scores
                events.extend(self.evaluator.evaluate(metrics, scores, now=now))
                touched[metrics.series_key] = partition
        if events:
            await asyncio.gather(*[await send(e) for e in events])
            self.published += len(events)
            self.notify(events)
        for series_key, partition in touched.items():
            state = self.evaluator.state(series_key)
            if state is not None:
                self.table[f"{partition}|{series_key}"] = _STATE.encode(state)
                self.series[partition].add(series_key)
        return len(events)

    async def sweep(self, send: Send) -> int:
        """Resolve the alerts of series that stopped sending windows; forget quiet ones.

        A series whose traffic stops produces no window, so without this its alert
        would fire forever. Runs on a timer, in wall-clock time.
        """
        async with self.lock:
            return await self._sweep(send)

    async def _sweep(self, send: Send) -> int:
        metrics = self.settings.metrics
        stale_after = (self.settings.alerts.stale_after_windows * metrics.window_seconds
                       + metrics.lateness_seconds)
        before = set(self.evaluator.series_keys())
        events = self.evaluator.sweep(time.time(), stale_after)
        if events:
            await asyncio.gather(*[await send(e) for e in events])
            self.published += len(events)
            self.notify(events)
        gone = before - set(self.evaluator.series_keys())
        for partition, keys in self.series.items():
            for series_key in keys & ({e.series_key for e in events} | gone):
                name = f"{partition}|{series_key}"
                state = self.evaluator.state(series_key)
                if state is not None:
                    self.table[name] = _STATE.encode(state)
                elif name in self.table:
                    del self.table[name]
            keys -= gone
        return len(events)

    def notify(self, events: list[AlertEvent]) -> None:
        """Hand groups of unmuted transitions to the webhooks, in the background."""
        if not self.notifiers:
            return
        for alert_group in group(events, self.rules.group_by):
            for notifier in self.notifiers:
                self.sender.submit(notifier, alert_group)

    def summary(self) -> str:
        stats = self.sender.stats
        return (f"alerts: {len(self.evaluator.firing())} firing, {self.published} published, "
                f"{len(self.silences.active(time.time()))} active silences, webhooks sent "
                f"{stats.sent} failed {stats.failed} dropped {stats.dropped}")


async def read_silences(settings: Settings, silences: Silences,
                        stop: asyncio.Event | None = None, follow: bool = True) -> None:
    """Load the silences topic from the start into ``silences``; keep following if asked."""

    def apply(record: Any) -> None:
        if record.value is not None:
            silences.add(_SILENCE.decode(record.value))

    await follow_topic(settings.kafka, settings.topics.silences, apply,
                       keep_following=follow, stop=stop)


async def publish_silence(settings: Settings, silence: Silence) -> None:
    """Write (or overwrite: expire) a silence on the compacted silences topic."""
    await send_one(settings.kafka, settings.topics.silences, silence.id.encode(),
                   _JSON.encode(silence))
