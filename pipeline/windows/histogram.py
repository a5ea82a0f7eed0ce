"""Mergeable histograms that drift statistics are computed from; no raw values are kept.

:class:`NumericHistogram` holds any finite value, negative, zero or positive, in two
:class:`pipeline.windows.sketch.Sketch` es (log buckets of
``ddsketch.mapping.LogarithmicMapping``): one of the values ``x >= 0``, one of ``-x`` for
``x < 0``; their zero buckets make the zero count. Every value is represented by its bucket's
representative value, which is within ``relative_accuracy`` (alpha) of it, so statistics
computed on the buckets inherit that bound (see each statistic). :class:`CategoricalHistogram`
counts categories up to a cap.

Both merge exactly: the histogram of the union of two batches equals the merge of their
histograms (as long as no bucket/category cap is hit), so stage 1 can add batches per
partition and stage 2 merge the partials.

:func:`coarsen` re-bins a reference and a current histogram onto ~``bins`` bins whose edges
are the reference's quantiles. PSI, Jensen–Shannon and Hellinger are computed on those, not on
the raw log buckets, because at ``alpha = 0.01`` a feature spans hundreds of buckets while a
window holds a few hundred values: most buckets would hold 0–2 counts and the divergence would
measure sampling noise (two samples of one distribution look different; PSI's expected value
under no drift grows like ``(bins - 1) * (1/n + 1/m)``). Equal-mass reference bins (the usual
10 for PSI) keep the no-drift value near 0 whatever the feature's scale, and every bin holds
~1/bins of the reference, so the epsilon smoothing of empty bins rarely matters.

>>> ref, cur = NumericHistogram(), NumericHistogram()
>>> ref.add_many([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
>>> cur.add_many([1.0, 2.0, 3.0, 4.0])
>>> ref.count, round(ref.quantile(0.5), 2), ref.cdf(0.0)
(6, 0.0, 0.5)
>>> binned = coarsen(ref, cur, bins=2)
>>> binned.reference.tolist(), binned.current.tolist()
([3, 3], [0, 4])
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
from ddsketch.mapping import LogarithmicMapping

from pipeline.windows.sketch import DEFAULT_MAX_BUCKETS, DEFAULT_RELATIVE_ACCURACY, Sketch

__all__ = [
    "DEFAULT_MAX_BUCKETS",
    "DEFAULT_MAX_CATEGORIES",
    "DEFAULT_RELATIVE_ACCURACY",
    "KINDS",
    "OTHER",
    "Aligned",
    "Binned",
    "CategoricalHistogram",
    "Histogram",
    "Kind",
    "NumericHistogram",
    "coarsen",
    "kind_of",
]

# DEFAULT_RELATIVE_ACCURACY (0.01) and DEFAULT_MAX_BUCKETS (2048 per sign, a value ratio of
# ~1e18 at alpha=0.01) are Sketch's.
DEFAULT_MAX_CATEGORIES = 100
OTHER = "__other__"


class Aligned(NamedTuple):
    """Bucket counts of two histograms over their union of buckets, in increasing order.

    ``values`` are the buckets' representative values (numeric) or the category names
    (categorical); ``first``/``second`` the counts of each histogram in those buckets.
    """

    values: np.ndarray
    first: np.ndarray
    second: np.ndarray


class Binned(NamedTuple):
    """Counts of a reference and a current histogram over the same coarse bins.

    ``edges`` are the ``len(reference) - 1`` inner bin edges (numeric; bin ``i`` is
    ``(edges[i-1], edges[i]]`` up to the bucket grid, the outer bins are open) or the
    category names (categorical, one per bin).
    """

    reference: np.ndarray
    current: np.ndarray
    edges: np.ndarray


class NumericHistogram:
    """Log-bucket histogram of finite real values (any sign), mergeable and serialisable.

    Two :class:`~pipeline.windows.sketch.Sketch` es hold the buckets: one of the values
    ``x >= 0``, one of the magnitudes ``-x`` of the values ``x < 0``; their zero buckets
    together are the zero count. ``count``, ``sum``, ``min`` and ``max`` are exact; quantiles,
    the CDF and everything derived from buckets are exact for the bucketed values, each of
    which is within ``relative_accuracy`` of the value it stands for. Magnitudes below the
    mapping's smallest indexable value (``~2.2e-308``) count as zero. NaN and ``None`` are
    skipped, infinities raise ``ValueError``. Each sign keeps at most ``max_buckets`` buckets;
    beyond that the buckets nearest zero are folded together (never reached by real data at
    alpha=0.01).

    >>> h = NumericHistogram(0.01)
    >>> h.add_many([-5.0, 0.0, 2.0, None, 40.0])
    >>> h.count, h.min, h.max
    (4, -5.0, 40.0)
    >>> abs(h.quantile(1 / 3) - 0.0) < 1e-12, abs(h.quantile(1.0) - 40.0) <= 0.4
    (True, True)
    >>> NumericHistogram.from_builtins(h.to_builtins()) == h
    True
    """

    __slots__ = ("_neg", "_pos")

    def __init__(
        self,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
    ) -> None:
        self._pos = Sketch(relative_accuracy, max_buckets)  # x >= 0
        self._neg = Sketch(relative_accuracy, max_buckets)  # -x for x < 0

    @classmethod
    def _of(cls, pos: Sketch, neg: Sketch) -> NumericHistogram:
        out = cls.__new__(cls)
        out._pos, out._neg = pos, neg
        return out

    @classmethod
    def from_sketch(cls, sketch: Sketch) -> NumericHistogram:
        """A histogram of the non-negative values held by ``sketch`` (copied, not shared).

        Stage 2 builds the operational histograms (latency, tokens, cost) from the window's
        own sketches this way, so stage 1 does not bucket those values twice.
        """
        return cls._of(sketch.copy(), Sketch(sketch.relative_accuracy, sketch.max_buckets))

    # ------------------------------------------------------------------ properties
    @property
    def mapping(self) -> LogarithmicMapping:
        """The key mapping of the buckets (``ddsketch.mapping.LogarithmicMapping``)."""
        return self._pos.mapping

    @property
    def relative_accuracy(self) -> float:
        """The relative-error bound ``alpha`` of bucket representatives."""
        return float(self.mapping.relative_accuracy)

    @property
    def max_buckets(self) -> int:
        """Bound on non-empty buckets per sign."""
        return self._pos.max_buckets

    @property
    def count(self) -> int:
        """Number of values added (NaN/None not counted)."""
        return self._pos.count + self._neg.count

    @property
    def sum(self) -> float:
        """Exact (floating-point) sum of the values added: that of the values ``>= 0`` less
        that of the magnitudes of the negative ones."""
        return self._pos.sum - self._neg.sum

    @property
    def min(self) -> float | None:
        """Smallest value added, ``None`` when empty."""
        largest_magnitude = self._neg.max
        return self._pos.min if largest_magnitude is None else -largest_magnitude

    @property
    def max(self) -> float | None:
        """Largest value added, ``None`` when empty."""
        largest, smallest_magnitude = self._pos.max, self._neg.min
        if largest is not None or smallest_magnitude is None:
            return largest
        return -smallest_magnitude

    @property
    def mean(self) -> float | None:
        """Exact mean, ``None`` when empty."""
        count = self.count
        return self.sum / count if count else None

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (f"NumericHistogram(relative_accuracy={self.relative_accuracy}, "
                f"count={self.count}, min={self.min}, max={self.max})")

    # ------------------------------------------------------------------ adding
    def add(self, value: float | None) -> None:
        """Add one value; prefer :meth:`add_many` for batches."""
        self.add_many((value,))

    def add_many(self, values: Iterable[float | None] | np.ndarray) -> None:
        """Add a batch at once (each sign with :meth:`Sketch.add_many`, vectorised)."""
        if not isinstance(values, np.ndarray):
            values = list(values)
        arr = np.asarray(values, dtype=np.float64).ravel()
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            return
        lo, hi = float(arr.min()), float(arr.max())
        if math.isinf(lo) or math.isinf(hi):  # checked before either sketch is changed
            raise ValueError(f"NumericHistogram holds finite values, got min={lo} max={hi}")
        negative = arr < 0.0
        self._pos.add_many(arr[~negative])
        self._neg.add_many(-arr[negative])

    # ------------------------------------------------------------------ merging
    def merge(self, other: NumericHistogram) -> None:
        """Fold ``other`` into this histogram (same relative accuracy required)."""
        self._check_compatible(other)
        self._pos.merge(other._pos)
        self._neg.merge(other._neg)

    def compact(self) -> None:
        """Buckets as arrays until the next change (see :meth:`Sketch.compact`)."""
        self._pos.compact()
        self._neg.compact()

    def parts(self) -> tuple[Sketch, Sketch]:
        """The sketch of the values ``>= 0`` and that of ``-x`` for ``x < 0`` (builtins keys
        ``p`` and ``n``), shared, not copied."""
        return self._pos, self._neg

    def subtract(self, other: NumericHistogram) -> None:
        """Take ``other``'s values back out (see :meth:`Sketch.subtract`; min/max stay)."""
        self._check_compatible(other)
        self._pos.subtract(other._pos)
        self._neg.subtract(other._neg)

    def _check_compatible(self, other: object) -> None:
        if not isinstance(other, NumericHistogram):
            raise TypeError(f"expected a NumericHistogram, got {type(other).__name__}")
        if other.mapping.gamma != self.mapping.gamma:
            raise ValueError(
                "histograms of different relative accuracy: "
                f"{self.relative_accuracy} and {other.relative_accuracy}"
            )

    def copy(self) -> NumericHistogram:
        """An independent copy."""
        return self._of(self._pos.copy(), self._neg.copy())

    # ------------------------------------------------------------------ buckets
    @property
    def _zero(self) -> int:
        """Values counted as zero: both sketches' zero buckets."""
        return self._pos.zero_count + self._neg.zero_count

    def _values(self, neg_keys: np.ndarray, pos_keys: np.ndarray) -> np.ndarray:
        """Representative values: negatives (most negative first), zero, positives."""
        value = self.mapping.value
        neg = [-value(int(k)) for k in neg_keys[::-1]]
        pos = [value(int(k)) for k in pos_keys]
        return np.array([*neg, 0.0, *pos], dtype=np.float64)

    @staticmethod
    def _counts(neg: np.ndarray, zero: int, pos: np.ndarray) -> np.ndarray:
        """Counts in the order of :meth:`_values`."""
        return np.concatenate((neg[::-1], [zero], pos)).astype(np.int64)

    def buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, counts)`` of all buckets in increasing order (the zero bucket included)."""
        (neg_keys, neg_counts), (pos_keys, pos_counts) = self._neg.buckets(), self._pos.buckets()
        return (self._values(neg_keys, pos_keys),
                self._counts(neg_counts, self._zero, pos_counts))

    def aligned(self, other: NumericHistogram) -> Aligned:
        """Counts of this histogram and ``other`` over the union of their buckets.

        >>> a, b = NumericHistogram(), NumericHistogram()
        >>> a.add_many([1.0, 1.0, -3.0]); b.add_many([1.0, 50.0])
        >>> al = a.aligned(b)
        >>> al.first.tolist(), al.second.tolist(), [round(v) for v in al.values]
        ([1, 0, 2, 0], [0, 0, 1, 1], [-3, 0, 1, 50])
        """
        self._check_compatible(other)
        neg_keys = np.union1d(self._neg.buckets()[0], other._neg.buckets()[0])
        pos_keys = np.union1d(self._pos.buckets()[0], other._pos.buckets()[0])
        first, second = (
            self._counts(h._neg.counts_at(neg_keys), h._zero, h._pos.counts_at(pos_keys))
            for h in (self, other)
        )
        return Aligned(self._values(neg_keys, pos_keys), first, second)

    def _upper_edges(self, values: np.ndarray) -> np.ndarray:
        """Upper edge of the bucket of each representative value (for reporting)."""
        gamma = self.mapping.gamma
        out = np.where(values > 0, values * (1 + gamma) / 2, values * (1 + gamma) / (2 * gamma))
        out[values == 0] = self.mapping.min_possible
        return out

    # ------------------------------------------------------------------ querying
    def quantile(self, q: float) -> float | None:
        """Value at rank ``floor(q * (count - 1))`` (bucket representative clamped to the
        exact ``[min, max]``); ``None`` when empty. Same rank convention as ``Sketch``."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        count, lo, hi = self.count, self.min, self.max
        if lo is None or hi is None:
            return None
        values, counts = self.buckets()
        index = int(np.searchsorted(np.cumsum(counts), q * (count - 1), side="right"))
        value = float(values[min(index, values.size - 1)])
        return min(max(value, lo), hi)

    def cdf(self, x: float) -> float | None:
        """Fraction of values ``<= x``, each value at its bucket's representative (so exact
        but for values in ``x``'s own bucket); exactly 0 below ``min`` and 1 from ``max``."""
        count, lo, hi = self.count, self.min, self.max
        if lo is None or hi is None:
            return None
        if x < lo:
            return 0.0
        if x >= hi:
            return 1.0
        values, counts = self.buckets()
        upto = int(np.searchsorted(values, x, side="right"))
        return float(counts[:upto].sum()) / count

    def std(self) -> float | None:
        """Standard deviation of the bucketed values; ``None`` when empty."""
        count = self.count
        if count == 0:
            return None
        values, counts = self.buckets()
        mean = float(np.dot(values, counts)) / count
        return math.sqrt(float(np.dot((values - mean) ** 2, counts)) / count)

    # ------------------------------------------------------------------ serialization
    def to_builtins(self) -> dict[str, Any]:
        """Compact msgpack/JSON-safe form: ``a`` alpha; ``b`` max_buckets when not the default;
        ``p``/``n`` the positive and negative sketches' :meth:`Sketch.to_builtins` without
        their ``a``/``b`` (each omitted when empty)."""
        out: dict[str, Any] = {"a": self.relative_accuracy}
        if self.max_buckets != DEFAULT_MAX_BUCKETS:
            out["b"] = self.max_buckets
        for key, part in (("p", self._pos), ("n", self._neg)):
            if part.count:
                out[key] = {k: v for k, v in part.to_builtins().items() if k not in ("a", "b")}
        return out

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any]) -> NumericHistogram:
        """Inverse of :meth:`to_builtins`; validates shapes and counts."""
        alpha, buckets = float(data["a"]), int(data.get("b", DEFAULT_MAX_BUCKETS))
        parts = [data.get(key, {}) for key in ("p", "n")]
        if not all(isinstance(part, Mapping) for part in parts):
            raise ValueError("malformed histogram: 'p' and 'n' must be sketch mappings")
        pos, neg = (Sketch.from_builtins(part, alpha, buckets) for part in parts)
        return cls._of(pos, neg)

    def __eq__(self, other: object) -> bool:
        """Same alpha, buckets, min and max (of each sign); sums equal up to float rounding
        (merge order): the two sketches are equal."""
        if not isinstance(other, NumericHistogram):
            return NotImplemented
        return self._pos == other._pos and self._neg == other._neg

    __hash__ = None  # type: ignore[assignment]


