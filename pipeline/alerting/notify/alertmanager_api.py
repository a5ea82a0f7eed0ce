"""Alerts posted *to* an Alertmanager, as Prometheus does: ``POST /api/v2/alerts`` with a
JSON list of alerts (``labels``, ``annotations``, ``startsAt``, ``endsAt``,
``generatorURL``). Alertmanager then deduplicates, groups, silences, inhibits and routes
them to its own receivers. This is the ``alertmanager`` receiver kind.

The client contract (Prometheus' notifier):

- a firing alert carries an ``endsAt`` a few re-sends ahead (:data:`RESENDS_AHEAD` ×
  the re-send interval): while InferWatch keeps re-sending it (see
  :mod:`pipeline.alerting.receivers`) it stays active; if InferWatch stops (worker gone,
  alert muted here), Alertmanager resolves it by itself rather than keep it forever;
- a resolved alert carries its ``endsAt`` in the past: Alertmanager resolves it now;
- the same labels identify the same alert, so re-sending is idempotent and restores
  Alertmanager's state after it restarted without persistence.

Alertmanager refuses a batch holding an alert with an empty label value or ``endsAt``
before ``startsAt``: empty labels are left out and ``endsAt`` is clamped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipeline.alerting.grouping import AlertGroup
from pipeline.alerting.notify.base import Notifier, rfc3339
from schemas.alert import AlertEvent

__all__ = ["API_PATH", "RESENDS_AHEAD", "AlertmanagerAPI"]

API_PATH = "/api/v2/alerts"
RESENDS_AHEAD = 4  # Prometheus: an alert is valid for 4 × max(eval interval, resend delay)


class AlertmanagerAPI(Notifier):
    """Renders a group of alerts as the body of ``POST /api/v2/alerts``.

    ``url`` is the Alertmanager's base URL (``http://am:9093``, ``/api/v2/alerts`` is
    appended) or the full API URL. ``resend_seconds`` dates a firing alert's ``endsAt``;
    ``clock`` gives "now" (tests pass a fixed one).

    >>> from pipeline.alerting.grouping import group
    >>> e = AlertEvent(fingerprint="0123456789abcdef", rule="R", state="firing",
    ...                severity="warning", labels={"alertname": "R", "severity": "warning",
    ...                "tenant": ""}, annotations={"summary": "s"}, window_start=0.0,
    ...                window_end=60.0, starts_at=1700000000.0)
    >>> am = AlertmanagerAPI("http://am:9093", resend_seconds=60,
    ...                      generator_url="http://ui/alerts/{fingerprint}",
    ...                      clock=lambda: 1700000100.0)
    >>> am.url
    'http://am:9093/api/v2/alerts'
    >>> am.body(group([e], ["alertname"])[0])  # doctest: +NORMALIZE_WHITESPACE
    [{'labels': {'alertname': 'R', 'severity': 'warning'}, 'annotations': {'summary': 's'},
      'startsAt': '2023-11-14T22:13:20Z', 'endsAt': '2023-11-14T22:19:00Z',
      'generatorURL': 'http://ui/alerts/0123456789abcdef'}]
    """

    kind = "alertmanager"

    def __init__(self, url: str, *, receiver: str = "alertmanager", resend_seconds: float = 60.0,
                 generator_url: str = "", clock: Callable[[], float] = time.time) -> None:
        url = url.rstrip("/")
        super().__init__(url if url.endswith(API_PATH) else url + API_PATH, receiver=receiver)
        self.resend_seconds = resend_seconds
        self.generator_url = generator_url
        self.clock = clock

    def alert(self, e: AlertEvent, now: float) -> dict[str, Any]:
        """One alert of the API body, as Alertmanager sees it at ``now``."""
        if e.state == "firing":
            ends = max(now, e.starts_at) + RESENDS_AHEAD * self.resend_seconds
        else:  # in the past (Alertmanager resolves it), never before the start
            ends = max(e.starts_at, min(e.ends_at if e.ends_at is not None else now, now))
        out: dict[str, Any] = {
            "labels": {k: v for k, v in e.labels.items() if v},
            "annotations": dict(e.annotations),
            "startsAt": rfc3339(e.starts_at),
            "endsAt": rfc3339(ends),
        }
        if self.generator_url:
            out["generatorURL"] = self.generator_url.format(fingerprint=e.fingerprint,
                                                            rule=e.rule)
        return out

    def body(self, group: AlertGroup) -> list[dict[str, Any]]:
        now = self.clock()
        return [self.alert(e, now) for e in group.alerts]
