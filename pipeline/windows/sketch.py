"""A mergeable quantile sketch with a relative-error bound, DDSketch-compatible, batch-first.

Bucket keys are those of ``ddsketch.mapping.LogarithmicMapping(relative_accuracy)``, so a
:class:`Sketch` answers exactly like ``ddsketch.DDSketch`` fed the same values: for any
``q``, the estimate ``x̂`` of the order statistic ``x`` at rank ``floor(q * (count - 1))``
satisfies ``|x̂ - x| <= alpha * x``. Unlike ``ddsketch.DDSketch`` it adds a whole batch with
numpy (:meth:`Sketch.add_many`): the keys of all values are computed at once and counted
with ``np.unique``. Buckets live in a ``key -> count`` dict: at high cardinality most
sketches hold a handful of values (one series' share of one partition's window), and
numpy's fixed cost per call (~1-5 µs) on 1-2 element arrays was most of the per-(series ×
window) work; small batches, merges and (de)serialisation stay in plain Python.

Values are non-negative (durations, token counts, cost). Values at or below the mapping's
smallest indexable value (``~2.2e-308``, so ``0.0``) go to a zero bucket; NaN and ``None``
are skipped; negative and infinite values raise ``ValueError``.

Memory is bounded by ``max_buckets`` (default 2048) non-empty buckets. When a batch or a
merge exceeds it the *lowest* buckets are collapsed into the lowest kept one, like
ddsketch's ``CollapsingLowestDenseStore``: the bound then no longer holds for the lowest
quantiles, high quantiles (p50…p99.9) keep it. With ``alpha = 0.01`` 2048 buckets span a
value ratio of about 1e18, so real latencies, token counts or costs never collapse.

>>> s = Sketch(0.01)
>>> s.add_many([12.0, 15.0, 20.0, 0.0, 250.0])
>>> s.count, s.max
(5, 250.0)
>>> abs(s.quantile(0.5) - 15.0) <= 0.01 * 15.0
True
>>> Sketch.from_builtins(s.to_builtins()) == s
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import accumulate, pairwise
from typing import Any

import numpy as np
from ddsketch.mapping import LogarithmicMapping

__all__ = ["DEFAULT_MAX_BUCKETS", "DEFAULT_RELATIVE_ACCURACY", "Sketch"]

DEFAULT_RELATIVE_ACCURACY = 0.01
DEFAULT_MAX_BUCKETS = 2048

_EMPTY = np.empty(0, dtype=np.int64)
_EMPTY.flags.writeable = False
_SMALL = 32  # batches up to this size are bucketed in Python (numpy's per-call cost dominates)
_LN2 = math.log(2.0)
# Keys whose log lands this close to an integer are recomputed with ddsketch's own scalar
# code (``math.log``), so a 1-ulp difference between numpy's and libm's log cannot move
# a value across a bucket boundary: keys are exactly ddsketch's.
_BOUNDARY_EPS = 1e-7


@lru_cache(maxsize=16)
def _mapping(relative_accuracy: float) -> LogarithmicMapping:
    """One (immutable) key mapping per accuracy: building it is most of a new sketch's cost,
    and stage 1 creates several sketches per (series, window)."""
    return LogarithmicMapping(relative_accuracy)


class Sketch:
    """DDSketch over non-negative values with vectorised batch insertion.

    ``relative_accuracy`` is DDSketch's ``alpha`` (0 < alpha < 1). Sketches merge only
    with sketches of the same ``alpha``. ``count``, ``sum``, ``min`` and ``max`` are exact.
    """

    __slots__ = ("_arrays", "_bins", "_count", "_mapping", "_max", "_max_buckets", "_min",
                 "_sum", "_zero")

    def __init__(
        self,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
    ) -> None:
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
        self._mapping = _mapping(float(relative_accuracy))
        self._max_buckets = int(max_buckets)
        self._bins: dict[int, int] | None = {}  # bucket key -> count (> 0); None: compact
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # sorted view
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    # ------------------------------------------------------------------ properties
    @property
    def relative_accuracy(self) -> float:
        """The relative-error bound ``alpha``."""
        return self._mapping.relative_accuracy

    @property
    def max_buckets(self) -> int:
        """The bound on non-empty buckets before the lowest ones collapse."""
        return self._max_buckets

    @property
    def count(self) -> int:
        """Number of values added (NaN/None not counted)."""
        return self._count

    @property
    def sum(self) -> float:
        """Exact (floating-point) sum of the values added."""
        return self._sum

    @property
    def min(self) -> float | None:
        """Smallest value added, ``None`` when empty."""
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        """Largest value added, ``None`` when empty."""
        return self._max if self._count else None

    @property
    def bucket_count(self) -> int:
        """Number of non-empty buckets (the zero bucket not included)."""
        return len(self._bins) if self._bins is not None else int(self._sorted()[0].size)

    @property
    def zero_count(self) -> int:
        """Number of values in the zero bucket (at or below ``mapping.min_possible``)."""
        return self._zero

    @property
    def mapping(self) -> LogarithmicMapping:
        """The key mapping (``key``, ``value``, ``gamma``, ``min_possible``); do not modify."""
        return self._mapping

    def buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, counts)`` of the non-empty buckets, keys increasing, as read-only arrays
        (the zero bucket is not included: see :attr:`zero_count`).

        >>> s = Sketch(0.01)
        >>> s.add_many([0.0, 1.0, 1.0, 100.0])
        >>> keys, counts = s.buckets()
        >>> keys.tolist(), counts.tolist(), s.zero_count
        ([0, 231], [2, 1], 1)
        """
        keys, counts, _ = self._sorted()
        return keys, counts

    def _dict(self) -> dict[int, int]:
        """The buckets as a dict (rebuilt from the arrays if :meth:`compact`)."""
        bins = self._bins
        if bins is None:
            keys, counts, _ = self._arrays  # type: ignore[misc]
            bins = self._bins = dict(zip(keys.tolist(), counts.tolist(), strict=True))
        return bins

    def compact(self) -> None:
        """Hold the buckets as int64 arrays only (~16 bytes a bucket against ~80 in the
        dict) until the next change: for a sketch kept long and read more than changed,
        such as the merge a trailing drift reference keeps per series."""
        if self._bins is not None and len(self._bins) > _SMALL:
            self._sorted()
            self._bins = None

    def _sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, counts, cumulative counts) in key order, read-only, cached until changed."""
        if self._arrays is None:
            if self._bins:
                keys = sorted(self._bins)
                k = np.array(keys, dtype=np.int64)
                c = np.array([self._bins[key] for key in keys], dtype=np.int64)
                cum = np.cumsum(c)
                for a in (k, c, cum):
                    a.flags.writeable = False
                self._arrays = (k, c, cum)
            else:
                self._arrays = (_EMPTY, _EMPTY, _EMPTY)
        return self._arrays

    def counts_at(self, keys: np.ndarray | Sequence[int]) -> np.ndarray:
        """Count of each bucket key in ``keys`` (0 where the bucket is empty), as int64.

        Lines two sketches up on common buckets, e.g. on the ``np.union1d`` of their keys.

        >>> s = Sketch(0.01)
        >>> s.add_many([1.0, 1.0, 100.0])
        >>> s.counts_at([-5, 0, 7, 231]).tolist()
        [0, 2, 0, 1]
        """
        wanted = np.asarray(keys, dtype=np.int64)
        out = np.zeros(wanted.shape, dtype=np.int64)
        own, counts, _ = self._sorted()
        if own.size and wanted.size:
            index = np.minimum(np.searchsorted(own, wanted), own.size - 1)
            found = own[index] == wanted
            out[found] = counts[index[found]]
        return out

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (f"Sketch(relative_accuracy={self.relative_accuracy}, count={self._count}, "
                f"buckets={self.bucket_count}, min={self.min}, max={self.max})")

    # ------------------------------------------------------------------ adding
    def add(self, value: float | None) -> None:
        """Add one value. For more than a handful of values use :meth:`add_many`."""
        self.add_many((value,))

    def add_many(self, values: np.ndarray | Sequence[float | None] | Iterable[float]) -> None:
        """Add a batch of values at once (NaN and ``None`` skipped)."""
        if isinstance(values, np.ndarray):
            if values.size > _SMALL:
                self._add_array(values.astype(np.float64, copy=False).ravel())
                return
            values = values.ravel().tolist()
        elif _is_iterator(values) or not isinstance(values, list | tuple):
            values = list(values)  # type: ignore[arg-type]
        if len(values) > _SMALL:
            self._add_array(np.asarray(values, dtype=np.float64).ravel())
            return
        clean = [v for v in map(_number, values) if v == v]  # NaN != NaN
        if not clean:
            return
        lo, hi = min(clean), max(clean)
        if lo < 0.0 or math.isinf(hi):
            raise ValueError(
                f"Sketch holds finite non-negative values, got min={lo!r} max={hi!r}"
            )
        mapping, bins, log, ceil = self._mapping, self._dict(), math.log, math.ceil
        floor, multiplier, offset = mapping.min_possible, mapping._multiplier, mapping._offset
        zero = 0
        for v in clean:
            if v > floor:  # LogarithmicMapping.key(v), inlined: the same arithmetic
                k = int(ceil(log(v, 2) * multiplier) + offset)
                bins[k] = bins.get(k, 0) + 1
            else:
                zero += 1
        self._added(len(clean), zero, math.fsum(clean) if len(clean) > 1 else clean[0], lo, hi)

    def _add_array(self, arr: np.ndarray) -> None:
        """:meth:`add_many` for a large batch: keys computed and counted with numpy."""
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            return
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or math.isinf(hi):
            raise ValueError(
                f"Sketch holds finite non-negative values, got min={lo!r} max={hi!r}"
            )
        positive = arr[arr > self._mapping.min_possible]
        if positive.size:
            keys, counts = np.unique(self._keys_of(positive), return_counts=True)
            bins = self._dict()
            for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
                bins[k] = bins.get(k, 0) + c
        self._added(int(arr.size), int(arr.size - positive.size), float(arr.sum()), lo, hi)

    def _added(self, n: int, zero: int, total: float, lo: float, hi: float) -> None:
        self._zero += zero
        self._count += n
        self._sum += total
        self._min = min(self._min, lo)
        self._max = max(self._max, hi)
        self._arrays = None
        self._collapse()

    def _keys_of(self, positive: np.ndarray) -> np.ndarray:
        """ddsketch's ``LogarithmicMapping.key`` for an array of values > min_possible."""
        mapping = self._mapping
        # Same arithmetic as LogarithmicMapping: log2(v) * multiplier, ceil, plus offset.
        scaled = (np.log(positive) / _LN2) * mapping._multiplier
        keys = np.ceil(scaled)
        near = np.abs(scaled - np.rint(scaled)) < _BOUNDARY_EPS
        if near.any():
            keys[near] = [math.ceil(mapping._log_gamma(float(v))) for v in positive[near]]
        return (keys + mapping._offset).astype(np.int64)

    def _collapse(self) -> None:
        """Fold the lowest buckets into the lowest kept one while over ``max_buckets``."""
        excess = len(self._dict()) - self._max_buckets
        if excess > 0:
            bins = self._dict()
            keys = sorted(bins)
            folded = sum(bins.pop(k) for k in keys[:excess])
            bins[keys[excess]] += folded
            self._arrays = None

    # ------------------------------------------------------------------ merging
    def merge(self, other: Sketch) -> None:
        """Fold ``other`` into this sketch (same ``relative_accuracy`` required)."""
        if not isinstance(other, Sketch):
            raise TypeError(f"cannot merge {type(other).__name__} into Sketch")
        if self._mapping.gamma != other._mapping.gamma:
            raise ValueError(
                "cannot merge sketches with different relative accuracy: "
                f"{self.relative_accuracy} and {other.relative_accuracy}"
            )
        if other._count == 0:
            return
        bins = self._dict()
        if bins:
            for k, c in other._dict().items():
                bins[k] = bins.get(k, 0) + c
        else:
            bins.update(other._dict())
        self._added(other._count, other._zero, other._sum, other._min, other._max)

    def subtract(self, other: Sketch) -> None:
        """Take ``other``'s values back out, as if they had never been merged: buckets,
        counts and sum (``min``/``max`` cannot be undone; :meth:`set_bounds` them).

        Raises ``ValueError`` and changes nothing when ``other`` is not contained.

        >>> a, b = Sketch(0.01), Sketch(0.01)
        >>> a.add_many([1.0, 5.0]); b.add_many([5.0])
        >>> a.subtract(b); a.count, a.sum, a.quantile(1.0) < 1.02
        (1, 1.0, True)
        """
        if other._count == 0:
            return
        bins = self._dict()
        if other._zero > self._zero or other._count > self._count or any(
                bins.get(k, 0) < c for k, c in other._dict().items()):
            raise ValueError("cannot subtract a sketch that was not merged into this one")
        for k, c in other._dict().items():
            left = bins[k] - c
            if left:
                bins[k] = left
            else:
                del bins[k]
        self._zero -= other._zero
        self._count -= other._count
        self._sum = self._sum - other._sum if self._count else 0.0
        if not self._count:
            self._min, self._max = math.inf, -math.inf
        self._arrays = None

    def set_bounds(self, lo: float, hi: float) -> None:
        """Set the exact ``min``/``max`` (after :meth:`subtract`, from what remains)."""
        if self._count:
            self._min, self._max = float(lo), float(hi)

    def copy(self) -> Sketch:
        """An independent copy."""
        out = Sketch.__new__(Sketch)
        out._mapping, out._max_buckets, out._arrays = self._mapping, self._max_buckets, None
        out._bins = dict(self._dict())
        out._zero, out._count, out._sum = self._zero, self._count, self._sum
        out._min, out._max = self._min, self._max
        return out

    # ------------------------------------------------------------------ querying
    def quantile(self, q: float) -> float | None:
        """Estimate of the value at rank ``floor(q * (count - 1))``; ``None`` when empty.

        Same convention as ``ddsketch.DDSketch.get_quantile_value`` (lower rank, bucket
        representative value, not clamped to ``[min, max]``).
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        if self._count == 0:
            return None
        rank = q * (self._count - 1)
        if rank < self._zero:
            return 0.0
        target = rank - self._zero
        bins = self._bins
        if self._arrays is None and bins is not None and len(bins) <= _SMALL:  # few buckets
            seen, key = 0, 0
            for key in sorted(bins):
                seen += bins[key]
                if seen > target:
                    break
            return float(self._mapping.value(key))
        keys, _, cumulative = self._sorted()
        index = int(np.searchsorted(cumulative, target, side="right"))
        index = min(index, keys.size - 1)
        return float(self._mapping.value(int(keys[index])))

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        """:meth:`quantile` for several ``q`` at once."""
        return [self.quantile(q) for q in qs]

    def count_at_most(self, threshold: float) -> int:
        """Approximate number of values ``<= threshold``: whole buckets up to its key.

        Exact except for values sharing ``threshold``'s bucket (within ``alpha`` of it).
        """
        if self._count == 0 or threshold < 0:
            return 0
        if threshold <= self._mapping.min_possible:
            return self._zero
        if math.isinf(threshold):
            return self._count
        key = self._mapping.key(float(threshold))
        return self._zero + sum(c for k, c in self._dict().items() if k <= key)

    # ------------------------------------------------------------------ serialization
    def to_builtins(self) -> dict[str, Any]:
        """Compact msgpack/JSON-safe form.

        ``a``: alpha; ``k``: first key then key deltas (small ints, 1 byte in msgpack);
        ``c``: counts; ``z``: zero-bucket count; ``s``/``lo``/``hi``: sum, min, max;
        ``b``: max_buckets when not the default. Empty sketches are just ``{"a": alpha}``.
        """
        out: dict[str, Any] = {"a": self.relative_accuracy}
        if self._max_buckets != DEFAULT_MAX_BUCKETS:
            out["b"] = self._max_buckets
        if self._count == 0:
            return out
        if bins := self._dict():
            keys = sorted(bins)
            out["k"] = [keys[0], *(b - a for a, b in pairwise(keys))]
            out["c"] = [bins[k] for k in keys]
        if self._zero:
            out["z"] = self._zero
        out["s"] = self._sum
        out["lo"] = self._min
        out["hi"] = self._max
        return out

    @classmethod
    def from_builtins(cls, data: dict[str, Any], relative_accuracy: float | None = None,
                      max_buckets: int | None = None) -> Sketch:
        """Inverse of :meth:`to_builtins`; validates shapes and counts. ``relative_accuracy``
        / ``max_buckets`` stand for ``a`` / ``b`` when the container holds them once for
        several sketches (stage 2 decodes ~10 per partial: no dict is copied for that)."""
        out = cls.__new__(cls)
        alpha = data["a"] if relative_accuracy is None else relative_accuracy
        out._mapping = _mapping(float(alpha))
        out._max_buckets = int(data.get("b", DEFAULT_MAX_BUCKETS) if max_buckets is None
                               else max_buckets)
        if out._max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, got {out._max_buckets}")
        out._arrays = None
        if not data.keys() - {"a", "b"}:  # empty (a histogram's unused sign, mostly)
            out._bins, out._zero, out._count = {}, 0, 0
            out._sum, out._min, out._max = 0.0, math.inf, -math.inf
            return out
        deltas = list(map(int, data.get("k", ())))
        counts = list(map(int, data.get("c", ())))
        if len(deltas) != len(counts):
            raise ValueError("malformed sketch: as many keys as counts are needed")
        if counts and (min(counts) <= 0 or (len(deltas) > 1 and min(deltas[1:]) <= 0)):
            raise ValueError("malformed sketch: keys must increase and counts be positive")
        out._bins = dict(zip(accumulate(deltas), counts, strict=True))
        out._zero = int(data.get("z", 0))
        if out._zero < 0:
            raise ValueError("malformed sketch: negative zero count")
        out._count = out._zero + sum(counts)
        if out._count:
            out._sum = float(data["s"])
            out._min = float(data["lo"])
            out._max = float(data["hi"])
        else:
            out._sum, out._min, out._max = 0.0, math.inf, -math.inf
        out._collapse()
        return out

    # ------------------------------------------------------------------ comparison
    def __eq__(self, other: object) -> bool:
        """Same alpha, buckets, counts, min and max; sums equal up to float rounding.

        Sums are compared with ``rel_tol=1e-9`` because float addition is not associative:
        merging the same partials in another order may change the last bits of ``sum``.
        """
        if not isinstance(other, Sketch):
            return NotImplemented
        return (
            self._mapping.gamma == other._mapping.gamma
            and self._count == other._count
            and self._zero == other._zero
            and self._dict() == other._dict()
            and (self._count == 0 or (self._min == other._min and self._max == other._max))
            and math.isclose(self._sum, other._sum, rel_tol=1e-9, abs_tol=1e-12)
        )

    __hash__ = None  # type: ignore[assignment]


def _is_iterator(values: object) -> bool:
    return not isinstance(values, np.ndarray | Sequence)


def _number(value: Any) -> float:
    """A value of a small batch as a float (``None`` as NaN, so it is skipped)."""
    return math.nan if value is None else float(value)
