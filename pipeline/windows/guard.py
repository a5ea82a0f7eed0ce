"""Cardinality guard: a cap on active series per worker, overflow folded into ``__other__``.

Label values come from producers, so a flood of distinct models, tenants or user
agents must not explode memory or ClickHouse. Past the cap, a new series keeps the
label values already seen in each dimension and folds the unseen ones into
``__other__`` (per dimension); if even that series is new, every label folds. The
folded events are counted per dimension, and each folded event once in
``inferwatch_series_overflow_total`` (``/metrics``).
"""

from __future__ import annotations

from collections import Counter

from pipeline.telemetry import SERIES_OVERFLOW

__all__ = ["OTHER", "CardinalityGuard"]

OTHER = "__other__"


class CardinalityGuard:
    """Maps label tuples to admitted ones; ``expire`` forgets series gone quiet.

    >>> guard = CardinalityGuard(max_series=2, names=("model", "version"))
    >>> guard.admit(("gpt", "v1"), now=0.0)
    ('gpt', 'v1')
    >>> guard.admit(("gpt", "v2"), now=0.0)
    ('gpt', 'v2')
    >>> guard.admit(("gpt", "v3"), now=0.0)  # over the cap: ("gpt", "__other__") is new too
    ('__other__', '__other__')
    >>> guard.overflow["version"]
    1
    """

    def __init__(self, max_series: int, names: tuple[str, ...] = ()) -> None:
        self.max_series = max_series
        self.names = names
        self._last_seen: dict[tuple[str, ...], float] = {}
        self._values: list[Counter[str]] = []
        self.overflow: Counter[str] = Counter()  # folded events per dimension name

    def admit(self, labels: tuple[str, ...], now: float) -> tuple[str, ...]:
        seen = self._last_seen
        if labels in seen or len(seen) < self.max_series:
            return self._touch(labels, now)
        if not self._values:
            self._values = [Counter() for _ in labels]
        folded = tuple(
            v if self._values[i][v] else OTHER for i, v in enumerate(labels)
        )
        if folded not in seen and len(seen) >= self.max_series:
            folded = tuple(OTHER for _ in labels)
        for i, (a, b) in enumerate(zip(labels, folded, strict=True)):
            if a != b:
                self.overflow[self.names[i] if i < len(self.names) else str(i)] += 1
        if folded != labels:
            SERIES_OVERFLOW.inc()
        return self._touch(folded, now)

    def _touch(self, labels: tuple[str, ...], now: float) -> tuple[str, ...]:
        if labels not in self._last_seen:
            if not self._values:
                self._values = [Counter() for _ in labels]
            for i, v in enumerate(labels):
                self._values[i][v] += 1
        self._last_seen[labels] = now
        return labels

    def expire(self, older_than: float) -> int:
        """Forget series not seen since ``older_than``; return how many were forgotten."""
        gone = [k for k, t in self._last_seen.items() if t < older_than]
        for labels in gone:
            del self._last_seen[labels]
            for i, v in enumerate(labels):
                self._values[i][v] -= 1
                if self._values[i][v] <= 0:
                    del self._values[i][v]
        return len(gone)

    @property
    def active(self) -> int:
        return len(self._last_seen)
