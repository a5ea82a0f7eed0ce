"""Error-rate rules with a confidence bound: fire on the Wilson lower bound of the error
rate, so a handful of requests with one error does not page anyone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.alerting.conditions.base import Condition, Outcome, QuickTest, SumsTest
from pipeline.alerting.expr import Expr, parse
from pipeline.alerting.history import CountHistory
from pipeline.alerting.maths import wilson_interval

__all__ = ["ErrorRateBoundCondition"]


class ErrorRateBoundCondition(Condition):
    """Holds when the Wilson lower bound (at ``z``) of ``errors / total`` exceeds
    ``threshold`` and there were at least ``min_requests``. With ``over`` the counts are
    summed over the windows of the last ``over`` seconds, else the window alone is used.
    The value is the lower bound.

    >>> c = ErrorRateBoundCondition(0.05, z=1.96)
    >>> c.evaluate({"errors": 1, "requests": 3}, 0.0, 60.0).holds    # bound 0.06: still >
    True
    >>> c = ErrorRateBoundCondition(0.05, z=2.576)
    >>> o = c.evaluate({"errors": 1, "requests": 3}, 0.0, 60.0)
    >>> o.holds, round(o.value, 3)
    (False, 0.04)
    >>> c.evaluate({"errors": 30, "requests": 300}, 0.0, 60.0).holds
    True
    """

    type = "error_rate_bound"
    detail_names = frozenset({"errors", "total", "error_rate", "lower_bound", "upper_bound",
                              "z"})

    def __init__(self, threshold: float, *, z: float = 1.96, errors: Expr | None = None,
                 total: Expr | None = None, over: float | None = None,
                 min_requests: float = 0) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.threshold = threshold
        self.z = z
        self.errors = errors if errors is not None else parse("errors", kind="number")
        self.total = total if total is not None else parse("requests", kind="number")
        self.over = over
        self.min_requests = min_requests

    def lookbacks(self) -> tuple[float, ...]:
        return (self.over,) if self.over else ()

    def quick_test(self) -> QuickTest | None:
        """The rate at most the threshold (and requests enough): the Wilson lower bound
        never exceeds the rate, so the condition cannot hold. None with ``over``."""
        if self.over:
            return None
        errors_of, total_of = self.errors.evaluate, self.total.evaluate
        threshold, minimum = self.threshold, self.min_requests

        def may_exceed(env: Mapping[str, Any]) -> bool:
            errors, total = errors_of(env), total_of(env)
            if not (isinstance(errors, float) and isinstance(total, float)) or total <= 0 \
                    or total < minimum:
                return False
            rate = min(max(errors, 0.0), total) / total
            return rate + 1e-9 > threshold  # margin for rounding in the bound

        return may_exceed

    def history_key(self) -> str | None:
        """Bounds ``over`` the same lookback of the same counts share them, whatever their
        threshold (rules at several thresholds or severities are common)."""
        if not self.over:
            return None
        lookbacks = ",".join(f"{lb:g}" for lb in self.lookbacks())
        return f"error_rate_bound|{self.errors.text}|{self.total.text}|{lookbacks}"

    def sums_test(self) -> SumsTest | None:
        """As ``quick_test``, on the counts summed over ``over``."""
        if not self.over:
            return None
        threshold, minimum = self.threshold, self.min_requests

        def may_exceed(sums: tuple[float, float]) -> bool:
            errors, total = sums
            return total > 0 and total >= minimum and errors / total + 1e-9 > threshold

        return may_exceed

    def names(self) -> frozenset[str]:
        return self.errors.names() | self.total.names()

    def evaluate(self, env: Mapping[str, object], window_start: float, window_end: float,
                 history: CountHistory | None = None) -> Outcome:
        errors, total = self.errors.evaluate(env), self.total.evaluate(env)
        known = isinstance(errors, float) and isinstance(total, float) and total >= 0
        if known:
            errors = min(max(errors, 0.0), total)  # type: ignore[type-var]
        if self.over and history is not None:
            if known:
                history.add(window_start, window_end, errors, total)  # type: ignore[arg-type]
            errors, total = history.sum(window_end, self.over)
        elif not known:
            return Outcome(None, None, self.threshold)
        assert isinstance(errors, float) and isinstance(total, float)
        lo, hi = wilson_interval(errors, total, self.z)
        holds = total > 0 and total >= self.min_requests and lo > self.threshold
        details = {"errors": errors, "total": total, "lower_bound": lo, "upper_bound": hi,
                   "error_rate": errors / total if total else None, "z": self.z}
        return Outcome(holds, lo, self.threshold, details)
