"""Rule evaluation for series, window by window: the alerting step of stage 2.

:meth:`Evaluator.evaluate` takes one closed window of one series (a ``WindowMetrics`` or
its mapping, plus the series' scores for that window), evaluates every rule whose
``match`` selects the series, advances each alert's :class:`~pipeline.alerting.lifecycle.Lifecycle`
and returns an :class:`~schemas.alert.AlertEvent` per ``firing``, ``repeat`` and
``resolved`` transition, flagged ``silenced`` / ``inhibited``. Pure: no I/O.

Times: the evaluation time is the window's end (event time). Silences are checked at
``now`` (default: that same time). A window older than the series' latest, or a correction
(higher ``version``) of the latest, updates the count history of burn-rate / ``over``
rules but does not move any alert; the same window and version again (a replay after a
crash) returns the same events again (see :mod:`pipeline.alerting.lifecycle`).

Inhibition looks at the alerts firing in this evaluator, i.e. the series of this worker's
partitions: an inhibit rule whose ``equal`` labels include the series-key labels always
sees both alerts; across series on other workers it cannot.

State per series checkpoints with :meth:`Evaluator.state` / :meth:`Evaluator.restore`
(e.g. a changelog-backed table keyed by series key), so alerts survive a crash and move
with the series on rebalance; :meth:`Evaluator.checkpoint` gives only what changed since
the last call (a new series' labels, the alerts whose state changed), and
:meth:`Evaluator.clock` the series' latest window, which moves every window. A series
that stops sending windows is resolved by :meth:`Evaluator.sweep`.

Most alerts are idle (not pending, not firing) and their condition does not hold, which
changes no state: an idle alert whose condition never held is not even kept (it is
created when first needed), and when its condition has a ``quick_test`` (threshold rules,
error-rate bounds without ``over``) a window costs one call of it. Pending and firing
alerts, and those with transitions to replay, are "awake": evaluated in full every
window. Rules whose conditions give the same ``history_key`` (error rates ``over`` the
same lookback, burn rates of the same SLI and windows) share one count history per
series, checkpointed once; the conditions after the first that counts the window may
skip it on their ``sums_test`` of that history. The evaluator asks the condition these
facts (see :class:`~pipeline.alerting.conditions.Condition`), never its type.

>>> from pipeline.alerting.rules import parse_rules
>>> rules = parse_rules('''
... rules:
...   - name: HighP99Latency
...     condition: p99_latency_ms > 2000
...     for: 1m
...     severity: warning
...     annotations: {summary: "p99 {{ value }} ms on {{ labels.model }}"}
... ''')
>>> ev = Evaluator(rules)
>>> def window(end, p99):
...     return {"series_key": "model=m", "labels": {"model": "m"}, "window_start": end - 60,
...             "window_end": end, "requests": 100, "latency_p99_ms": p99}
>>> ev.evaluate(window(60, 2500)), [e.state for e in ev.evaluate(window(120, 2600))]
([], ['firing'])
>>> e = ev.evaluate(window(180, 900))[0]
>>> e.state, e.starts_at, e.ends_at, e.annotations["summary"]
('resolved', 120.0, 180.0, 'p99 2600 ms on m')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from pipeline.alerting.conditions import Outcome
from pipeline.alerting.history import CountHistory
from pipeline.alerting.inhibit import inhibited_by
from pipeline.alerting.lifecycle import Transition
from pipeline.alerting.rules import Rule, RuleSet
from pipeline.alerting.series_state import AlertState, Checkpoint, Entry, RulePlan, SeriesState
from pipeline.alerting.silences import Silences
from pipeline.alerting.variables import window_vars
from pipeline.windows.profile import series_key as make_series_key
from schemas.alert import AlertEvent
from schemas.metrics import WindowMetrics

__all__ = ["EVALUATOR_FORMAT", "Checkpoint", "Evaluator"]

EVALUATOR_FORMAT = 1


class Evaluator:
    """Evaluates a :class:`RuleSet` for every series it is given; holds their alert state."""

    def __init__(self, rules: RuleSet, silences: Silences | None = None) -> None:
        self.rules = rules
        self.silences = silences if silences is not None else Silences()
        self._rules = {rule.name: rule for rule in rules}
        self._quick = {rule.name: rule.condition.quick_test() for rule in rules}
        self._history_keys = {rule.name: rule.condition.history_key() for rule in rules}
        self._rank = {rule.name: i for i, rule in enumerate(rules)}
        # rules whose annotations read only the alert's own facts: rendered when read
        self._later = {rule.name for rule in rules
                       if not {name.partition(".")[0] for t in rule.annotations.values()
                               for name in t.names()} & {"metrics", "details"}}
        self._plans: dict[tuple[int, ...], RulePlan] = {}  # by the indexes of matching rules
        self._keep = max((lb for r in rules for lb in r.condition.lookbacks()), default=0.0)
        self._series: dict[str, SeriesState] = {}
        self._firing: dict[str, Mapping[str, str]] = {}  # fingerprint -> alert labels
        self._dirty: set[str] = set()  # series whose checkpoint changed
        self._gone: dict[str, list[str]] = {}  # forgotten by the sweep: alerts to delete

    def __len__(self) -> int:
        return len(self._series)

    def series_keys(self) -> list[str]:
        return sorted(self._series)

    def _plan(self, labels: Mapping[str, str]) -> RulePlan:
        matching = tuple(i for i, rule in enumerate(self.rules) if rule.matches(labels))
        plan = self._plans.get(matching)
        if plan is not None:
            return plan
        entries: list[Entry] = []
        counted: set[str] = set()
        for i in matching:
            rule = self.rules.rules[i]
            shared = self._history_keys[rule.name]
            # the first rule of a history counts the window, in full; the others may
            # then test the sums first
            sums = rule.condition.sums_test() if shared in counted else None
            if shared is not None:
                counted.add(shared)
            entries.append((rule, rule.name, self._quick[rule.name], shared, sums))
        plan = self._plans[matching] = RulePlan(entries)
        return plan

    def _new_series(self, key: str, labels: Mapping[str, str]) -> SeriesState:
        series = self._series[key] = SeriesState(key, labels, self._plan(labels))
        series.changed.update(self._gone.pop(key, ()))  # forgotten, back: old ones go
        self._dirty.add(key)
        return series

    # ----------------------------------------------------------------------- evaluate
    def evaluate(self, metrics: WindowMetrics | Mapping[str, Any],
                 scores: Mapping[str, Any] | None = None, *, now: float | None = None
                 ) -> list[AlertEvent]:
        """Evaluate the rules on one window of one series; the events of its transitions."""
        m = msgspec.structs.asdict(metrics) if isinstance(metrics, WindowMetrics) else metrics
        labels: Mapping[str, str] = m.get("labels") or {}
        key = m.get("series_key") or make_series_key(labels)
        start, end = float(m["window_start"]), float(m["window_end"])
        version = int(m.get("version") or 1)
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key, labels)
        moves = end > series.last_end or (end == series.last_end
                                          and version == series.last_version)
        env = window_vars(m, scores)
        events: list[AlertEvent] = []
        alerts, changed, plan = series.alerts, series.changed, series.plan
        summed: dict[str, tuple[float, float]] = {}  # a shared history's sums, this window
        # the rules that may hold (one call each), those without a quick test, and the
        # awake alerts: every other alert is idle and stays so (nothing to evaluate)
        todo = [i for i, quick in plan.quick if quick(env) is True]
        todo += plan.always
        if series.awake:
            todo = sorted({*todo, *series.awake})
        elif plan.always:
            todo.sort()
        for i in todo:
            rule, name, _, shared, sums = plan.entries[i]
            alert = alerts.get(name)
            # idle, and no transition of this very window to replay: if the condition does
            # not hold, nothing changes (an idle alert's time and value are not state)
            idle = alert is None or (alert.idle and alert.lifecycle.last_eval != end)
            if idle and sums is not None:
                counts = summed.get(shared)  # type: ignore[arg-type]
                if counts is None:
                    history = series.histories[shared]  # type: ignore[index]
                    counts = summed[shared] = history.sum(  # type: ignore[index]
                        end, rule.condition.lookbacks()[0])
                if not sums(counts):
                    continue
            if shared is not None:
                history: CountHistory | None = series.history(shared, rule.condition)
                series.histories_changed = True
            elif alert is not None:
                history = alert.history
            elif rule.condition.lookbacks():
                alert = alerts[name] = AlertState(rule, series.labels)
                history = alert.history
            else:
                history = None
            outcome = rule.condition.evaluate(env, start, end, history)
            if history is not None and shared is None:
                changed.add(name)
            if not moves or (idle and not outcome.holds):
                if idle and moves:  # the series moves past its last transitions
                    series.awake.discard(i)
                continue
            if alert is None:
                alert = alerts[name] = AlertState(rule, series.labels, history)
            lc = alert.lifecycle
            was_idle = alert.idle
            transitions = lc.evaluate(end, outcome.holds, outcome.value)
            if outcome.holds:
                self._observe(rule, series, alert, outcome, env, start, end)
            alert.idle = lc.idle
            series.wake(name, alert)
            if transitions or not (was_idle and alert.idle):
                changed.add(name)
            events.extend(self._event(rule, series, alert, t, outcome.value, outcome.threshold,
                                      (start, end))
                          for t in transitions if t.kind in ("firing", "repeat", "resolved"))
        if end > series.last_end:
            series.last_end, series.last_version = end, version
        elif end == series.last_end:
            series.last_version = max(series.last_version, version)
        if changed or series.histories_changed:
            self._dirty.add(key)
        self._mute(events, end if now is None else now)
        return events

    def _observe(self, rule: Rule, series: SeriesState, alert: AlertState, outcome: Outcome,
                 env: Mapping[str, float], start: float, end: float) -> None:
        """Remember what a holding evaluation measured, and the annotations rendered with
        it: now if they read the window's metrics or the outcome's details, else when
        they are read (most holding windows of a pending or firing alert publish none)."""
        lc = alert.lifecycle
        alert.value, alert.threshold, alert.window = outcome.value, outcome.threshold, (start, end)
        alert.starts = lc.fired_at if lc.firing else lc.active_at
        alert.annotations = None
        if rule.name not in self._later:
            alert.annotations = self._render(rule, series, alert, env, outcome.details)

    def _render(self, rule: Rule, series: SeriesState, alert: AlertState,
                env: Mapping[str, float], details: Mapping[str, Any]) -> dict[str, str]:
        return rule.render({
            "value": alert.value, "threshold": alert.threshold, "alertname": rule.name,
            "rule": rule.name, "severity": rule.severity, "series_key": series.key,
            "window_start": alert.window[0], "window_end": alert.window[1],
            "starts_at": alert.starts, "labels": alert.labels, "metrics": env,
            "details": details,
        })

    def _annotations(self, rule: Rule, series: SeriesState, alert: AlertState) -> dict[str, str]:
        if alert.annotations is None:  # a template that reads neither metrics nor details
            alert.annotations = self._render(rule, series, alert, {}, {})
        return alert.annotations

    def _event(self, rule: Rule, series: SeriesState, alert: AlertState, t: Transition,
               value: float | None, threshold: float | None,
               window: tuple[float, float]) -> AlertEvent:
        resolved = t.kind == "resolved"
        if resolved:
            self._firing.pop(alert.fingerprint, None)
        else:
            self._firing[alert.fingerprint] = alert.labels
        return AlertEvent(
            fingerprint=alert.fingerprint, rule=rule.name,
            state="resolved" if resolved else "firing", severity=rule.severity,
            repeat=t.kind == "repeat", series_key=series.key,
            series_labels=dict(series.labels), labels=dict(alert.labels),
            annotations=dict(self._annotations(rule, series, alert)),
            value=value if value is not None else t.value, threshold=threshold,
            window_start=window[0], window_end=window[1], starts_at=t.starts_at,
            ends_at=t.ends_at)

    def _mute(self, events: list[AlertEvent], now: float) -> None:
        for e in events:
            e.silenced_by = self.silences.muting(e.labels, now)
            e.silenced = bool(e.silenced_by)
            e.inhibited_by = inhibited_by(e.labels, e.fingerprint, self.rules.inhibit_rules,
                                          self._firing)
            e.inhibited = bool(e.inhibited_by)

    # ----------------------------------------------------------------------- queries
    def firing(self, rule: str | None = None, *, now: float | None = None) -> list[AlertEvent]:
        """The alerts firing now (of ``rule``, or all), as ``firing`` events carrying the
        latest holding window's value and annotations; muting checked at ``now``
        (default: each alert's latest window end)."""
        out: list[AlertEvent] = []
        for series in self._series.values():
            for name, alert in series.alerts.items():
                if not alert.lifecycle.firing or (rule is not None and name != rule):
                    continue
                r = self._rules.get(name)
                if r is None:
                    continue
                assert alert.lifecycle.fired_at is not None
                e = AlertEvent(
                    fingerprint=alert.fingerprint, rule=name, state="firing",
                    severity=r.severity, series_key=series.key,
                    series_labels=dict(series.labels), labels=dict(alert.labels),
                    annotations=dict(self._annotations(r, series, alert)), value=alert.value,
                    threshold=alert.threshold, window_start=alert.window[0],
                    window_end=alert.window[1], starts_at=alert.lifecycle.fired_at)
                self._mute([e], series.last_end if now is None else now)
                out.append(e)
        return sorted(out, key=lambda e: (e.rule, e.series_key))

    def counts(self) -> dict[str, int]:
        """Alerts held per state, ``pending`` and ``firing`` (the worker's gauge)."""
        out = {"pending": 0, "firing": 0}
        for series in self._series.values():
            for alert in series.alerts.values():
                if alert.lifecycle.state in out:
                    out[alert.lifecycle.state] += 1
        return out

    # ----------------------------------------------------------------------- staleness
    def sweep(self, now: float, stale_after: float) -> list[AlertEvent]:
        """Treat series without a window for ``stale_after`` seconds as not holding at
        ``now``: their alerts resolve (after ``keep_firing_for``). Series with nothing
        pending or firing, silent for longer than their rules' longest lookback too, are
        forgotten (their checkpoint with them)."""
        events: list[AlertEvent] = []
        keep = max(stale_after, self._keep)
        for key in list(self._series):
            series = self._series[key]
            if series.last_end > now - stale_after:
                continue
            for name in sorted(series.alerts, key=self._rank.__getitem__):  # rule order
                alert, rule = series.alerts[name], self._rules[name]
                if alert.idle:
                    continue
                for t in alert.lifecycle.evaluate(now, False):
                    if t.kind == "resolved":  # window: the stretch without data
                        events.append(self._event(rule, series, alert, t, None,
                                                  alert.threshold, (series.last_end, now)))
                alert.idle = alert.lifecycle.idle
                series.wake(name, alert)
                series.changed.add(name)
                self._dirty.add(key)
            active = any(not a.idle for a in series.alerts.values())
            if not active and series.last_end <= now - keep:
                del self._series[key]
                self._gone[key] = [n for n, a in series.alerts.items() if a.saved] + [
                    n for n in series.changed if n not in series.alerts]
                self._dirty.add(key)
        self._mute(events, now)
        return events

    # ----------------------------------------------------------------------- checkpoints
    def state(self, series_key: str) -> dict[str, Any] | None:
        """Checkpoint of one series (msgpack/JSON safe), or ``None`` if unknown."""
        series = self._series.get(series_key)
        if series is None:
            return None
        return {
            "format": EVALUATOR_FORMAT,
            "labels": series.labels,
            "last_end": None if series.last_end == -math.inf else series.last_end,
            "last_version": series.last_version,
            "alerts": {name: self._rendered(series, name, a).to_builtins()
                       for name, a in series.alerts.items()},
            "histories": {k: h.to_builtins() for k, h in series.histories.items()},
        }

    def _rendered(self, series: SeriesState, name: str, alert: AlertState) -> AlertState:
        rule = self._rules.get(name)
        if rule is not None:
            self._annotations(rule, series, alert)
        return alert

    def restore(self, series_key: str, data: Mapping[str, Any], *, changed: bool = False
                ) -> None:
        """Load a checkpoint of one series (:meth:`state`'s form). Alerts of rules that
        no longer exist are dropped (and deleted at the next :meth:`checkpoint`); a rule's
        changed ``for`` / ``keep_firing_for`` applies from now on. ``changed``: the whole
        state counts as changed (e.g. it is to be saved in another layout)."""
        if data.get("format") != EVALUATOR_FORMAT:
            raise ValueError(f"unknown evaluator state format {data.get('format')!r}")
        self.forget(series_key)
        series = self._new_series(series_key, data.get("labels") or {})
        last_end = data.get("last_end")
        series.last_end = -math.inf if last_end is None else float(last_end)
        series.last_version = int(data.get("last_version") or 0)
        histories = data.get("histories") or {}
        for _rule, name, _, shared, _ in series.plan.entries:  # own history, earlier form
            raw = (data.get("alerts") or {}).get(name) or {}
            if shared is not None and shared not in histories and raw.get("history"):
                histories = {**histories, shared: raw["history"]}
        for rule, _, _, shared, _ in series.plan.entries:
            if shared is not None and shared in histories and shared not in series.histories:
                series.history(shared, rule.condition).restore(histories[shared])
        for name, raw in (data.get("alerts") or {}).items():
            rule = self._rules.get(name)
            if rule is None:
                series.changed.add(name)
                continue
            key = self._history_keys[name]
            alert = AlertState(rule, series.labels,
                               None if key is None else series.history(key, rule.condition))
            alert.restore(rule, raw)
            alert.saved = True
            series.alerts[name] = alert
            series.wake(name, alert)
            if alert.lifecycle.firing:
                self._firing[alert.fingerprint] = alert.labels
        series.saved = not changed
        if changed:
            series.changed.update(series.alerts)
            series.histories_changed = bool(series.histories)
        elif not series.changed:
            self._dirty.discard(series_key)

    def checkpoint(self, series_key: str) -> Checkpoint:
        """What changed in the series' checkpoint since the last call (see
        :class:`Checkpoint`); an unchanged series gives an empty one.

        >>> from pipeline.alerting.rules import parse_rules
        >>> ev = Evaluator(parse_rules("rules: [{name: Busy, condition: requests > 1, "
        ...                            "severity: info}]"))
        >>> def window(end, n):
        ...     return {"series_key": "s", "window_start": end - 10, "window_end": end,
        ...             "requests": n}
        >>> _ = ev.evaluate(window(10, 0))
        >>> ev.checkpoint("s")  # new: its labels; the idle alert is not even kept
        Checkpoint(series={'labels': {}}, alerts={}, histories=None, gone=False)
        >>> _ = ev.evaluate(window(20, 0)); bool(ev.checkpoint("s")), ev.clock("s")
        (False, (20.0, 1))
        >>> _ = ev.evaluate(window(30, 5)); list(ev.checkpoint("s").alerts)
        ['Busy']
        """
        self._dirty.discard(series_key)
        series = self._series.get(series_key)
        if series is None:
            gone = self._gone.pop(series_key, None)
            return Checkpoint(alerts=dict.fromkeys(gone or ()), gone=gone is not None)
        out = Checkpoint()
        if not series.saved:
            out.series = {"labels": series.labels}
            series.saved = True
        for name in series.changed:
            alert = series.alerts.get(name)
            if alert is None:
                out.alerts[name] = None
            else:
                out.alerts[name] = alert.to_builtins(history=False)
                alert.saved = True
        series.changed.clear()
        if series.histories_changed:
            out.histories = {k: h.to_builtins() for k, h in series.histories.items()}
            series.histories_changed = False
        return out

    def changed(self) -> set[str]:
        """The series whose :meth:`checkpoint` is not empty."""
        return set(self._dirty)

    def clock(self, series_key: str) -> tuple[float, int] | None:
        """(end, version) of the series' latest window, which moves with every window (so
        it is kept apart from the state :meth:`checkpoint` gives); ``None`` if unknown."""
        series = self._series.get(series_key)
        if series is None or series.last_end == -math.inf:
            return None
        return series.last_end, series.last_version

    def forget(self, series_key: str) -> None:
        """Drop a series' state (e.g. its partition was revoked on rebalance)."""
        self._dirty.discard(series_key)
        self._gone.pop(series_key, None)
        series = self._series.pop(series_key, None)
        if series is not None:
            for alert in series.alerts.values():
                self._firing.pop(alert.fingerprint, None)
