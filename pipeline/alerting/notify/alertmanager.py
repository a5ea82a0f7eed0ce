"""A generic webhook whose JSON body is Alertmanager's webhook format (version 4), so any
receiver written for Alertmanager (PagerDuty bridges, incident tools, custom handlers)
understands InferWatch alerts: the ``webhook`` receiver kind. (Posting alerts *to* an
Alertmanager is :mod:`pipeline.alerting.notify.alertmanager_api`.)"""

from __future__ import annotations

from typing import Any

from pipeline.alerting.grouping import AlertGroup
from pipeline.alerting.notify.base import Notifier, rfc3339
from schemas.alert import AlertEvent

__all__ = ["AlertmanagerWebhook"]


class AlertmanagerWebhook(Notifier):
    """Alertmanager webhook body: ``version``, ``groupKey``, ``truncatedAlerts``,
    ``status``, ``receiver``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
    ``externalURL`` and ``alerts`` (each with ``status``, ``labels``, ``annotations``,
    ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``).

    ``max_alerts`` > 0 truncates the list (the rest counted in ``truncatedAlerts``).
    ``generator_url`` may hold ``{fingerprint}`` and ``{rule}`` (a link to a dashboard).

    >>> from pipeline.alerting.grouping import group
    >>> e = AlertEvent(fingerprint="0123456789abcdef", rule="R", state="firing",
    ...                severity="warning", labels={"alertname": "R", "severity": "warning"},
    ...                annotations={"summary": "s"}, window_start=0.0, window_end=60.0,
    ...                starts_at=1700000000.0)
    >>> body = AlertmanagerWebhook("http://hook", receiver="oncall").body(group([e],
    ...                                                                   ["alertname"])[0])
    >>> body["version"], body["status"], body["groupKey"], body["alerts"][0]["endsAt"]
    ('4', 'firing', '{}:{alertname="R"}', '0001-01-01T00:00:00Z')
    """

    kind = "webhook"

    def __init__(self, url: str, *, receiver: str = "inferwatch", external_url: str = "",
                 generator_url: str = "", max_alerts: int = 0) -> None:
        super().__init__(url, receiver=receiver)
        self.external_url = external_url
        self.generator_url = generator_url
        self.max_alerts = max_alerts

    def _alert(self, e: AlertEvent) -> dict[str, Any]:
        return {
            "status": e.state,
            "labels": dict(e.labels),
            "annotations": dict(e.annotations),
            "startsAt": rfc3339(e.starts_at),
            "endsAt": rfc3339(e.ends_at),
            "generatorURL": self.generator_url.format(fingerprint=e.fingerprint, rule=e.rule)
            if self.generator_url else "",
            "fingerprint": e.fingerprint,
        }

    def body(self, group: AlertGroup) -> dict[str, Any]:
        alerts = list(group.alerts)
        truncated = 0
        if self.max_alerts > 0 and len(alerts) > self.max_alerts:
            truncated = len(alerts) - self.max_alerts
            alerts = alerts[: self.max_alerts]
        return {
            "version": "4",
            "groupKey": group.key,
            "truncatedAlerts": truncated,
            "status": group.status,
            "receiver": self.receiver,
            "groupLabels": dict(group.labels),
            "commonLabels": group.common_labels(),
            "commonAnnotations": group.common_annotations(),
            "externalURL": self.external_url,
            "alerts": [self._alert(e) for e in alerts],
        }