class CategoricalHistogram:
    """Counts per category, at most ``max_categories`` distinct ones.

    Categories beyond the cap are counted under :data:`OTHER` (``"__other__"``); which ones
    are kept depends on arrival order (first come), as for the profile's bounded counters.
    ``None`` is skipped; other non-string values are counted under ``str(value)``.

    >>> h = CategoricalHistogram(max_categories=2)
    >>> h.add_many(["cat", "dog", "cat", "emu", None])
    >>> h.count, h.counts
    (4, {'cat': 2, 'dog': 1, '__other__': 1})
    >>> CategoricalHistogram.from_builtins(h.to_builtins()) == h
    True
    """

    __slots__ = ("_counts", "max_categories")

    def __init__(self, max_categories: int = DEFAULT_MAX_CATEGORIES) -> None:
        if max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {max_categories}")
        self.max_categories = int(max_categories)
        self._counts: dict[str, int] = {}

    @property
    def count(self) -> int:
        """Number of values added."""
        return sum(self._counts.values())

    @property
    def counts(self) -> dict[str, int]:
        """A copy of the counts per category."""
        return dict(self._counts)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (f"CategoricalHistogram(max_categories={self.max_categories}, "
                f"count={self.count}, categories={len(self._counts)})")

    def add(self, value: str | None) -> None:
        """Add one value."""
        self.add_many((value,))

    def add_many(self, values: Iterable[object]) -> None:
        """Add a batch of values (counted with ``collections.Counter``).

        The common batch, strings and ``None`` only, is counted in one C pass; one with
        other values takes the exact path (``True`` and ``1`` hash alike but are counted
        as ``"True"`` and ``"1"``).
        """
        values = values if isinstance(values, list | tuple) else list(values)
        counts: Counter[object] = Counter(values)
        counts.pop(None, None)
        if not all(isinstance(k, str) for k in counts):
            counts = Counter(v if isinstance(v, str) else str(v)
                             for v in values if v is not None)
        self._add_counts(counts)  # type: ignore[arg-type]

    def _add_counts(self, counts: Mapping[str, int]) -> None:
        target = self._counts
        for key, n in counts.items():
            if key in target or len(target) < self.max_categories:
                target[key] = target.get(key, 0) + n
            else:
                target[OTHER] = target.get(OTHER, 0) + n

    def merge(self, other: CategoricalHistogram) -> None:
        """Fold ``other`` into this histogram (the cap of this one applies)."""
        if not isinstance(other, CategoricalHistogram):
            raise TypeError(f"expected a CategoricalHistogram, got {type(other).__name__}")
        self._add_counts(other._counts)

    def subtract(self, other: CategoricalHistogram) -> None:
        """Take ``other``'s counts back out; ``ValueError`` (nothing changed) when they are
        not all here, or once the cap was hit: which categories a merge keeps depends on
        arrival order, so only a merge in order can say what remains."""
        if not isinstance(other, CategoricalHistogram):
            raise TypeError(f"expected a CategoricalHistogram, got {type(other).__name__}")
        mine = self._counts
        if OTHER in mine or any(mine.get(k, 0) < n for k, n in other._counts.items()):
            raise ValueError("cannot subtract categories that were not merged into this one")
        for key, n in other._counts.items():
            left = mine[key] - n
            if left:
                mine[key] = left
            else:
                del mine[key]

    def copy(self) -> CategoricalHistogram:
        """An independent copy."""
        out = CategoricalHistogram(self.max_categories)
        out._counts = dict(self._counts)
        return out

    def aligned(self, other: CategoricalHistogram) -> Aligned:
        """Counts of both over the sorted union of their categories.

        >>> a, b = CategoricalHistogram(), CategoricalHistogram()
        >>> a.add_many("xxy"); b.add_many("yz")
        >>> al = a.aligned(b)
        >>> al.values.tolist(), al.first.tolist(), al.second.tolist()
        (['x', 'y', 'z'], [2, 1, 0], [0, 1, 1])
        """
        if not isinstance(other, CategoricalHistogram):
            raise TypeError(f"expected a CategoricalHistogram, got {type(other).__name__}")
        names = sorted(self._counts.keys() | other._counts.keys())
        first = np.array([self._counts.get(k, 0) for k in names], dtype=np.int64)
        second = np.array([other._counts.get(k, 0) for k in names], dtype=np.int64)
        return Aligned(np.array(names, dtype=object), first, second)

    def to_builtins(self) -> dict[str, Any]:
        """``{"m": max_categories, "c": {category: count}}`` (``c`` omitted when empty)."""
        out: dict[str, Any] = {"m": self.max_categories}
        if self._counts:
            out["c"] = dict(self._counts)
        return out

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any]) -> CategoricalHistogram:
        """Inverse of :meth:`to_builtins`; counts must be positive integers."""
        out = cls(int(data["m"]))
        counts = {str(k): int(v) for k, v in data.get("c", {}).items()}
        if any(v <= 0 for v in counts.values()) or len(counts) > out.max_categories + 1:
            raise ValueError("malformed categorical histogram")
        out._counts = counts
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoricalHistogram):
            return NotImplemented
        return self.max_categories == other.max_categories and self._counts == other._counts

    __hash__ = None  # type: ignore[assignment]


