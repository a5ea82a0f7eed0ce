"""Version comparison rules: fire when a candidate model version is worse than the
baseline serving beside it, by an interval that excludes "no difference" (so a canary
with a handful of requests never pages anyone, and a big one with a real regression does).

They hold only on comparison windows (:class:`~pipeline.quality.versions.VersionBook`),
whose variables are the sums of both sides (``baseline.errors``, ``candidate.latency_sum``
…); on any other window they are unknown, which does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.alerting.conditions.base import Condition, Outcome, QuickTest
from pipeline.alerting.history import CountHistory
from pipeline.quality.compare import (
    COMPARED_METRICS,
    Difference,
    compare_means,
    compare_rates,
)

__all__ = ["METRICS", "VersionComparisonCondition"]

METRICS = COMPARED_METRICS  # metric -> (kind, higher is worse)
_RATES = {"error_rate": ("errors", "inferences"), "accuracy": ("correct", "labelled"),
          "thumbs_down_rate": ("thumbs_down", "satisfaction_n")}
_MEANS = {"latency_ms": ("latency_n", "latency_sum", "latency_sumsq"),
          "satisfaction": ("satisfaction_n", "satisfaction_sum", "satisfaction_sumsq")}


def _moments(n: float, total: float, squares: float) -> tuple[float | None, float | None]:
    if n <= 0:
        return None, None
    mean = total / n
    var = max(0.0, (squares - total * total / n) / (n - 1)) if n > 1 else math.nan
    return mean, var


class VersionComparisonCondition(Condition):
    """Holds when any of ``metrics`` is worse on the candidate (the interval of the
    difference lies wholly on the worse side, beyond its margin) with at least
    ``min_samples`` on both sides. The value is that metric's difference (candidate −
    baseline); ``details`` give every metric's difference, interval and verdict.

    >>> c = VersionComparisonCondition(["error_rate"], min_samples=100)
    >>> env = {"baseline.errors": 10.0, "baseline.inferences": 1000.0,
    ...        "candidate.errors": 60.0, "candidate.inferences": 1000.0}
    >>> o = c.evaluate(env, 0.0, 600.0)
    >>> o.holds, round(o.value, 2), o.details["error_rate_verdict"]
    (True, 0.05, 'worse')
    >>> c.evaluate({"errors": 3.0}, 0.0, 10.0).holds is None  # not a comparison window
    True
    """

    type = "version_comparison"
    detail_names = frozenset({"worse", *(f"{m}_{part}" for m in METRICS for part in (
        "baseline", "candidate", "difference", "low", "high", "verdict"))})

    def __init__(self, metrics: Sequence[str] = tuple(METRICS), *, level: float = 0.95,
                 min_samples: int = 200, margins: Mapping[str, float] | None = None) -> None:
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown or not metrics:
            raise ValueError(f"metrics: use some of {', '.join(METRICS)}")
        self.metrics = tuple(metrics)
        self.level = level
        self.min_samples = min_samples
        self.margins = dict(margins or {})

    def quick_test(self) -> QuickTest | None:
        return lambda env: "candidate.inferences" in env

    def names(self) -> frozenset[str]:
        return frozenset()  # the sums of a comparison window, not window variables

    def differences(self, env: Mapping[str, Any]) -> list[Difference]:
        out = []
        for metric in self.metrics:
            _, worse_up = METRICS[metric]
            margin = self.margins.get(metric, 0.0)

            def side(name: str, which: str) -> float:
                return float(env.get(f"{which}.{name}", 0.0))  # type: ignore[arg-type]

            if metric in _RATES:
                k, n = _RATES[metric]
                out.append(compare_rates(
                    metric, int(side(k, "baseline")), int(side(n, "baseline")),
                    int(side(k, "candidate")), int(side(n, "candidate")),
                    higher_is_worse=worse_up, level=self.level, min_n=self.min_samples,
                    margin=margin))
            else:
                n, total, squares = _MEANS[metric]
                b = [side(x, "baseline") for x in (n, total, squares)]
                c = [side(x, "candidate") for x in (n, total, squares)]
                mb, vb = _moments(*b)
                mc, vc = _moments(*c)
                out.append(compare_means(
                    metric, mb, vb, int(b[0]), mc, vc, int(c[0]), higher_is_worse=worse_up,
                    level=self.level, min_n=self.min_samples, margin=margin))
        return out

    def evaluate(self, env: Mapping[str, object], window_start: float, window_end: float,
                 history: CountHistory | None = None) -> Outcome:
        if "candidate.inferences" not in env:
            return Outcome(None)
        found = self.differences(env)
        details: dict[str, float | str | None] = {}
        for d in found:
            details.update({f"{d.metric}_baseline": d.baseline,
                            f"{d.metric}_candidate": d.candidate,
                            f"{d.metric}_difference": d.difference, f"{d.metric}_low": d.low,
                            f"{d.metric}_high": d.high, f"{d.metric}_verdict": d.verdict})
        worse = [d for d in found if d.verdict == "worse"]
        details["worse"] = ", ".join(d.metric for d in worse) or "none"
        shown = worse[0] if worse else found[0]
        return Outcome(bool(worse), shown.difference, self.margins.get(shown.metric, 0.0),
                       details)
