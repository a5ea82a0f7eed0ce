"""The drift-statistic contract: ``compute(reference, current) -> float | None``.

A :class:`Statistic` compares the histogram of a closed window (``current``) with the
histogram of the reference for one monitored name. It declares which ``kinds`` of histogram
it accepts, whether a higher value means more drift, the value it gives for identical
distributions and its range; the contract suite checks every registered statistic against
those promises. ``None`` means "not enough data to say" (empty reference, or a current
window below ``min_count``), never "no drift".

A statistic also carries its alarm facts: ``short_name`` (in scores, SQL and alert rules),
``threshold`` (at an effective count of :data:`THRESHOLD_COUNT`), ``count_exponent`` and
``floor``; :func:`pipeline.scoring.drift.thresholds.threshold` scales and floors it for a
window's counts, and that module's docstring explains how the numbers were calibrated.

:class:`BinnedStatistic` is the common base of divergences computed on the coarse bins of
:func:`pipeline.windows.histogram.coarsen` (PSI, Jensen–Shannon, Hellinger); their formula is
public as :meth:`BinnedStatistic.from_counts` so it can be checked on plain count arrays.

Pure: no I/O.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import numpy as np

from pipeline.windows.histogram import (
    KINDS,
    Histogram,
    Kind,
    coarsen,
    kind_of,
)

__all__ = ["KINDS", "THRESHOLD_COUNT", "BinnedStatistic", "Kind", "Statistic", "kind_of"]

THRESHOLD_COUNT: float = 100.0
"""The effective count at which each statistic's ``threshold`` holds (100 values, large
reference)."""


class Statistic(abc.ABC):
    """A drift statistic of a current window against a reference.

    Subclasses set ``name``, ``short_name``, ``kinds``, ``higher_is_drift``, ``no_drift``
    (the value for identical distributions), ``bounds`` and the alarm facts ``threshold``,
    ``count_exponent`` and ``floor``, and implement :meth:`_compute`, which is only called
    with two histograms of an accepted kind, a non-empty reference and a current window of
    at least ``min_count`` values.
    """

    name: ClassVar[str]
    """Registry name (``DriftValue.statistic``, keys of ``drift.thresholds``)."""
    short_name: ClassVar[str]
    """Name in scores, SQL and alert rules (``drift.<short_name>.<feature>``)."""
    kinds: ClassVar[frozenset[Kind]]
    higher_is_drift: ClassVar[bool] = True
    no_drift: ClassVar[float] = 0.0
    bounds: ClassVar[tuple[float, float]] = (0.0, math.inf)
    threshold: ClassVar[float]
    """The recommended alarm threshold at an effective count of :data:`THRESHOLD_COUNT`."""
    count_exponent: ClassVar[float]
    """With no drift the statistic shrinks like ``n_eff ** -count_exponent`` (0: count-free,
    the threshold applies as is)."""
    floor: ClassVar[float] = 0.0
    """The count-scaled threshold never goes below this (busy windows must not alarm on
    negligible drift)."""

    def __init__(self, *, min_count: int = 1) -> None:
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        self.min_count = int(min_count)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({params})"

    def compute(self, reference: Histogram, current: Histogram) -> float | None:
        """The statistic, or ``None`` when the reference is empty or ``current`` holds fewer
        than ``min_count`` values. ``TypeError`` for a kind this statistic does not accept
        or two histograms of different kinds."""
        kind = kind_of(reference)
        if kind_of(current) != kind:
            raise TypeError(f"{self.name}: reference is {kind}, current is {kind_of(current)}")
        if kind not in self.kinds:
            raise TypeError(f"{self.name} does not apply to {kind} histograms")
        if reference.count == 0 or current.count < self.min_count:
            return None
        return float(self._compute(reference, current))

    @abc.abstractmethod
    def _compute(self, reference: Histogram, current: Histogram) -> float:
        """The statistic on valid, non-empty inputs."""


class BinnedStatistic(Statistic):
    """A divergence of the two distributions over the coarse bins of ``coarsen(bins=bins)``."""

    kinds: ClassVar[frozenset[Kind]] = frozenset(KINDS)

    def __init__(self, *, bins: int = 10, min_count: int = 1) -> None:
        super().__init__(min_count=min_count)
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.bins = int(bins)

    def _compute(self, reference: Histogram, current: Histogram) -> float:
        binned = coarsen(reference, current, self.bins)
        return self.from_counts(binned.reference, binned.current)

    @abc.abstractmethod
    def from_counts(self, reference: np.ndarray, current: np.ndarray) -> float:
        """The divergence of two aligned count (or weight) vectors, each with a positive sum."""


def proportions(counts: np.ndarray) -> np.ndarray:
    """``counts / counts.sum()`` as float64."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.sum()
