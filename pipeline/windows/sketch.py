"""A mergeable quantile sketch with a relative-error bound, DDSketch-compatible, batch-first.

Bucket keys are those of ``ddsketch.mapping.LogarithmicMapping(relative_accuracy)``, so a
:class:`Sketch` answers exactly like ``ddsketch.DDSketch`` fed the same values: for any
``q``, the estimate ``x̂`` of the order statistic ``x`` at rank ``floor(q * (count - 1))``
satisfies ``|x̂ - x| <= alpha * x``. Unlike ``ddsketch.DDSketch`` it adds a whole batch with
numpy (:meth:`Sketch.add_many`): the keys of all values are computed at once, counted with
``np.unique`` and merged into sorted ``(keys, counts)`` arrays. Stage 1 adds tens of
thousands of events per second; per-value Python work would dominate.

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
from typing import Any

import numpy as np
from ddsketch.mapping import LogarithmicMapping

__all__ = ["DEFAULT_MAX_BUCKETS", "DEFAULT_RELATIVE_ACCURACY", "Sketch"]

DEFAULT_RELATIVE_ACCURACY = 0.01
DEFAULT_MAX_BUCKETS = 2048

_EMPTY = np.empty(0, dtype=np.int64)
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

    __slots__ = ("_count", "_counts", "_keys", "_mapping", "_max", "_max_buckets", "_min",
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
        self._keys: np.ndarray = _EMPTY  # sorted, unique bucket keys
        self._counts: np.ndarray = _EMPTY  # counts, aligned with _keys, all > 0
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
        return int(self._keys.size)

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
        keys, counts = self._keys.view(), self._counts.view()
        keys.flags.writeable = counts.flags.writeable = False
        return keys, counts

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
        if self._keys.size and wanted.size:
            index = np.minimum(np.searchsorted(self._keys, wanted), self._keys.size - 1)
            found = self._keys[index] == wanted
            out[found] = self._counts[index[found]]
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
        arr = np.asarray(values if not _is_iterator(values) else list(values), dtype=np.float64)
        arr = arr.ravel()
        if arr.size == 0:
            return
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
            self._merge_buckets(keys, counts.astype(np.int64))
        self._zero += int(arr.size - positive.size)
        self._count += int(arr.size)
        self._sum += float(arr.sum())
        self._min = min(self._min, lo)
        self._max = max(self._max, hi)

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

    def _merge_buckets(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add sorted unique ``keys`` with ``counts`` into the store, then enforce the bound."""
        if self._keys.size == 0:
            self._keys, self._counts = keys.copy(), counts.copy()
        elif keys.size:
            all_keys = np.concatenate((self._keys, keys))
            all_counts = np.concatenate((self._counts, counts))
            merged, inverse = np.unique(all_keys, return_inverse=True)
            summed = np.zeros(merged.size, dtype=np.int64)
            np.add.at(summed, inverse, all_counts)
            self._keys, self._counts = merged, summed
        self._collapse()

    def _collapse(self) -> None:
        excess = self._keys.size - self._max_buckets
        if excess > 0:
            folded = int(self._counts[: excess + 1].sum())
            self._keys = self._keys[excess:].copy()
            self._counts = self._counts[excess:].copy()
            self._counts[0] = folded

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
        self._merge_buckets(other._keys, other._counts)
        self._zero += other._zero
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> Sketch:
        """An independent copy."""
        out = Sketch(self.relative_accuracy, self._max_buckets)
        out._keys, out._counts = self._keys.copy(), self._counts.copy()
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
        cumulative = np.cumsum(self._counts)
        index = int(np.searchsorted(cumulative, rank - self._zero, side="right"))
        index = min(index, self._keys.size - 1)
        return float(self._mapping.value(int(self._keys[index])))

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
        upto = int(np.searchsorted(self._keys, key, side="right"))
        return self._zero + int(self._counts[:upto].sum())

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
        if self._keys.size:
            out["k"] = np.diff(self._keys, prepend=0).tolist()
            out["c"] = self._counts.tolist()
        if self._zero:
            out["z"] = self._zero
        out["s"] = self._sum
        out["lo"] = self._min
        out["hi"] = self._max
        return out

    @classmethod
    def from_builtins(cls, data: dict[str, Any]) -> Sketch:
        """Inverse of :meth:`to_builtins`; validates shapes and counts."""
        out = cls(float(data["a"]), int(data.get("b", DEFAULT_MAX_BUCKETS)))
        keys = np.cumsum(np.asarray(data.get("k", ()), dtype=np.int64))
        counts = np.asarray(data.get("c", ()), dtype=np.int64)
        if keys.shape != counts.shape or (counts <= 0).any() or (
            keys.size > 1 and (np.diff(keys) <= 0).any()
        ):
            raise ValueError("malformed sketch: keys must increase and counts be positive")
        out._keys, out._counts = keys, counts
        out._zero = int(data.get("z", 0))
        if out._zero < 0:
            raise ValueError("malformed sketch: negative zero count")
        out._count = out._zero + int(counts.sum())
        if out._count:
            out._sum = float(data["s"])
            out._min = float(data["lo"])
            out._max = float(data["hi"])
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
            and np.array_equal(self._keys, other._keys)
            and np.array_equal(self._counts, other._counts)
            and (self._count == 0 or (self._min == other._min and self._max == other._max))
            and math.isclose(self._sum, other._sum, rel_tol=1e-9, abs_tol=1e-12)
        )

    __hash__ = None  # type: ignore[assignment]


def _is_iterator(values: object) -> bool:
    return not isinstance(values, np.ndarray | Sequence)
