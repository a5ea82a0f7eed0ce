"""Threshold rules: a condition in the expression language on one window's variables."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.alerting.conditions.base import Condition, Outcome, QuickTest
from pipeline.alerting.expr import Expr
from pipeline.alerting.history import CountHistory

__all__ = ["ThresholdCondition"]


def _number(value: float | bool | None) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)


class ThresholdCondition(Condition):
    """Holds when ``condition`` is true on the window.

    The reported value is ``value`` if given, else the left side of the condition's first
    comparison; the threshold is that comparison's right side.

    >>> from pipeline.alerting.expr import parse
    >>> c = ThresholdCondition(parse("error_rate > 0.05 and requests >= 50"))
    >>> c.evaluate({"error_rate": 0.08, "requests": 200}, 0.0, 60.0)
    Outcome(holds=True, value=0.08, threshold=0.05, details={})
    """

    type = "threshold"

    def __init__(self, condition: Expr, value: Expr | None = None) -> None:
        if condition.kind != "bool":
            raise ValueError("a threshold condition must be a comparison")
        self.condition = condition
        pair = condition.first_comparison()
        self.value = value if value is not None else (pair[0] if pair else None)
        self.threshold = pair[1] if pair else None

    def quick_test(self) -> QuickTest:
        """The compiled condition itself: it has no history."""
        return self.condition.evaluate

    def names(self) -> frozenset[str]:
        names = self.condition.names()
        return names | self.value.names() if self.value is not None else names

    def evaluate(self, env: Mapping[str, object], window_start: float, window_end: float,
                 history: CountHistory | None = None) -> Outcome:
        holds = self.condition.evaluate(env)
        value = _number(self.value.evaluate(env)) if self.value is not None else None
        threshold = _number(self.threshold.evaluate(env)) if self.threshold is not None \
            else None
        return Outcome(None if holds is None else bool(holds), value, threshold)
