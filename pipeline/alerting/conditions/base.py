"""What every rule condition is: it reads one window's variables (and, for rules that look
back, the series' count history) and says whether the alert condition holds."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.alerting.history import CountHistory

__all__ = ["Condition", "Outcome"]


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

    @abstractmethod
    def names(self) -> frozenset[str]:
        """Variables the condition reads."""

    @abstractmethod
    def evaluate(self, env: Mapping[str, object], window_start: float, window_end: float,
                 history: CountHistory | None = None) -> Outcome:
        """Evaluate on one window; records the window in ``history`` first if one is used."""
