"""Two-sample Kolmogorov–Smirnov statistic ``D = sup_x |F_ref(x) − F_cur(x)|`` (numeric).

Both CDFs are evaluated at the end of every bucket of the union of the two histograms, where
they equal the exact empirical CDFs; inside a bucket neither is known. So ``D`` here is at most
the exact two-sample statistic and falls short of it by at most the largest
``p_ref(b) + p_cur(b)`` over buckets ``b`` (the mass that may sit on either side of the
supremum inside one bucket) — a few tenths of a percent for continuous data at alpha=0.01.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pipeline.scoring.drift.base import Kind, Statistic
from pipeline.windows.histogram import NumericHistogram

__all__ = ["KolmogorovSmirnov"]


class KolmogorovSmirnov(Statistic):
    """Max CDF difference over the bucket grid, in ``[0, 1]``.

    >>> a, b = NumericHistogram(), NumericHistogram()
    >>> a.add_many([1.0, 2.0, 3.0, 4.0]); b.add_many([3.0, 4.0, 5.0, 6.0])
    >>> KolmogorovSmirnov().compute(a, b)
    0.5
    """

    name: ClassVar[str] = "kolmogorov_smirnov"
    short_name: ClassVar[str] = "ks"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"numeric"})
    bounds: ClassVar[tuple[float, float]] = (0.0, 1.0)
    threshold: ClassVar[float] = 0.185  # calibrated (see thresholds)
    count_exponent: ClassVar[float] = 0.5  # the empirical-CDF supremum is ~ 1/√n (DKW)
    floor: ClassVar[float] = 0.09  # D of a 0.25 σ or 5 pp shift, the smaller (half a target)

    def _compute(self, reference: NumericHistogram, current: NumericHistogram) -> float:  # type: ignore[override]
        al = reference.aligned(current)
        f_ref = np.cumsum(al.first) / reference.count
        f_cur = np.cumsum(al.second) / current.count
        return min(1.0, float(np.max(np.abs(f_ref - f_cur))))
