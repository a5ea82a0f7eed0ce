"""Recommended alarm thresholds for the drift statistics and the anomaly scores.

Chosen with ``benchmarks/drift_eval.py --calibrate`` (seeded streams of 10 s windows with
real per-window volumes; results in ``benchmarks/RESULTS.md``): each is the smallest value
keeping false alarms at or below 0.5 per 1,000 no-change windows on the calibration seed —
half the issue's target of 1, as margin for other data — rounded toward fewer alarms, then
evaluated on another seed.

**Drift thresholds depend on the counts.** With no drift, PSI shrinks like ``1/n`` and
Jensen–Shannon, Hellinger, Wasserstein-1 and Kolmogorov–Smirnov like ``1/√n`` in the
*effective count* ``n_eff = n·m / (n + m)`` of a window of ``n`` values against a reference
of ``m``. One fixed value is too strict for busy windows and too loose for quiet ones (10 s
windows of real traffic hold ~35–100 requests, half that at night). So
:data:`DEFAULT_THRESHOLDS` hold at ``n_eff =`` :data:`THRESHOLD_COUNT` and :func:`threshold`
scales them by ``(THRESHOLD_COUNT / n_eff) ** COUNT_EXPONENTS[name]``, never below
:data:`MIN_THRESHOLDS` (busy windows must not alarm on negligible drift). At the same
false-alarm rate this detects more than a fixed threshold for every statistic (target shifts
within 3 windows: Wasserstein-1 88 → 97 %, Kolmogorov–Smirnov 74 → 92 %, Jensen–Shannon on a
label mix 9 → 32 %). The chi-square p-value already accounts for the counts: its threshold
applies as is. PSI, Jensen–Shannon and Hellinger are calibrated on 10 quantile bins; on a
categorical name their noise grows with the number of categories, so prefer the chi-square
p-value there.

**The anomaly threshold holds for the recommended feeding**: windows of at least
:data:`ANOMALY_MIN_REQUESTS` requests, the vector without :data:`ANOMALY_EXCLUDED_METRICS`
and ``MedianMADScorer(min_scale=ANOMALY_MIN_SCALE)``. A window's latency percentiles are
heavy-tailed (its p99 is one slow request; its p50 jumps between the modes of a bimodal
output-length mix): with them in the vector no score threshold kept false alarms under ~90
per 1,000 windows.

Pure: no I/O.

>>> round(threshold("kolmogorov_smirnov", current_count=100, reference_count=10**9), 3)
0.185
>>> round(threshold("kolmogorov_smirnov", current_count=25, reference_count=10**9), 3)
0.37
>>> is_drift("chi_square", 1e-6), is_drift("psi", None)
(True, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from pipeline.scoring.drift.registry import STATISTICS

__all__ = [
    "ANOMALY_EXCLUDED_METRICS",
    "ANOMALY_MIN_REQUESTS",
    "ANOMALY_MIN_SCALE",
    "ANOMALY_THRESHOLD",
    "ANOMALY_THRESHOLDS",
    "COUNT_EXPONENTS",
    "DEFAULT_THRESHOLDS",
    "MIN_THRESHOLDS",
    "THRESHOLD_COUNT",
    "effective_count",
    "is_drift",
    "threshold",
]

THRESHOLD_COUNT: float = 100.0
"""The effective count at which :data:`DEFAULT_THRESHOLDS` hold (100 values, large reference)."""

DEFAULT_THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "psi": 0.655,
    "jensen_shannon": 0.255,
    "hellinger": 0.235,
    "wasserstein": 0.27,
    "kolmogorov_smirnov": 0.185,
    "chi_square": 6e-4,
})
"""Per statistic (registry name): the threshold at THRESHOLD_COUNT; see :func:`threshold`."""

COUNT_EXPONENTS: Mapping[str, float] = MappingProxyType({
    "psi": 1.0,
    "jensen_shannon": 0.5,
    "hellinger": 0.5,
    "wasserstein": 0.5,
    "kolmogorov_smirnov": 0.5,
    "chi_square": 0.0,
})
"""Per statistic: its no-drift noise shrinks like ``n_eff ** -exponent`` (0: count-free)."""

MIN_THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "psi": 0.015,
    "jensen_shannon": 0.05,
    "hellinger": 0.04,
    "wasserstein": 0.15,
    "kolmogorov_smirnov": 0.09,
})
"""Floors: the smaller of a statistic's values for a 0.25 σ and a 5 pp shift (half a target)."""

ANOMALY_THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "median_mad": 0.96,
    "half_space_trees": 0.92,
})
"""Per anomaly scorer (its ``name``): a window is anomalous when its score is at least this."""

ANOMALY_THRESHOLD: float = ANOMALY_THRESHOLDS["median_mad"]
"""The threshold of the default scorer, :class:`pipeline.scoring.anomaly.MedianMADScorer`."""

ANOMALY_MIN_REQUESTS: int = 20
"""Windows with fewer requests are neither scored nor learned: their metrics are too noisy."""

ANOMALY_EXCLUDED_METRICS: tuple[str, ...] = ("latency_p50_ms", "latency_p99_ms")
"""Not in the anomaly vector: window latency percentiles are heavy-tailed (see above)."""

ANOMALY_MIN_SCALE: Mapping[str, float] = MappingProxyType({"error_rate": 0.02})
"""``min_scale`` of MedianMADScorer: one error in a window must not look like an anomaly."""

_HIGHER_IS_DRIFT: Mapping[str, bool] = {s.name: s.higher_is_drift for s in STATISTICS}


def effective_count(current_count: int, reference_count: int) -> float:
    """``n·m / (n + m)``: the sample size that sets the noise of a two-sample statistic
    (``n`` when the reference is much larger); 0 when either side is empty."""
    if current_count <= 0 or reference_count <= 0:
        return 0.0
    return current_count * reference_count / (current_count + reference_count)


def threshold(statistic: str, current_count: int | None = None,
              reference_count: int | None = None,
              thresholds: Mapping[str, float] = DEFAULT_THRESHOLDS) -> float:
    """The threshold of ``statistic`` for a window of ``current_count`` values against a
    reference of ``reference_count``: ``thresholds[statistic]`` scaled from
    :data:`THRESHOLD_COUNT` to their effective count, never below its floor. Without counts,
    ``thresholds[statistic]`` itself. ``KeyError`` for a statistic without a threshold."""
    base = thresholds[statistic]
    exponent = COUNT_EXPONENTS.get(statistic, 0.0)
    if current_count is None or reference_count is None or exponent == 0.0:
        return base
    n_eff = effective_count(current_count, reference_count)
    if n_eff == 0.0:
        return math.inf if _HIGHER_IS_DRIFT[statistic] else 0.0
    return max(MIN_THRESHOLDS.get(statistic, 0.0), base * (THRESHOLD_COUNT / n_eff) ** exponent)


def is_drift(statistic: str, value: float | None,
             thresholds: Mapping[str, float] = DEFAULT_THRESHOLDS, *,
             current_count: int | None = None, reference_count: int | None = None) -> bool:
    """Whether ``value`` of ``statistic`` crosses its :func:`threshold` (pass the counts of
    the :class:`~pipeline.scoring.drift.evaluate.DriftValue`); ``None`` (too little data)
    never does."""
    limit = threshold(statistic, current_count, reference_count, thresholds)
    if value is None:
        return False
    return value > limit if _HIGHER_IS_DRIFT[statistic] else value < limit
