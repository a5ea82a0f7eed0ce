"""Receivers as data: where notifications go, chosen by label matchers, as in
Alertmanager's routing tree flattened to one level.

Spec, then runtime: :class:`~pipeline.config.AlertReceiverSettings` (name, kind, urls,
matchers, continue, group_by) builds a :class:`Receiver` with one notifier per URL.
The shorthand settings become receivers first, in this order, each taking every alert
and letting it continue (so they keep behaving as before receivers existed):
``alerts.alertmanager_urls`` → ``alertmanager``, ``alerts.webhook_urls`` → ``webhook``,
``alerts.slack_webhook_url`` → ``slack``.

Routing (:meth:`Router.route`): an alert goes to the first receiver, in order, whose
matchers all match its labels, then on to the next matching one only if that receiver
has ``continue``. Silenced and inhibited alerts go nowhere (they are still published).

Alertmanager receivers also get :meth:`Router.resend`: every firing alert, and the ones
resolved during the last :data:`RESOLVED_RETENTION` seconds, every
``alerts.alertmanager_resend_seconds`` (:class:`Resend`) — Prometheus' contract, which
restores an Alertmanager that restarted without its state and corrects a resolve that
was lost or overtaken by an earlier re-send.

>>> from pipeline.config import AlertReceiverSettings, AlertSettings
>>> settings = AlertSettings(webhook_urls=["http://hook"], receivers=[
...     AlertReceiverSettings(name="pager", kind="alertmanager", urls=["http://am1:9093",
...         "http://am2:9093"], matchers=['severity="critical"']),
...     AlertReceiverSettings(name="chat", kind="slack", urls=["https://hooks.slack/x"])])
>>> router = Router(build_receivers(settings))
>>> [(r.name, r.kind, len(r.notifiers)) for r in router.receivers]
[('webhook', 'webhook', 1), ('pager', 'alertmanager', 2), ('chat', 'slack', 1)]
>>> from schemas.alert import AlertEvent
>>> def alert(severity):
...     return AlertEvent(fingerprint="0123456789abcdef", rule="R", state="firing",
...                       severity=severity, labels={"alertname": "R", "severity": severity},
...                       window_start=0.0, window_end=60.0, starts_at=60.0)
>>> {name: len(events) for name, events in router.route([alert("critical")]).items()}
{'webhook': 1, 'pager': 1}
>>> {name: len(events) for name, events in router.route([alert("info")]).items()}
{'webhook': 1, 'chat': 1}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pipeline.alerting.grouping import AlertGroup, group
from pipeline.alerting.matchers import LabelMatcher, compile_matchers, parse_matcher
from pipeline.alerting.notify.alertmanager import AlertmanagerWebhook
from pipeline.alerting.notify.alertmanager_api import AlertmanagerAPI
from pipeline.alerting.notify.base import Notifier
from pipeline.alerting.notify.slack import SlackWebhook
from pipeline.config import AlertReceiverSettings, AlertSettings
from schemas.alert import AlertEvent

__all__ = ["MAX_BATCH", "RESOLVED_RETENTION", "Receiver", "Resend", "Router",
           "build_receivers", "receiver_specs"]

MAX_BATCH = 256  # alerts per Alertmanager API request (Prometheus' batch size)
RESOLVED_RETENTION = 900.0  # resolved alerts re-sent for 15 minutes (as Prometheus)


@dataclass(frozen=True, slots=True)
class Receiver:
    """A named receiver: its notifiers (one per URL), its matchers and routing flags."""

    name: str
    kind: str
    notifiers: tuple[Notifier, ...]
    matcher: LabelMatcher
    continue_: bool = False
    group_by: tuple[str, ...] | None = None

    def matches(self, event: AlertEvent) -> bool:
        return self.matcher.matches(event.labels)


def receiver_specs(alerts: AlertSettings) -> list[AlertReceiverSettings]:
    """The shorthand settings as receivers, then the configured receivers, in order.

    >>> [(r.name, r.urls, r.continue_) for r in receiver_specs(
    ...     AlertSettings(slack_webhook_url="https://hooks.slack/x"))]
    [('slack', ['https://hooks.slack/x'], True)]
    """
    shorthands: list[tuple[str, str, list[str]]] = [
        ("alertmanager", "alertmanager", alerts.alertmanager_urls),
        ("webhook", "webhook", alerts.webhook_urls),
        ("slack", "slack", [alerts.slack_webhook_url] if alerts.slack_webhook_url else []),
    ]
    specs = [AlertReceiverSettings(name=name, kind=kind, urls=list(urls),  # type: ignore[arg-type]
                                   continue_=True)
             for name, kind, urls in shorthands if urls]
    return specs + list(alerts.receivers)


def _notifier(spec: AlertReceiverSettings, url: str, alerts: AlertSettings,
              clock: Callable[[], float]) -> Notifier:
    if spec.kind == "alertmanager":
        return AlertmanagerAPI(url, receiver=spec.name,
                               resend_seconds=alerts.alertmanager_resend_seconds,
                               generator_url=alerts.generator_url, clock=clock)
    if spec.kind == "slack":
        return SlackWebhook(url, receiver=spec.name)
    return AlertmanagerWebhook(url, receiver=spec.name, generator_url=alerts.generator_url)


def build_receivers(alerts: AlertSettings, *, clock: Callable[[], float] = time.time
                    ) -> list[Receiver]:
    """Receivers from the settings (validated when the settings were loaded)."""
    return [Receiver(name=spec.name, kind=spec.kind,
                     notifiers=tuple(_notifier(spec, url, alerts, clock) for url in spec.urls),
                     matcher=compile_matchers(parse_matcher(m) for m in spec.matchers),
                     continue_=spec.continue_,
                     group_by=None if spec.group_by is None else tuple(spec.group_by))
            for spec in receiver_specs(alerts)]


class Router:
    """Routes alert events to receivers and turns them into requests to send.

    ``group_by`` groups webhook and Slack notifications of receivers that set none (the
    rule files' ``group_by``); an Alertmanager gets flat batches and groups by itself.
    """

    def __init__(self, receivers: Sequence[Receiver],
                 group_by: Sequence[str] = ("alertname",)) -> None:
        self.receivers = tuple(receivers)
        self.group_by = tuple(group_by)
        self.alertmanagers = tuple(r for r in self.receivers if r.kind == "alertmanager")

    def __bool__(self) -> bool:
        return bool(self.receivers)

    def route(self, events: Iterable[AlertEvent]) -> dict[str, list[AlertEvent]]:
        """Receiver name → its events (receivers in order; muted events go nowhere)."""
        out: dict[str, list[AlertEvent]] = {}
        for event in events:
            if event.silenced or event.inhibited:
                continue
            for receiver in self.receivers:
                if receiver.matches(event):
                    out.setdefault(receiver.name, []).append(event)
                    if not receiver.continue_:
                        break
        return {r.name: out[r.name] for r in self.receivers if r.name in out}

    def requests(self, events: Iterable[AlertEvent], *, kinds: Sequence[str] | None = None
                 ) -> list[tuple[Notifier, AlertGroup]]:
        """(notifier, group) pairs announcing ``events``: every URL of every receiver
        they are routed to (each Alertmanager of an HA pair gets every alert), only
        receivers of ``kinds`` when given."""
        by_name = {r.name: r for r in self.receivers}
        out: list[tuple[Notifier, AlertGroup]] = []
        for name, routed in self.route(events).items():
            receiver = by_name[name]
            if kinds is not None and receiver.kind not in kinds:
                continue
            for g in self._groups(receiver, routed):
                out += [(n, g) for n in receiver.notifiers]
        return out

    def resend(self, events: Iterable[AlertEvent]) -> list[tuple[Notifier, AlertGroup]]:
        """The re-send: :meth:`requests` kept to the Alertmanager receivers, routed by every
        receiver, so an alert an earlier receiver stops is not re-sent either."""
        return self.requests(events, kinds=("alertmanager",))

    def _groups(self, receiver: Receiver, events: list[AlertEvent]) -> list[AlertGroup]:
        if receiver.kind == "alertmanager":
            ordered = sorted(events, key=lambda e: (e.fingerprint, e.starts_at))
            return [AlertGroup("{}", {}, tuple(ordered[i:i + MAX_BATCH]))
                    for i in range(0, len(ordered), MAX_BATCH)]
        return group(events, receiver.group_by or self.group_by)


class Resend:
    """When to re-send to Alertmanager, and the recently resolved alerts to re-send too.

    >>> r = Resend(60.0)
    >>> r.due(1000.0), r.due(1030.0), r.due(1060.0)
    (True, False, True)
    >>> resolved = AlertEvent(fingerprint="0123456789abcdef", rule="R", state="resolved",
    ...                       severity="info", window_start=0.0, window_end=60.0,
    ...                       starts_at=0.0, ends_at=60.0)
    >>> r.observe([resolved], now=1000.0)
    >>> [e.state for e in r.batch([], now=1800.0)], r.batch([], now=1901.0)
    (['resolved'], [])
    """

    def __init__(self, interval: float, retention: float = RESOLVED_RETENTION) -> None:
        self.interval = interval
        self.retention = retention
        self._next = 0.0
        self._resolved: dict[str, tuple[float, AlertEvent]] = {}  # fingerprint -> (when, event)

    def due(self, now: float) -> bool:
        """Whether a re-send is due at ``now`` (then the next one is an interval later)."""
        if now < self._next:
            return False
        self._next = now + self.interval
        return True

    def soon(self) -> None:
        """Re-send at the next chance (alerts were just restored from the changelog)."""
        self._next = 0.0

    def observe(self, events: Iterable[AlertEvent], now: float) -> None:
        """Remember resolutions (a new firing of the same alert replaces its resolution)."""
        for e in events:
            if e.state == "resolved":
                self._resolved[e.fingerprint] = (now, e)
            elif not e.repeat:
                self._resolved.pop(e.fingerprint, None)

    def batch(self, firing: Iterable[AlertEvent], now: float) -> list[AlertEvent]:
        """``firing`` plus the resolutions remembered for less than ``retention``."""
        self._resolved = {fp: (t, e) for fp, (t, e) in self._resolved.items()
                          if now - t <= self.retention}
        alerts = list(firing)
        live = {e.fingerprint for e in alerts}
        return alerts + [e for fp, (_, e) in sorted(self._resolved.items()) if fp not in live]
