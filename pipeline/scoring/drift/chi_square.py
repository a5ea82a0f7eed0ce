"""Chi-square test of homogeneity of two categorical distributions: its p-value.

The 2 × k table (reference counts, current counts) is tested for equal category
proportions. Small p means drift (``higher_is_drift = False``). Two rules keep small windows
from raising false alarms: a current window below ``min_count`` values (default 50) gives
``None``, and categories whose expected count in either row is below 5 (the textbook
validity rule) are pooled into one column (merged into the smallest other category if the pool
itself is still below 5). Fewer than two columns left means no detectable difference: 1.0.

The test treats the reference as a sample too. With a very large pinned reference it
answers "is there *any* difference" with great power, so pair it with a magnitude (PSI, JS).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.stats import chi2

from pipeline.scoring.drift.base import Kind, Statistic
from pipeline.windows.histogram import CategoricalHistogram

__all__ = ["ChiSquare", "pooled_table"]

MIN_EXPECTED = 5.0


def pooled_table(table: np.ndarray, min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """``table`` (2 × k counts) with the columns of expected count < ``min_expected`` pooled.

    >>> pooled_table(np.array([[100, 100, 10, 10], [50, 40, 1, 1]])).tolist()
    [[100.0, 100.0, 20.0], [50.0, 40.0, 2.0]]
    >>> pooled_table(np.array([[100, 100, 2, 1], [50, 40, 1, 0]])).tolist()  # pool too small
    [[100.0, 103.0], [50.0, 41.0]]
    """
    table = np.asarray(table, dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    expected_min = rows.min() * cols / table.sum()
    small = expected_min < min_expected
    if not small.any():
        return table
    kept, pool = table[:, ~small], table[:, small].sum(axis=1, keepdims=True)
    if kept.shape[1] and rows.min() * pool.sum() / table.sum() < min_expected:
        smallest = int(np.argmin(kept.sum(axis=0)))
        kept = kept.copy()
        kept[:, smallest:smallest + 1] += pool
        return kept
    return np.concatenate((kept, pool), axis=1)


class ChiSquare(Statistic):
    """p-value of the chi-square test of homogeneity, with the minimum-count rules.

    >>> ref, cur = CategoricalHistogram(), CategoricalHistogram()
    >>> ref.add_many(["a"] * 500 + ["b"] * 500)
    >>> cur.add_many(["a"] * 20 + ["b"] * 10)
    >>> ChiSquare().compute(ref, cur) is None  # 30 < min_count
    True
    >>> cur.add_many(["a"] * 60 + ["b"] * 10)
    >>> ChiSquare().compute(ref, cur) < 1e-6
    True
    """

    name: ClassVar[str] = "chi_square"
    short_name: ClassVar[str] = "chi2_p"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"categorical"})
    higher_is_drift: ClassVar[bool] = False
    no_drift: ClassVar[float] = 1.0
    bounds: ClassVar[tuple[float, float]] = (0.0, 1.0)
    threshold: ClassVar[float] = 6e-4  # calibrated (see thresholds); alarm below it
    count_exponent: ClassVar[float] = 0.0  # a p-value already accounts for the counts
    floor: ClassVar[float] = 0.0  # never applied: the threshold is count-free

    def __init__(self, *, min_count: int = 50, min_expected: float = MIN_EXPECTED) -> None:
        super().__init__(min_count=min_count)
        self.min_expected = float(min_expected)

    def _compute(  # type: ignore[override]
        self, reference: CategoricalHistogram, current: CategoricalHistogram
    ) -> float:
        al = reference.aligned(current)
        table = pooled_table(np.vstack((al.first, al.second)), self.min_expected)
        if table.shape[1] < 2:
            return 1.0
        expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
        statistic = float(np.sum((table - expected) ** 2 / expected))
        return float(chi2.sf(statistic, table.shape[1] - 1))
