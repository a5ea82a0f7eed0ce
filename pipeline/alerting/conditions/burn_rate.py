"""SLO burn-rate rules: multi-window, multi-burn-rate alerts over error rate or latency-SLO
compliance (Google SRE workbook, "Alerting on SLOs")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pipeline.alerting.conditions.base import Condition, Outcome
from pipeline.alerting.durations import format_duration
from pipeline.alerting.history import CountHistory
from pipeline.alerting.maths import BurnWindow, evaluate_burn

__all__ = ["BurnRateCondition", "Sli"]

Sli = Literal["errors", "latency"]


def _num(env: Mapping[str, object], name: str) -> float | None:
    try:
        v = env[name]
    except KeyError:
        return None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


class BurnRateCondition(Condition):
    """Holds when some (long, short, factor) window pair burns the error budget
    ``1 - objective`` faster than ``factor`` in both windows.

    Bad events per window: ``errors`` for ``sli: errors``; for ``sli: latency`` the
    requests slower than the window's SLO latency, ``(1 - slo_compliance) · requests``.
    The value is the lesser burn rate of the pair, the threshold its factor.

    >>> c = BurnRateCondition(0.99, [BurnWindow(3600, 300, 14.4)])
    >>> h = c.new_history()
    >>> outs = [c.evaluate({"requests": 100, "errors": 20}, t, t + 60, h)
    ...         for t in range(0, 3600, 60)]
    >>> outs[-1].holds, outs[-1].value, outs[-1].details["long_window"]
    (True, 20.0, '1h')
    """

    type = "burn_rate"
    detail_names = frozenset({"long_window", "short_window", "long_burn_rate",
                              "short_burn_rate", "factor", "objective", "error_budget"})

    def __init__(self, objective: float, windows: Sequence[BurnWindow], *, sli: Sli = "errors",
                 min_requests: float = 0) -> None:
        if not 0.0 < objective < 1.0:
            raise ValueError(f"objective must be in (0, 1), got {objective}")
        if not windows:
            raise ValueError("need at least one burn window")
        self.objective = objective
        self.windows = tuple(windows)
        self.sli = sli
        self.min_requests = min_requests

    def lookbacks(self) -> tuple[float, ...]:
        return tuple(sorted({w.long for w in self.windows} | {w.short for w in self.windows}))

    def history_key(self) -> str:
        """Burn rates of the same SLI over the same windows count the same."""
        lookbacks = ",".join(f"{lb:g}" for lb in self.lookbacks())
        return f"burn_rate|{self.sli}|{lookbacks}"

    def names(self) -> frozenset[str]:
        return frozenset({"requests", "errors" if self.sli == "errors" else "slo_compliance"})

    def counts(self, env: Mapping[str, object]) -> tuple[float, float] | None:
        """(bad, total) of one window, or ``None`` when it cannot be known."""
        total = _num(env, "requests")
        if total is None:
            return None
        if total == 0:
            return 0.0, 0.0
        if self.sli == "errors":
            bad = _num(env, "errors")
        else:
            compliance = _num(env, "slo_compliance")
            bad = None if compliance is None else (1.0 - compliance) * total
        return None if bad is None else (min(max(bad, 0.0), total), total)

    def evaluate(self, env: Mapping[str, object], window_start: float, window_end: float,
                 history: CountHistory | None = None) -> Outcome:
        if history is None:
            raise ValueError("a burn-rate condition needs its history")
        if (c := self.counts(env)) is not None:
            history.add(window_start, window_end, *c)
        sums = {lb: history.sum(window_end, lb) for lb in self.lookbacks()}
        v = evaluate_burn(self.windows, self.objective, sums, min_total=self.min_requests)
        details = {
            "long_window": format_duration(v.window.long),
            "short_window": format_duration(v.window.short),
            "long_burn_rate": v.long_rate,
            "short_burn_rate": v.short_rate,
            "factor": v.window.factor,
            "objective": self.objective,
            "error_budget": round(1.0 - self.objective, 12),
        }
        return Outcome(v.holds, v.value, v.window.factor, details)
