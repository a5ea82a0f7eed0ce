"""Alert contracts: :class:`AlertEvent` on ``inferwatch.alerts`` and :class:`Silence`.

One :class:`AlertEvent` is published, keyed by ``fingerprint``, for every transition of an
alert of one rule on one series: ``firing`` when the condition has held for the rule's
``for``, ``resolved`` when it stopped holding (after ``keep_firing_for``). While firing, a
rule with a ``repeat_interval`` re-publishes the firing event with ``repeat=True``: that is a
reminder for notifiers, not a new transition. ``(fingerprint, state, starts_at, repeat)``
identifies an event, so a consumer may deduplicate a redelivery on it.

``labels`` are the alert's labels — the series labels, then the rule's labels, then
``alertname`` and ``severity`` — and are what silences, inhibition and grouping match on;
``series_labels`` are the series' own labels, unchanged. Times are Unix seconds (event
time: the end of the window that caused the transition).

Evolution rules as for the event contract: new fields get defaults, types never change.

>>> import msgspec
>>> e = AlertEvent(fingerprint="0123456789abcdef", rule="HighP99Latency", state="firing",
...                severity="warning", labels={"alertname": "HighP99Latency", "model": "m"},
...                window_start=50.0, window_end=60.0, starts_at=60.0, value=2500.0)
>>> msgspec.json.decode(msgspec.json.encode(e), type=AlertEvent) == e
True
>>> s = Silence(id="s1", matchers=[Matcher(name="model", value="m")], starts_at=0.0,
...             ends_at=7200.0, created_by="ops", comment="deploy")
>>> msgspec.json.decode(msgspec.json.encode(s), type=Silence).matchers[0].op
'='
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.bounds import EpochSeconds

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "AlertEvent",
    "AlertStatus",
    "MatchOp",
    "Matcher",
    "Severity",
    "Silence",
]

ALERT_SCHEMA_VERSION = 1

Severity = Literal["critical", "warning", "info"]
AlertStatus = Literal["firing", "resolved"]
MatchOp = Literal["=", "!=", "=~", "!~"]

Fingerprint = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
LabelName = Annotated[str, msgspec.Meta(pattern="^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
# Silences are not stored in ClickHouse (a compacted topic keeps them): a wider range.
SilenceSeconds = Annotated[float, msgspec.Meta(ge=0.0, le=1e11)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]


class AlertEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One transition (or ``repeat`` reminder) of the alert of one rule on one series.

    ``value`` is what the rule measured at the transition (e.g. the p99, the Wilson lower
    bound of the error rate, the burn rate) and ``threshold`` what it was compared with;
    either is ``None`` when unknown. ``ends_at`` is set on ``resolved`` events only.
    ``silenced_by`` lists silence ids, ``inhibited_by`` fingerprints of the muting alerts:
    muted alerts are still published, flagged, so the record is complete.
    """

    schema_version: Annotated[int, msgspec.Meta(ge=1)] = ALERT_SCHEMA_VERSION

    # identity
    fingerprint: Fingerprint
    rule: Name
    state: AlertStatus
    severity: Severity
    repeat: bool = False

    # what it is about
    series_key: str = ""
    series_labels: dict[str, str] = {}
    labels: dict[str, str] = {}
    annotations: dict[str, Text] = {}

    # what was measured
    value: float | None = None
    threshold: float | None = None
    window_start: EpochSeconds
    window_end: EpochSeconds

    # episode
    starts_at: EpochSeconds
    ends_at: EpochSeconds | None = None

    # muting
    silenced: bool = False
    silenced_by: list[str] = []
    inhibited: bool = False
    inhibited_by: list[str] = []


class Matcher(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """``name op value`` on one label. A missing label has the value ``""``; regular
    expressions (``=~``, ``!~``) are anchored at both ends, as in Alertmanager."""

    name: LabelName
    op: MatchOp = "="
    value: Annotated[str, msgspec.Meta(max_length=1024)] = ""


class Silence(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Mutes notifications of alerts whose labels match every matcher, during
    ``[starts_at, ends_at)``. Expiring a silence sets ``ends_at`` to the time of expiry."""

    id: Name
    matchers: Annotated[list[Matcher], msgspec.Meta(min_length=1, max_length=64)]
    starts_at: SilenceSeconds
    ends_at: SilenceSeconds
    created_by: Annotated[str, msgspec.Meta(max_length=256)] = ""
    comment: Annotated[str, msgspec.Meta(max_length=4096)] = ""