Histogram = NumericHistogram | CategoricalHistogram


def coarsen(
    reference: NumericHistogram | CategoricalHistogram,
    current: NumericHistogram | CategoricalHistogram,
    bins: int = 10,
) -> Binned:
    """Counts of ``reference`` and ``current`` over ~``bins`` bins of equal reference mass.

    Numeric: bin edges are the reference's ``1/bins … (bins-1)/bins`` quantiles, snapped to
    the bucket grid (a bin is a run of whole buckets, so the counts are exact for the bucketed
    values); the outer bins are open, so current values outside the reference's range land in
    them. Buckets holding more than ``1/bins`` of the reference (ties, e.g. many zeros) give
    fewer, wider bins. Categorical histograms are returned over the union of their categories
    (no coarsening: categories are already the bins). See the module docstring for why.

    >>> ref, cur = NumericHistogram(), NumericHistogram()
    >>> ref.add_many(range(1, 101)); cur.add_many(range(51, 151))
    >>> b = coarsen(ref, cur, bins=4)
    >>> b.reference.tolist(), b.current.tolist()
    ([25, 25, 25, 25], [0, 0, 25, 75])
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if isinstance(reference, CategoricalHistogram):
        al = reference.aligned(current)  # type: ignore[arg-type]
        return Binned(al.first, al.second, al.values)
    al = reference.aligned(current)  # type: ignore[arg-type]
    n = reference.count
    if n == 0:
        total = np.array([al.first.sum()]), np.array([al.second.sum()])
        return Binned(*total, np.empty(0))
    cumulative = np.cumsum(al.first)
    targets = n * np.arange(1, bins) / bins
    # last bucket of each bin: the one where the reference's cumulative count reaches j/bins
    ends = np.unique(np.searchsorted(cumulative, targets, side="left"))
    ends = ends[ends < al.values.size - 1]
    starts = np.concatenate(([0], ends + 1))
    edges = reference._upper_edges(al.values[ends])
    return Binned(np.add.reduceat(al.first, starts), np.add.reduceat(al.second, starts), edges)


Kind = Literal["numeric", "categorical"]
KINDS: tuple[Kind, ...] = ("numeric", "categorical")


def kind_of(histogram: Histogram) -> Kind:
    """``"numeric"`` or ``"categorical"``; ``TypeError`` for anything else."""
    if isinstance(histogram, NumericHistogram):
        return "numeric"
    if isinstance(histogram, CategoricalHistogram):
        return "categorical"
    raise TypeError(f"expected a NumericHistogram or CategoricalHistogram, got "
                    f"{type(histogram).__name__}")
