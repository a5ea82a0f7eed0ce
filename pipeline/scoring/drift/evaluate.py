"""Every applicable statistic for every monitored name of a closed window against a reference.

A name present on one side only is still reported (its values are ``None``, with the counts
showing which side is empty): a feature that stopped arriving, or one the reference never
saw, must not vanish silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from pipeline.scoring.drift.base import Kind, Statistic, kind_of
from pipeline.scoring.drift.reference import Reference
from pipeline.scoring.drift.registry import statistics_for
from pipeline.windows.drift_profile import DriftProfile
from pipeline.windows.histogram import CategoricalHistogram, Histogram, NumericHistogram

__all__ = ["DriftValue", "evaluate"]


class DriftValue(msgspec.Struct, frozen=True, kw_only=True):
    """One statistic of one monitored name; ``value`` is ``None`` when there was too little
    data."""

    name: str
    kind: Kind
    statistic: str
    value: float | None
    reference_count: int
    current_count: int


def _empty_like(histogram: Histogram) -> Histogram:
    if isinstance(histogram, NumericHistogram):
        return NumericHistogram(histogram.relative_accuracy, histogram.max_buckets)
    return CategoricalHistogram(histogram.max_categories)


def evaluate(
    reference: Reference,
    current: DriftProfile,
    statistics: Callable[[Kind], Sequence[Statistic]] = statistics_for,
) -> list[DriftValue]:
    """:class:`DriftValue` s for the union of names, sorted by name then statistic order.

    >>> from pipeline.windows.histogram import NumericHistogram
    >>> a, b = NumericHistogram(), NumericHistogram()
    >>> a.add_many(range(100)); b.add_many(range(100))
    >>> ref = Reference.pinned(DriftProfile({"x": a}), version=1, built_from=0, built_to=1)
    >>> [(v.statistic, v.value) for v in evaluate(ref, DriftProfile({"x": b}))]
    [('psi', 0.0), ('jensen_shannon', 0.0), ('hellinger', 0.0), ('wasserstein', 0.0), \
('kolmogorov_smirnov', 0.0)]
    """
    out: list[DriftValue] = []
    for name in sorted(set(reference.names) | set(current.names)):
        ref, cur = reference.get(name), current.get(name)
        if ref is None:
            ref = _empty_like(cur)  # type: ignore[arg-type]
        if cur is None:
            cur = _empty_like(ref)
        kind = kind_of(ref)
        for statistic in statistics(kind):
            out.append(DriftValue(
                name=name, kind=kind, statistic=statistic.name,
                value=statistic.compute(ref, cur), reference_count=ref.count,
                current_count=cur.count,
            ))
    return out
