"""Grouping: alerts with equal values of the ``group_by`` labels go out in one notification
(Alertmanager semantics; ``...`` groups by every label, so each alert alone).

>>> from schemas.alert import AlertEvent
>>> def ev(fp, model, state="firing"):
...     return AlertEvent(fingerprint=fp, rule="R", state=state, severity="warning",
...                       labels={"alertname": "R", "model": model, "severity": "warning"},
...                       window_start=0.0, window_end=60.0, starts_at=60.0)
>>> groups = group([ev("a" * 16, "m1"), ev("b" * 16, "m2"), ev("c" * 16, "m1")],
...                ["alertname", "model"])
>>> [(g.key, len(g.alerts)) for g in groups]
[('{}:{alertname="R", model="m1"}', 2), ('{}:{alertname="R", model="m2"}', 1)]
>>> groups[0].status, groups[0].common_labels()["model"]
('firing', 'm1')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from schemas.alert import AlertEvent

__all__ = ["AlertGroup", "group", "group_key"]


def group_key(labels: Mapping[str, str]) -> str:
    """Alertmanager-style key of a group: ``{}:{name="value", …}`` sorted by name."""
    inner = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{}:{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True, slots=True)
class AlertGroup:
    """Alerts notified together; ``labels`` are the group's values of ``group_by``."""

    key: str
    labels: Mapping[str, str]
    alerts: tuple[AlertEvent, ...]

    @property
    def status(self) -> str:
        """``firing`` when any alert of the group fires, else ``resolved``."""
        return "firing" if any(a.state == "firing" for a in self.alerts) else "resolved"

    def common_labels(self) -> dict[str, str]:
        """Labels every alert of the group has, with the same value."""
        return _common([a.labels for a in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}


def group(events: Iterable[AlertEvent], by: Sequence[str], *,
          include_muted: bool = False) -> list[AlertGroup]:
    """Groups of ``events`` by the ``by`` labels, sorted by key; alerts by fingerprint.

    Silenced and inhibited events are left out unless ``include_muted``.
    """
    groups: dict[str, tuple[dict[str, str], list[AlertEvent]]] = {}
    for e in events:
        if not include_muted and (e.silenced or e.inhibited):
            continue
        every = "..." in by
        labels = dict(e.labels) if every else {n: e.labels[n] for n in by if n in e.labels}
        key = group_key(labels)
        groups.setdefault(key, (labels, []))[1].append(e)
    return [AlertGroup(k, labels, tuple(sorted(alerts, key=lambda a: (a.fingerprint,
                                                                       a.starts_at))))
            for k, (labels, alerts) in sorted(groups.items())]
