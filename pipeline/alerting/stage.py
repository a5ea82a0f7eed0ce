"""Alerting as the runtime drives it: rules on every window of the owned metrics
partitions, transitions out as ``AlertEvent``s. No I/O (webhooks are handed to a
background sender once the events are acknowledged).

``inferwatch.metrics`` is keyed by series, so a series' windows arrive in order at one
worker. State per metrics partition ``p`` on changelog partition ``p``, written when it
changes (most alerts are idle and stay so window after window):

- ``series|<key>``: a series' labels, written once;
- ``alert|<key>|<rule>``: the state of one alert that left the idle state at some point
  (an alert never written is a fresh one);
- ``history|<key>``: the count histories of the series' rules that look back (shared by
  rules that count the same), written every window they count;
- ``clock|<n>``: the latest window (end, version) of the series hashed to bucket ``n``,
  which moves every window: one small record per bucket touched, not one per series, and
  exact after a restart (it orders corrections and replays, and dates a silent series
  for the sweep);
- ``offset``: the last metrics offset evaluated, written last;
- an outbox of transitions not yet acknowledged by Kafka (``out|<fingerprint>|<at>``).

A transition and the state that made it are checkpointed together, so a crash
re-publishes the same event (same fingerprint and ``starts_at``) instead of losing it or
firing twice. Series that stop sending windows are resolved by the wall-clock sweep in
``on_tick``. A ``series|`` record of the earlier layout (the whole state of the series)
is read back, and rewritten in this layout at the series' next checkpoint.

Notifications (:mod:`pipeline.alerting.receivers`) leave once Kafka acknowledged the
transitions, in the background. Alertmanager receivers also get every firing alert
again every ``alerts.alertmanager_resend_seconds``, from the alert state itself, so the
re-send goes on after a restart or a rebalance (the restored firing alerts are re-sent
at the next tick) and restores an Alertmanager that lost its state.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from pipeline.alerting.evaluator import EVALUATOR_FORMAT, Evaluator
from pipeline.alerting.notify.sender import WebhookSender
from pipeline.alerting.receivers import Resend, Router, build_receivers
from pipeline.alerting.rules import RuleSet
from pipeline.alerting.silences import Silences
from pipeline.config import Settings
from pipeline.quality.versions import VersionBook
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stage import Changes, Output, Step
from pipeline.sources.codec import describe
from pipeline.telemetry import ALERTS
from pipeline.windows.profile import series_key as make_key
from schemas.alert import AlertEvent
from schemas.metrics import CONTRACT_HEADER, WindowMetrics
from schemas.quality import QUALITY_CONTRACT, VERSION_CONTRACT, QualityWindow, VersionSummary

__all__ = ["AlertRuleStage"]

log = logging.getLogger(__name__)
_WINDOW = msgspec.json.Decoder(WindowMetrics)
_QUALITY = msgspec.json.Decoder(QualityWindow)
_VERSIONS = msgspec.json.Decoder(VersionSummary)
_EVENT = msgspec.json.Encoder()
_STATE = msgspec.msgpack.Encoder()
_STATE_DEC = msgspec.msgpack.Decoder()
_HEADERS = (("content-type", b"application/json"),)
_CLOCK_BUCKETS = 64
_CLOCK_SKEW = 60.0  # seconds the wall clocks of an ingest and an alerting worker may differ


def _quality(value: bytes) -> dict[str, Any]:
    """A quality window as rules see it: the series' labels plus ``quality=<basis>``, a
    series of its own (its windows keep their own clock, apart from the request
    windows of the same model)."""
    window = msgspec.structs.asdict(_QUALITY.decode(value))
    labels = {**window["labels"], "quality": window["basis"]}
    window.update(labels=labels, series_key=make_key(labels))
    return window


def _order(m: WindowMetrics | dict[str, Any]) -> tuple[float, int]:
    return (m["window_end"], m["version"]) if isinstance(m, dict) else (m.window_end,
                                                                         m.version)


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
        self.router = Router(build_receivers(settings.alerts), rules.group_by)
        self.resend = Resend(settings.alerts.alertmanager_resend_seconds)
        self.series: dict[int, set[str]] = {}  # partition -> its series
        # the versions of each model side by side, for version comparison rules
        self.versions = VersionBook(settings.quality.compare_seconds)
        self.models: dict[int, set[str]] = {}  # partition -> its model keys
        self.scores: dict[str, tuple[float, dict[str, float]]] = {}  # latest scored window
        self.outbox = Outbox("out|")
        # partition -> clock bucket -> series -> [end, version], as last written
        self._clocks: dict[int, dict[int, dict[str, list[float]]]] = {}
        self._next_sweep = 0.0
        self._done: dict[int, int] = {}  # last metrics offset evaluated, per partition
        self.published = 0
        self.from_the_future = 0  # windows skipped: ending past what ingest lets through

    # ------------------------------------------------------------------ partitions
    def on_assign(self, topic: str, partition: int, state: dict[str, bytes]) -> int | None:
        headers: dict[str, dict[str, Any]] = {}
        alerts: dict[str, dict[str, Any]] = defaultdict(dict)
        histories: dict[str, dict[str, Any]] = {}
        clocks: dict[int, dict[str, list[float]]] = {}
        for name, raw in state.items():
            kind, _, rest = name.partition("|")
            if kind == "series":
                headers[rest] = _STATE_DEC.decode(raw)
            elif kind == "alert":
                series_key, _, rule = rest.rpartition("|")
                alerts[series_key][rule] = _STATE_DEC.decode(raw)
            elif kind == "history":
                histories[rest] = _STATE_DEC.decode(raw)
            elif kind == "clock":
                clocks[int(rest)] = _STATE_DEC.decode(raw)
            elif kind == "versions":
                self.versions.restore(rest, raw)
                self.models.setdefault(partition, set()).add(rest)
        ends = {k: v for bucket in clocks.values() for k, v in bucket.items()}
        for series_key, header in headers.items():
            earlier = "alerts" in header  # the whole state in one record
            data = dict(header) if earlier else {"format": EVALUATOR_FORMAT,
                                                  "labels": header.get("labels") or {}}
            data["alerts"] = {**(data.get("alerts") or {}), **alerts.get(series_key, {})}
            if series_key in histories:
                data["histories"] = histories[series_key]
            if series_key in ends:
                data["last_end"], data["last_version"] = ends[series_key]
            self.evaluator.restore(series_key, data, changed=earlier)
        self.series[partition] = set(headers)
        self._clocks[partition] = {n: {k: v for k, v in bucket.items() if k in headers}
                                   for n, bucket in clocks.items()}
        self.outbox.restore(partition, state)
        self.resend.soon()  # tell Alertmanager about the firing alerts restored
        done = int(state["offset"]) if "offset" in state else -1
        self._done[partition] = done
        return done + 1 if done >= 0 else None  # after the last window evaluated

    def on_revoke(self, topic: str, partition: int) -> None:
        for model in self.models.pop(partition, set()):
            self.versions.forget(model)
        for series_key in self.series.pop(partition, set()):
            self.evaluator.forget(series_key)
            self.scores.pop(series_key, None)
        self.outbox.drop(partition)
        self._clocks.pop(partition, None)
        self._done.pop(partition, None)
        self._count()  # its alerts are another worker's now

    # ------------------------------------------------------------------ windows
    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        windows: list[WindowMetrics | dict[str, Any]] = []
        models_touched: set[str] = set()
        done = self._done.get(partition, -1)
        records = [r for r in records if r.offset > done]  # evaluated before a restart
        if not records:
            return Step()
        self._done[partition] = records[-1].offset
        for record in records:
            contract = dict(record.headers or ()).get(CONTRACT_HEADER, b"WindowMetrics")
            if contract not in (b"WindowMetrics", QUALITY_CONTRACT, VERSION_CONTRACT):
                continue  # ResourceMetrics share the topic
            try:
                if contract == VERSION_CONTRACT:
                    summary = _VERSIONS.decode(record.value or b"")
                    if self._from_the_future(summary.period_end, wall, record, topic):
                        continue
                    windows += self.versions.add(summary)
                    model = VersionBook.model_key(summary.labels)
                    self.models.setdefault(partition, set()).add(model)
                    models_touched.add(model)
                    continue
                window = (_WINDOW.decode(record.value or b"") if contract == b"WindowMetrics"
                          else _quality(record.value or b""))
                if not self._from_the_future(_order(window)[0], wall, record, topic):
                    windows.append(window)
            except Exception as exc:  # the sink dead-letters it; go on
                log.warning("%s[%d]@%d is not a %s (%s): skipped", topic, partition,
                            record.offset, contract.decode(errors="replace"), describe(exc))
        events: list[AlertEvent] = []
        touched: set[str] = set()
        for metrics in sorted(windows, key=_order):
            if isinstance(metrics, dict):  # quality or comparison: a series of its own
                events += self.evaluator.evaluate(metrics, metrics.get("sums"), now=wall)
                touched.add(metrics["series_key"])
                continue
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
        for model in sorted(models_touched):  # the versions' sums behind the comparisons
            step.changes.setdefault(partition, {})[f"versions|{model}"] = \
                self.versions.checkpoint(model)
        step.changes.setdefault(partition, {})["offset"] = str(records[-1].offset).encode()
        if events:
            self._count()
        return step

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        """Every window length: resolve series that stopped sending windows (else their
        alert fires forever), forget quiet ones; re-send a restored outbox. When due,
        re-send the firing alerts to the Alertmanager receivers (after this step's
        outputs are acknowledged, like every notification)."""
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
        changed = self.evaluator.changed()  # the sweep's resolutions, forgotten series
        for partition, keys in self.series.items():
            mine = [e for e in events if e.series_key in keys]
            if mine or keys & changed or self.outbox.pending(partition):
                self._emit(partition, mine, keys & changed, step)
            keys -= gone
        if due:
            self._count()
        if self.router.alertmanagers and self.resend.due(wall):
            firing = self.evaluator.firing(now=wall)  # muted ones are left out by routing
            step.done.append(lambda: self._resend(firing))
        return step

    # ------------------------------------------------------------------ checkpoints
    def _emit(self, partition: int, events: list[AlertEvent], touched: set[str],
              step: Step) -> None:
        """Transitions into the outbox and what changed in the touched series' state, in
        one change set; send what the outbox holds; notify once Kafka acknowledged."""
        changes: Changes = {}
        for event in events:
            name = f"out|{event.fingerprint}|{event.window_end!r}|{event.state}"
            self.outbox.put(partition, name, _EVENT.encode(event), changes)
        clocks = self._clocks.setdefault(partition, {})
        moved: set[int] = set()
        for series_key in touched:
            checkpoint = self.evaluator.checkpoint(series_key)
            for rule, data in checkpoint.alerts.items():  # before a header that replaces
                changes[f"alert|{series_key}|{rule}"] = (  # an earlier layout's record
                    None if data is None else _STATE.encode(data))
            if checkpoint.histories is not None:
                changes[f"history|{series_key}"] = _STATE.encode(checkpoint.histories)
            if checkpoint.gone:
                changes[f"history|{series_key}"] = None
                changes[f"series|{series_key}"] = None
            elif checkpoint.series is not None:
                changes[f"series|{series_key}"] = _STATE.encode(checkpoint.series)
            n = zlib.crc32(series_key.encode()) % _CLOCK_BUCKETS
            bucket = clocks.setdefault(n, {})
            clock = self.evaluator.clock(series_key)
            now = None if clock is None else list(clock)
            if bucket.get(series_key) != now:
                if now is None:
                    bucket.pop(series_key, None)
                else:
                    bucket[series_key] = now
                moved.add(n)
        for n in sorted(moved):
            changes[f"clock|{n}"] = _STATE.encode(clocks[n]) if clocks[n] else None
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
        """Hand transitions to the receivers they are routed to, in the background."""
        if not self.router or not events:
            return
        self.resend.observe(events, time.time())
        for notifier, alert_group in self.router.requests(events):
            self.sender.submit(notifier, alert_group)

    def _resend(self, firing: list[AlertEvent]) -> None:
        """The firing alerts and recent resolutions, again, to every Alertmanager."""
        for notifier, alert_group in self.router.resend(self.resend.batch(firing,
                                                                          time.time())):
            self.sender.submit(notifier, alert_group)

    def _count(self) -> None:
        """The ``inferwatch_alerts`` gauge: alerts pending and firing on this worker."""
        for state, n in self.evaluator.counts().items():
            ALERTS.labels(state).set(n)

    def _from_the_future(self, end: float, wall: float, record: Any, topic: str) -> bool:
        """Whether a window ends past anything ingest lets through (events at most
        ``limits.max_future_seconds`` ahead, plus a window and the workers' clock skew):
        one such record would move a series' clock ahead and freeze its alerts (a window
        older than the clock changes nothing), so it is skipped, with a warning."""
        s = self.settings
        edge = (wall + s.limits.max_future_seconds + _CLOCK_SKEW
                + max(s.metrics.window_seconds, s.quality.window_seconds))
        if end <= edge:
            return False
        self.from_the_future += 1
        log.warning("%s[%d]@%d ends %.0f s from now, past what ingest accepts: skipped",
                    topic, record.partition, record.offset, end - wall)
        return True

    def summary(self) -> str:
        stats = self.sender.stats
        return (f"alerts: {len(self.evaluator.firing())} firing, {self.published} published, "
                f"{len(self.silences.active(time.time()))} active silences, notifications sent "
                f"{stats.sent} failed {stats.failed} dropped {stats.dropped}"
                + (f", windows from the future skipped {self.from_the_future}"
                   if self.from_the_future else ""))
