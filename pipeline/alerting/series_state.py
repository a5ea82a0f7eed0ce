"""The state the evaluator keeps per series: each rule's alert on it (lifecycle, count
history, what its annotations were rendered from), the plan of rules that match it, and
the :class:`Checkpoint` of what changed since it was last saved. Plain data and small
verbs; the evaluation itself is :mod:`pipeline.alerting.evaluator`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.alerting.conditions import Condition
from pipeline.alerting.conditions.base import QuickTest, SumsTest
from pipeline.alerting.history import CountHistory
from pipeline.alerting.lifecycle import Lifecycle, fingerprint
from pipeline.alerting.rules import Rule

__all__ = ["AlertState", "Checkpoint", "Entry", "RulePlan", "SeriesState"]

# per matching rule: rule, name, quick test, shared history key, test on the history's sums
Entry = tuple[Rule, str, "QuickTest | None", str | None, "SumsTest | None"]


class AlertState:
    """State of one rule on one series."""

    __slots__ = ("annotations", "fingerprint", "history", "idle", "labels", "lifecycle",
                 "saved", "shared", "starts", "threshold", "value", "window")

    def __init__(self, rule: Rule, series_labels: Mapping[str, str],
                 shared: CountHistory | None = None) -> None:
        self.fingerprint = fingerprint(rule.name, series_labels)
        self.labels = rule.alert_labels(series_labels)
        self.lifecycle = Lifecycle(rule.for_, rule.keep_firing_for, rule.repeat_interval)
        self.shared = shared is not None  # the series' history, checkpointed with it
        self.history: CountHistory | None = (shared if shared is not None
                                             else rule.condition.new_history())
        # rendered with the last holding evaluation; None: not yet (rendered when read,
        # from value, threshold, window and starts, for templates that read nothing else)
        self.annotations: dict[str, str] | None = {}
        self.value: float | None = None
        self.threshold: float | None = None
        self.window = (0.0, 0.0)
        self.starts: float | None = None  # the episode's start, as the last holding saw it
        self.idle = True  # lifecycle.idle, read once per evaluation
        self.saved = False  # has a checkpoint of its own (to delete when forgotten)

    def to_builtins(self, history: bool = True) -> dict[str, Any]:
        keep = history or not self.shared
        return {
            "lifecycle": self.lifecycle.to_builtins(),
            "history": self.history.to_builtins() if keep and self.history is not None
            else None,
            "annotations": self.annotations,
            "value": self.value,
            "threshold": self.threshold,
            "window": list(self.window),
            "starts": self.starts,
        }

    def restore(self, rule: Rule, data: Mapping[str, Any]) -> None:
        self.lifecycle = Lifecycle.from_builtins(data["lifecycle"], rule.for_,
                                                 rule.keep_firing_for, rule.repeat_interval)
        if self.history is not None and data.get("history") and not self.shared:
            self.history.restore(data["history"])
        annotations = data.get("annotations")
        self.annotations = None if annotations is None and "starts" in data \
            else dict(annotations or {})
        self.starts = data.get("starts")
        self.value = data.get("value")
        self.threshold = data.get("threshold")
        start, end = data.get("window") or (0.0, 0.0)
        self.window = (float(start), float(end))
        self.idle = self.lifecycle.idle


class RulePlan:
    """The rules that match a series, in rule order, with what evaluating them needs;
    one object for every series that the same rules match."""

    __slots__ = ("always", "entries", "index", "quick")

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.index = {entry[1]: i for i, entry in enumerate(entries)}
        self.quick = [(i, entry[2]) for i, entry in enumerate(entries) if entry[2] is not None]
        self.always = [i for i, entry in enumerate(entries) if entry[2] is None]


class SeriesState:
    """One series: its labels and latest window, its alerts by rule name, the count
    histories its rules share, and what changed since its last checkpoint."""

    __slots__ = ("alerts", "awake", "changed", "histories", "histories_changed", "key",
                 "labels", "last_end", "last_version", "plan", "saved")

    def __init__(self, key: str, labels: Mapping[str, str], plan: RulePlan) -> None:
        self.key = key
        self.labels = dict(labels)
        self.last_end = -math.inf
        self.last_version = 0
        self.alerts: dict[str, AlertState] = {}
        self.plan = plan
        # rules (plan indexes) whose alert is evaluated in full whatever the quick test
        # says: pending or firing, or with transitions of its last evaluation to replay
        self.awake: set[int] = set()
        self.changed: set[str] = set()  # alerts whose checkpoint changed (or to delete)
        self.saved = False  # its labels are checkpointed
        # count histories by what they count: rules that count the same share one
        self.histories: dict[str, CountHistory] = {}
        self.histories_changed = False

    def wake(self, name: str, alert: AlertState) -> None:
        """Note whether ``alert`` must be evaluated in full at the next window."""
        i = self.plan.index.get(name)
        if i is None:
            return  # its rule no longer matches the series: never evaluated again
        if alert.idle and not alert.lifecycle.replays():
            self.awake.discard(i)
        else:
            self.awake.add(i)

    def history(self, key: str, condition: Condition) -> CountHistory:
        history = self.histories.get(key)
        if history is None:
            history = self.histories[key] = condition.new_history()  # type: ignore[assignment]
        return history  # type: ignore[return-value]


@dataclass(slots=True)
class Checkpoint:
    """What changed in one series' checkpoint since the last
    :meth:`~pipeline.alerting.evaluator.Evaluator.checkpoint`: its labels when new
    (``series``), the state of each changed alert by rule name (``None``: delete it), the
    count histories its rules share when they changed (every window, for rules that look
    back), and ``gone`` when the series was forgotten (delete all)."""

    series: dict[str, Any] | None = None
    alerts: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    histories: dict[str, dict[str, Any]] | None = None
    gone: bool = False

    def __bool__(self) -> bool:
        return (self.series is not None or bool(self.alerts) or self.histories is not None
                or self.gone)
