"""Wasserstein-1 (earth mover's) distance between the reference and current distributions.

``W1 = ∫ |F_ref(x) − F_cur(x)| dx``, computed exactly for the two bucketed distributions
(each value at its bucket's representative). Each representative is within ``alpha·|x|`` of
the value it stands for, so the result is within ``alpha · (E|X_ref| + E|X_cur|)`` of the
exact ``scipy.stats.wasserstein_distance`` of the raw samples (W1 moves by at most the mean
displacement of either sample).

W1 is in the feature's unit, so a threshold on it would differ per feature. ``normalize``
divides it by a scale of the *reference* (which is fixed while the reference is), making it
"how many reference spreads the mass moved": ``"iqr"`` (the default; robust to heavy tails)
or ``"std"``; ``"none"`` keeps the raw unit. A reference with zero IQR (ties, e.g. mostly
zeros) falls back to its std, and a constant reference to the raw value.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from pipeline.scoring.drift.base import Kind, Statistic
from pipeline.windows.histogram import NumericHistogram

__all__ = ["Wasserstein"]

Normalize = Literal["iqr", "std", "none"]


class Wasserstein(Statistic):
    """Wasserstein-1 distance, optionally divided by the reference's IQR or std.

    >>> a, b = NumericHistogram(), NumericHistogram()
    >>> a.add_many([0.0, 0.0, 0.0, 0.0]); b.add_many([0.0, 0.0, 10.0, 10.0])
    >>> w = Wasserstein(normalize="none").compute(a, b)  # 10.0 is bucketed within 1 %
    >>> abs(w - 5.0) <= 0.01 * (0.0 + 5.0)
    True
    """

    name: ClassVar[str] = "wasserstein"
    short_name: ClassVar[str] = "wasserstein"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"numeric"})
    threshold: ClassVar[float] = 0.27  # calibrated, IQR-normalised (see thresholds)
    count_exponent: ClassVar[float] = 0.5  # integrates empirical-CDF noise, which is ~ 1/√n
    floor: ClassVar[float] = 0.15  # W1 of a 0.25 σ or 5 pp shift, the smaller (half a target)

    def __init__(self, *, normalize: Normalize = "iqr", min_count: int = 1) -> None:
        super().__init__(min_count=min_count)
        if normalize not in ("iqr", "std", "none"):
            raise ValueError(f"normalize must be 'iqr', 'std' or 'none', got {normalize!r}")
        self.normalize: Normalize = normalize

    def _compute(self, reference: NumericHistogram, current: NumericHistogram) -> float:  # type: ignore[override]
        al = reference.aligned(current)
        gap = np.abs(np.cumsum(al.first) / reference.count - np.cumsum(al.second) / current.count)
        distance = float(np.dot(gap[:-1], np.diff(al.values)))
        return distance / self.scale(reference)

    def scale(self, reference: NumericHistogram) -> float:
        """The divisor for ``normalize`` (1.0 for ``"none"`` or a constant reference)."""
        if self.normalize == "none" or reference.count == 0:
            return 1.0
        if self.normalize == "iqr":
            iqr = reference.quantile(0.75) - reference.quantile(0.25)  # type: ignore[operator]
            if iqr > 0:
                return iqr
        std = reference.std() or 0.0
        return std if std > 0 else 1.0
