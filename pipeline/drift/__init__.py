"""Distribution drift of closed windows against a reference, from mergeable histograms.

Histograms (:mod:`~pipeline.drift.histogram`) are kept per window in stage 1 and merged in
stage 2; statistics (one per file beside :mod:`~pipeline.drift.base`) compare a window with
a pinned or trailing :mod:`~pipeline.drift.reference`. Change points on per-window series are
in :mod:`pipeline.drift.detectors`. Pure: no I/O.

>>> [s.name for s in statistics_for("numeric")]
['psi', 'jensen_shannon', 'hellinger', 'wasserstein', 'kolmogorov_smirnov']
"""

from pipeline.drift.base import KINDS, BinnedStatistic, Kind, Statistic, kind_of
from pipeline.drift.chi_square import ChiSquare
from pipeline.drift.evaluate import DriftValue, evaluate
from pipeline.drift.hellinger import Hellinger
from pipeline.drift.histogram import (
    OTHER,
    CategoricalHistogram,
    Histogram,
    NumericHistogram,
    coarsen,
)
from pipeline.drift.jensen_shannon import JensenShannon
from pipeline.drift.kolmogorov_smirnov import KolmogorovSmirnov
from pipeline.drift.profile import DriftProfile, MonitorSpec
from pipeline.drift.psi import PSI
from pipeline.drift.reference import Reference, TrailingReference
from pipeline.drift.registry import STATISTICS, statistics_for
from pipeline.drift.wasserstein import Wasserstein

__all__ = [
    "KINDS",
    "OTHER",
    "PSI",
    "STATISTICS",
    "BinnedStatistic",
    "CategoricalHistogram",
    "ChiSquare",
    "DriftProfile",
    "DriftValue",
    "Hellinger",
    "Histogram",
    "JensenShannon",
    "Kind",
    "KolmogorovSmirnov",
    "MonitorSpec",
    "NumericHistogram",
    "Reference",
    "Statistic",
    "TrailingReference",
    "Wasserstein",
    "coarsen",
    "evaluate",
    "kind_of",
    "statistics_for",
]
