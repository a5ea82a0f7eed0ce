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
windows of real traffic hold ~35–100 requests, half that at night). So each statistic's
``threshold`` class attribute holds at ``n_eff =`` :data:`THRESHOLD_COUNT`, and
:func:`threshold` scales it by ``(THRESHOLD_COUNT / n_eff) ** count_exponent``, never below
its ``floor`` (the smaller of its values for a 0.25 σ and a 5 pp shift, half a target: busy
windows must not alarm on negligible drift). At the same false-alarm rate this detects more
than a fixed threshold for every statistic (target shifts within 3 windows: Wasserstein-1
88 → 97 %, Kolmogorov–Smirnov 74 → 92 %, Jensen–Shannon on a label mix 9 → 32 %). The
chi-square p-value already accounts for the counts (``count_exponent = 0``): its threshold
applies as is. PSI, Jensen–Shannon and Hellinger are calibrated on 10 quantile bins; on a
categorical name their noise grows with the number of categories, so prefer the chi-square
p-value there.

The numbers live on the statistic classes (one file each beside
:mod:`~pipeline.scoring.drift.base`); :data:`DEFAULT_THRESHOLDS` is their name → threshold
view, which ``drift.thresholds`` in the configuration overrides by name.

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

from pipeline.scoring.drift.base import THRESHOLD_COUNT
from pipeline.scoring.drift.registry import BY_NAME, STATISTICS

__all__ = [
    "ANOMALY_EXCLUDED_METRICS",
    "ANOMALY_MIN_REQUESTS",
    "ANOMALY_MIN_SCALE",
    "ANOMALY_THRESHOLD",
    "ANOMALY_THRESHOLDS",
    "DEFAULT_THRESHOLDS",
    "THRESHOLD_COUNT",
    "effective_count",
    "is_drift",
    "threshold",
]

DEFAULT_THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {s.name: s.threshold for s in STATISTICS})
"""Per statistic (registry name): its ``threshold`` at THRESHOLD_COUNT; see :func:`threshold`."""

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
    base, stat = thresholds[statistic], BY_NAME[statistic]
    if current_count is None or reference_count is None or stat.count_exponent == 0.0:
        return base
    n_eff = effective_count(current_count, reference_count)
    if n_eff == 0.0:
        return math.inf if stat.higher_is_drift else 0.0
    return max(stat.floor, base * (THRESHOLD_COUNT / n_eff) ** stat.count_exponent)


def is_drift(statistic: str, value: float | None,
             thresholds: Mapping[str, float] = DEFAULT_THRESHOLDS, *,
             current_count: int | None = None, reference_count: int | None = None) -> bool:
    """Whether ``value`` of ``statistic`` crosses its :func:`threshold` (pass the counts of
    the :class:`~pipeline.scoring.drift.evaluate.DriftValue`); ``None`` (too little data)
    never does."""
    limit = threshold(statistic, current_count, reference_count, thresholds)
    if value is None:
        return False
    return value > limit if BY_NAME[statistic].higher_is_drift else value < limit
