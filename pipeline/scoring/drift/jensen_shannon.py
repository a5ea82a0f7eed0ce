"""Jensen–Shannon *distance* (base 2) over the reference's quantile bins.

``JS(p, q) = sqrt(½ KL(p ‖ m) + ½ KL(q ‖ m))`` with ``m = (p + q) / 2`` and base-2 logs, so
it is a metric in ``[0, 1]`` (1 for disjoint supports) — the same value as
``scipy.spatial.distance.jensenshannon(p, q, base=2)``. No smoothing is needed: ``m > 0``
wherever ``p`` or ``q`` is, and ``0 · log 0 = 0``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pipeline.scoring.drift.base import BinnedStatistic, proportions

__all__ = ["JensenShannon"]


def _kl2(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))


class JensenShannon(BinnedStatistic):
    """Jensen–Shannon distance, base 2, in ``[0, 1]``.

    >>> import numpy as np
    >>> JensenShannon().from_counts(np.array([3, 0]), np.array([0, 7]))
    1.0
    >>> JensenShannon().from_counts(np.array([1, 2]), np.array([2, 4]))
    0.0
    """

    name: ClassVar[str] = "jensen_shannon"
    short_name: ClassVar[str] = "js"
    bounds: ClassVar[tuple[float, float]] = (0.0, 1.0)
    threshold: ClassVar[float] = 0.255  # calibrated on 10 bins (see thresholds)
    count_exponent: ClassVar[float] = 0.5  # square root of a divergence whose noise is ~ 1/n
    floor: ClassVar[float] = 0.05  # JS of a 0.25 σ or 5 pp shift, the smaller (half a target)

    def from_counts(self, reference: np.ndarray, current: np.ndarray) -> float:
        """JS distance of two aligned count vectors."""
        p, q = proportions(reference), proportions(current)
        m = (p + q) / 2.0
        divergence = 0.5 * _kl2(p, m) + 0.5 * _kl2(q, m)
        return min(1.0, max(0.0, divergence) ** 0.5)
