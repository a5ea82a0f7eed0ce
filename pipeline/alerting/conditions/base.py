"""What every rule condition is: it reads one window's variables (and, for rules that look
back, the series' count history) and says whether the alert condition holds.

A condition also tells the evaluator what lets it skip work: a ``quick_test`` that an idle
alert must pass before the condition is evaluated in full, the ``history_key`` under which
conditions that count the same share one count history per series, and a ``sums_test`` on
that shared history's sums. The defaults ask for a full evaluation every window and a
history of the condition's own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipeline.alerting.history import CountHistory

__all__ = ["Condition", "Outcome", "QuickTest", "SumsTest"]

QuickTest = Callable[[Mapping[str, Any]], object]  # on a window's variables; True: may hold
SumsTest = Callable[[tuple[float, float]], bool]  # on a lookback's (bad, total): may it hold


@dataclass(frozen=True, slots=True)
class Outcome:
    """One evaluation: ``holds`` (``None``: unknown, which does not hold), the measured
    ``value`` and the ``threshold`` it was compared with, and type-specific ``details``
    that annotation templates read as ``{{ details.<name> }}``."""

    holds: bool | None
    value: float | None = None
    threshold: float | None = None
    details: Mapping[str, float | str | None] = field(default_factory=dict)


class Condition(ABC):
    """A rule's condition, built from its spec. Stateless: history is passed in."""

    type: ClassVar[str]
    detail_names: ClassVar[frozenset[str]] = frozenset()

    def lookbacks(self) -> tuple[float, ...]:
        """Seconds of history the condition sums over; empty when it needs none."""
        return ()

    def new_history(self) -> CountHistory | None:
        """Fresh per-series history for this condition, or ``None``."""
        lookbacks = self.lookbacks()
        return CountHistory(lookbacks) if lookbacks else None

    def quick_test(self) -> QuickTest | None:
        """A cheap test, without side effects, that returns ``True`` whenever the condition
        may hold on a window; ``None``: none (evaluate in full every window). Only for
        conditions without history, which a skipped window would leave behind."""
        return None

    def history_key(self) -> str | None:
        """What the condition's count history holds, when it is known: conditions with
        the same key add the same counts of the same windows, so a series keeps one
        history for them. ``None``: a history of its own (or none)."""
        return None

    def sums_test(self) -> SumsTest | None:
        """A test on the sums of the shared history over ``lookbacks()[0]``, counted by
        another condition of the same ``history_key``, that is true whenever the condition
        may hold; ``None``: none."""
        return None

    @abstractmethod
    def names(self) -> frozenset[str]:
        """Variables the condition reads."""

    @abstractmethod
    def evaluate(self, env: Mapping[str, object], window_start: float, window_end: float,
                 history: CountHistory | None = None) -> Outcome:
        """Evaluate on one window; records the window in ``history`` first if one is used."""
