"""Alerting as the runtime drives it: rules on every window of the owned metrics
partitions, transitions out as ``AlertEvent``s. No I/O (webhooks are handed to a
background sender once the events are acknowledged).

``inferwatch.metrics`` is keyed by series, so a series' windows arrive in order at one
worker. State per metrics partition ``p`` on changelog partition ``p``: each series'
alert state (``series|<key>``) and an outbox of transitions not yet acknowledged by
Kafka (``out|<fingerprint>|<at>``). A transition and the state that made it are
checkpointed together, so a crash re-publishes the same event (same fingerprint and
``starts_at``) instead of losing it or firing twice. Series that stop sending windows
are resolved by the wall-clock sweep in ``on_tick``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

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
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stage import Changes, Output, Step
from pipeline.sources.codec import describe
from schemas.alert import AlertEvent
from schemas.metrics import CONTRACT_HEADER, WindowMetrics

__all__ = ["AlertRuleStage"]

log = logging.getLogger(__name__)
_WINDOW = msgspec.json.Decoder(WindowMetrics)
_EVENT = msgspec.json.Encoder()
_STATE = msgspec.msgpack.Encoder()
_STATE_DEC = msgspec.msgpack.Decoder()
_HEADERS = (("content-type", b"application/json"),)


class AlertRuleStage:
    """Evaluate the rules per series; publish transitions; notify receivers."""

    def __init__(self, settings: Settings, rules: RuleSet,
                 sender: WebhookSender | None = None) -> None:
        self.settings = settings
        self.topics = (settings.topics.metrics,)
        self.rules = rules
        self.silences = Silences()  # kept current by the silences follower
        self.evaluator = Evaluator(rules, self.silences)
        self.sender = sender or WebhookSender()
        alerts = settings.alerts
        self.notifiers: list[Notifier] = [AlertmanagerWebhook(u) for u in alerts.webhook_urls]
        if alerts.slack_webhook_url:
            self.notifiers.append(SlackWebhook(alerts.slack_webhook_url))
        self.series: dict[int, set[str]] = {}  # partition -> its series
        self.scores: dict[str, tuple[float, dict[str, float]]] = {}  # latest scored window
        self.outbox = Outbox("out|")
        self._next_sweep = 0.0
        self._done: dict[int, int] = {}  # last metrics offset evaluated, per partition
        self.published = 0

    # ------------------------------------------------------------------ partitions
    def on_assign(self, topic: str, partition: int, state: dict[str, bytes]) -> int | None:
        keys = set()
        for name, raw in state.items():
            if name.startswith("series|"):
                self.evaluator.restore(name[7:], _STATE_DEC.decode(raw))
                keys.add(name[7:])
        self.series[partition] = keys
        self.outbox.restore(partition, state)
        done = int(state["offset"]) if "offset" in state else -1
        self._done[partition] = done
        return done + 1 if done >= 0 else None  # after the last window evaluated

    def on_revoke(self, topic: str, partition: int) -> None:
        for series_key in self.series.pop(partition, set()):
            self.evaluator.forget(series_key)
            self.scores.pop(series_key, None)
        self.outbox.drop(partition)
        self._done.pop(partition, None)

    # ------------------------------------------------------------------ windows
    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        windows = []
        done = self._done.get(partition, -1)
        records = [r for r in records if r.offset > done]  # evaluated before a restart
        if not records:
            return Step()
        self._done[partition] = records[-1].offset
        for record in records:
            headers = dict(record.headers or ())
            if headers.get(CONTRACT_HEADER, b"WindowMetrics") != b"WindowMetrics":
                continue  # ResourceMetrics share the topic
            try:
                windows.append(_WINDOW.decode(record.value or b""))
            except Exception as exc:  # the sink dead-letters it; go on
                log.warning("%s[%d]@%d is not a WindowMetrics (%s): skipped", topic,
                            partition, record.offset, describe(exc))
        events: list[AlertEvent] = []
        touched: set[str] = set()
        for metrics in sorted(windows, key=lambda m: (m.window_end, m.version)):
            scores = metrics.scores
            last = self.scores.get(metrics.series_key)
            if scores:  # the first emission of a window carries its scores
                self.scores[metrics.series_key] = (metrics.window_end, scores)
            elif last is not None and last[0] == metrics.window_end:
                scores = last[1]  # a correction of that window: the same scores
            events += self.evaluator.evaluate(metrics, scores, now=wall)
            touched.add(metrics.series_key)
        self.series.setdefault(partition, set()).update(touched)
        step = Step()
        self._emit(partition, events, touched, step)
        step.changes.setdefault(partition, {})["offset"] = str(records[-1].offset).encode()
        return step

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        """Every window length: resolve series that stopped sending windows (else their
        alert fires forever), forget quiet ones; re-send a restored outbox."""
        step = Step()
        due = wall >= self._next_sweep
        events: list[AlertEvent] = []
        gone: set[str] = set()
        if due:
            metrics = self.settings.metrics
            self._next_sweep = wall + metrics.window_seconds
            stale_after = (self.settings.alerts.stale_after_windows * metrics.window_seconds
                           + metrics.lateness_seconds)
            before = set(self.evaluator.series_keys())
            events = self.evaluator.sweep(wall, stale_after)
            gone = before - set(self.evaluator.series_keys())
        changed = {e.series_key for e in events} | gone
        for partition, keys in self.series.items():
            mine = [e for e in events if e.series_key in keys]
            if mine or keys & changed or self.outbox.pending(partition):
                self._emit(partition, mine, keys & changed, step)
            keys -= gone
        return step

    # ------------------------------------------------------------------ checkpoints
    def _emit(self, partition: int, events: list[AlertEvent], touched: set[str],
              step: Step) -> None:
        """Transitions into the outbox and the touched series' state, in one change set;
        send what the outbox holds; notify once Kafka acknowledged."""
        changes: Changes = {}
        for event in events:
            name = f"out|{event.fingerprint}|{event.window_end!r}|{event.state}"
            self.outbox.put(partition, name, _EVENT.encode(event), changes)
        for series_key in touched:
            state = self.evaluator.state(series_key)
            changes[f"series|{series_key}"] = None if state is None else _STATE.encode(state)
        if changes:
            step.changes.setdefault(partition, {}).update(changes)
        self.outbox.flush(partition, step, self._output)
        fresh = list(events)

        def done() -> None:
            self.published += len(fresh)
            self._notify(fresh)

        step.done.append(done)

    def _output(self, name: str, record: bytes) -> Output:
        fingerprint = name.split("|", 2)[1]
        return Output(self.settings.topics.alerts, fingerprint.encode(), record,
                      headers=_HEADERS)

    def _notify(self, events: list[AlertEvent]) -> None:
        """Hand groups of transitions to the receivers, in the background."""
        if not self.notifiers or not events:
            return
        for alert_group in group(events, self.rules.group_by):
            for notifier in self.notifiers:
                self.sender.submit(notifier, alert_group)

    def summary(self) -> str:
        stats = self.sender.stats
        return (f"alerts: {len(self.evaluator.firing())} firing, {self.published} published, "
                f"{len(self.silences.active(time.time()))} active silences, webhooks sent "
                f"{stats.sent} failed {stats.failed} dropped {stats.dropped}")
