"""The registered drift statistics, with their default parameters, by histogram kind."""

from __future__ import annotations

from pipeline.drift.base import KINDS, Kind, Statistic
from pipeline.drift.chi_square import ChiSquare
from pipeline.drift.hellinger import Hellinger
from pipeline.drift.jensen_shannon import JensenShannon
from pipeline.drift.kolmogorov_smirnov import KolmogorovSmirnov
from pipeline.drift.psi import PSI
from pipeline.drift.wasserstein import Wasserstein

__all__ = ["STATISTICS", "statistics_for"]

STATISTICS: tuple[Statistic, ...] = (
    PSI(),
    JensenShannon(),
    Hellinger(),
    Wasserstein(),
    KolmogorovSmirnov(),
    ChiSquare(),
)


def statistics_for(kind: Kind) -> tuple[Statistic, ...]:
    """The registered statistics that apply to ``kind`` histograms, in registry order.

    >>> [s.name for s in statistics_for("categorical")]
    ['psi', 'jensen_shannon', 'hellinger', 'chi_square']
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return tuple(s for s in STATISTICS if kind in s.kinds)
