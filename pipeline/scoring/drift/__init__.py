"""Distribution drift of closed windows against a reference, from mergeable histograms.

Histograms (:mod:`~pipeline.windows.histogram`) are kept per window in stage 1 and merged in
stage 2; statistics (one per file beside :mod:`~pipeline.scoring.drift.base`) compare a
window with a pinned or trailing :mod:`~pipeline.scoring.drift.reference`. Change points on
per-window series are
in :mod:`pipeline.scoring.detectors`. Pure: no I/O.

>>> [s.name for s in statistics_for("numeric")]
['psi', 'jensen_shannon', 'hellinger', 'wasserstein', 'kolmogorov_smirnov']
"""

from pipeline.scoring.drift.base import KINDS, BinnedStatistic, Kind, Statistic, kind_of
from pipeline.scoring.drift.chi_square import ChiSquare
from pipeline.scoring.drift.evaluate import DriftValue, evaluate
from pipeline.scoring.drift.hellinger import Hellinger
from pipeline.scoring.drift.jensen_shannon import JensenShannon
from pipeline.scoring.drift.kolmogorov_smirnov import KolmogorovSmirnov
from pipeline.scoring.drift.psi import PSI
from pipeline.scoring.drift.reference import Reference, TrailingReference
from pipeline.scoring.drift.registry import STATISTICS, statistics_for
from pipeline.scoring.drift.wasserstein import Wasserstein
from pipeline.windows.drift_profile import DriftProfile, MonitorSpec
from pipeline.windows.histogram import (
    OTHER,
    CategoricalHistogram,
    Histogram,
    NumericHistogram,
    coarsen,
)

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
