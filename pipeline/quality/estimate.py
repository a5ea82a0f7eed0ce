"""Accuracy estimated before labels arrive, from confidences (CBPE-style). No I/O.

Labels come late, or for a sample only. What every inference carries is the model's
confidence, and a window's confidences come as a histogram over equal-width bins
(:func:`pipeline.quality.records.confidence_bin`). The labelled past tells how often
the model is right in each bin, so the expected accuracy of a window is

    accuracy = sum_b h_b p_b / N          (h_b inferences in bin b, N = sum_b h_b)

with ``p_b`` = P(correct | confidence in bin b), NannyML's confidence-based performance
estimation with the calibration learned per bin. Learning ``p_b`` from labels, rather than
trusting the raw confidence, keeps the estimate right for an over- or under-confident
model; a shift of the confidences (covariate shift) moves it through ``h``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import msgspec

from pipeline.quality.records import confidence_bin

__all__ = ["Calibration", "Estimate"]

CALIBRATION_FORMAT = 1


class Estimate(msgspec.Struct, frozen=True):
    """An estimated accuracy with its interval.

    The interval (``accuracy ± z·stderr``, clipped to [0, 1]) is for the accuracy the
    window's labels will show: it counts both the luck of the outcomes and what the
    calibration does not know yet. ``labels_used``: effective labels behind the calibration.
    """

    accuracy: float
    low: float
    high: float
    stderr: float
    inferences: int
    labels_used: int


class Calibration:
    """P(correct | confidence bin), learned from labelled outcomes; mergeable, no I/O.

    Each bin holds a Beta posterior: ``prior_weight`` pseudo-labels centred on the bin's
    midpoint confidence (what a calibrated model would score) plus the labels seen. A bin
    with few labels therefore falls back to the raw confidence; a bin with many follows
    the labels.

    ``memory`` bounds the evidence: whenever the effective labels held exceed it, every
    bin's counts are scaled by ``memory / total``. Old labels thus fade geometrically
    (one label learned one at a time keeps a weight ``memory / (memory + 1)`` per later
    label) and the calibration follows a model whose behaviour changes, about ``memory``
    labels behind it.

    >>> cal = Calibration(bins=4)
    >>> cal.learn([0, 0, 100, 300], [0, 0, 50, 270])  # right half the time at 0.5-0.75
    >>> [round(p, 3) for p in cal.probabilities()]
    [0.125, 0.375, 0.502, 0.9]
    >>> est = cal.estimate([0, 0, 50, 50])
    >>> round(est.accuracy, 3), est.inferences, est.labels_used
    (0.701, 100, 400)
    >>> cal.estimate([0, 0, 50, 50], min_labels=1000) is None  # not enough labels yet
    True
    """

    prior_weight = 2.0  # pseudo-labels of each bin's prior, centred on its midpoint

    def __init__(self, bins: int = 10, memory: int = 5000) -> None:
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        if memory <= 0:
            raise ValueError(f"memory must be positive, got {memory}")
        self.bins = bins
        self.memory = memory
        self._n = [0.0] * bins  # effective labelled outcomes per bin
        self._k = [0.0] * bins  # of which correct
        self._total = 0.0

    def __repr__(self) -> str:
        return f"Calibration(bins={self.bins}, memory={self.memory}, labelled={self._total:.1f})"

    def learn(self, counts: Sequence[int], correct: Sequence[int]) -> None:
        """Learn a window's labelled outcomes: per bin, how many and how many correct."""
        self._check_length(counts, "counts")
        self._check_length(correct, "correct")
        for b, (n, k) in enumerate(zip(counts, correct, strict=True)):
            if not 0 <= k <= n:
                raise ValueError(f"bin {b}: need 0 <= correct <= counts, got {k} of {n}")
        for b, (n, k) in enumerate(zip(counts, correct, strict=True)):
            self._n[b] += n
            self._k[b] += k
            self._total += n
        self._decay()

    def learn_one(self, confidence: float, correct: bool) -> None:
        """Learn one labelled outcome."""
        if not math.isfinite(confidence):
            raise ValueError(f"confidence must be a finite number, got {confidence!r}")
        b = confidence_bin(confidence, self.bins)
        self._n[b] += 1.0
        self._k[b] += 1.0 if correct else 0.0
        self._total += 1.0
        self._decay()

    def merge(self, other: Calibration) -> None:
        """Fold in another calibration's evidence (same bins), then decay to ``memory``."""
        if not isinstance(other, Calibration) or other.bins != self.bins:
            raise ValueError("can only merge a Calibration with the same number of bins")
        for b in range(self.bins):
            self._n[b] += other._n[b]
            self._k[b] += other._k[b]
        self._total = sum(self._n)
        self._decay()

    @property
    def labelled(self) -> float:
        """Effective labels held (after decay)."""
        return self._total

    def probabilities(self) -> list[float]:
        """Per bin posterior mean P(correct)."""
        w = self.prior_weight
        return [(k + w * m) / (n + w)
                for n, k, m in zip(self._n, self._k, self._midpoints(), strict=True)]

    def estimate(self, histogram: Sequence[int], min_labels: int = 200,
                 level: float = 0.95) -> Estimate | None:
        """The expected accuracy of a window with this confidence ``histogram``.

        ``None`` when the calibration holds fewer than ``min_labels`` effective labels or
        the histogram is empty. Variance: outcomes given the probabilities,
        ``sum_b h_b p_b (1 - p_b) / N²``, plus the calibration's own uncertainty,
        ``sum_b (h_b / N)² Var(p_b)`` with the Beta posterior's variance.
        """
        self._check_length(histogram, "histogram")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if any(h < 0 for h in histogram):
            raise ValueError("histogram counts must not be negative")
        total = sum(histogram)
        if total <= 0 or round(self._total) < min_labels:  # as labels_used counts them
            return None
        weight = self.prior_weight + 1.0  # Beta variance: p (1 - p) / (a + b + 1)
        accuracy = variance = 0.0
        for h, n, p in zip(histogram, self._n, self.probabilities(), strict=True):
            share = h / total
            accuracy += share * p
            variance += share * p * (1.0 - p) * (1.0 / total + share / (n + weight))
        stderr = math.sqrt(variance)
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        return Estimate(accuracy=accuracy, low=max(0.0, accuracy - z * stderr),
                        high=min(1.0, accuracy + z * stderr), stderr=stderr,
                        inferences=int(total), labels_used=round(self._total))

    def to_builtins(self) -> dict[str, Any]:
        """``{"format": 1, "n": [labels per bin], "k": [correct per bin]}`` (msgpack/JSON safe);
        ``bins`` and ``memory`` are configuration, given again on restore."""
        return {"format": CALIBRATION_FORMAT, "n": list(self._n), "k": list(self._k)}

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any], bins: int = 10,
                      memory: int = 5000) -> Calibration:
        """Inverse of :meth:`to_builtins`, with the (possibly changed) ``memory``.

        A saved calibration over another number of bins cannot be mapped onto these:
        ``ValueError``, and the caller starts a fresh one.
        """
        if not isinstance(data, Mapping) or data.get("format") != CALIBRATION_FORMAT:
            raise ValueError("not a Calibration (unknown format)")
        n, k = data.get("n"), data.get("k")
        if not isinstance(n, list) or not isinstance(k, list) or len(n) != len(k):
            raise ValueError("Calibration needs lists 'n' and 'k' of equal length")
        if len(n) != bins:
            raise ValueError(f"saved Calibration has {len(n)} bins, configured {bins}")
        out = cls(bins, memory)
        for b, (nb, kb) in enumerate(zip(n, k, strict=True)):
            if not (isinstance(nb, int | float) and isinstance(kb, int | float)
                    and math.isfinite(nb) and 0.0 <= kb <= nb):
                raise ValueError(f"Calibration bin {b}: need 0 <= k <= n, got {kb!r} of {nb!r}")
            out._n[b], out._k[b] = float(nb), float(kb)
        out._total = sum(out._n)
        out._decay()
        return out

    def _midpoints(self) -> list[float]:
        return [(b + 0.5) / self.bins for b in range(self.bins)]

    def _check_length(self, values: Sequence[int], name: str) -> None:
        if len(values) != self.bins:
            raise ValueError(f"{name} has {len(values)} bins, the calibration {self.bins}")

    def _decay(self) -> None:
        """Scale every bin by ``memory / total`` once the evidence exceeds ``memory``."""
        if self._total <= self.memory:
            return
        scale = self.memory / self._total
        self._n = [n * scale for n in self._n]
        self._k = [k * scale for k in self._k]
        self._total = float(self.memory)
