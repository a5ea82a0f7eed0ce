"""Robust z-score anomaly score: running median and MAD per feature over a sliding window.

For each feature, ``z = |x − median| / s`` with ``s = 1.4826 · MAD`` over the last ``window``
learned values (falling back to ``1.2533 ·`` mean absolute deviation when more than half the
values are equal, then to ``min_scale``). The window's score is a logistic of the largest
``z``::

    score = 1 / (1 + exp(−(max_z − threshold_z) / sharpness))

``threshold_z = 3.5`` is Iglewicz & Hoaglin's cut-off for the modified z-score (score 0.5
there); ``sharpness = 0.5`` makes a z of 2.5 score 0.12 and a z of 5 score 0.95. Max, not a
sum: one metric far off is an anomaly even when the others are normal, and the score does not
creep up with the number of metrics. Medians and MADs of a window ignore a few outliers, so
learning anomalous windows does not teach the scorer that they are normal.

A feature that is exactly constant over the window (error rate always 0) has no spread: set
``min_scale`` for it (e.g. ``{"error_rate": 0.01}``), otherwise any change scores 1.0.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from pipeline.scoring.anomaly.base import AnomalyScorer, Vector

__all__ = ["MedianMADScorer"]


class MedianMADScorer(AnomalyScorer):
    """Robust z-score of the most extreme feature, mapped into ``[0, 1]``.

    >>> import random
    >>> rng = random.Random(0)
    >>> scorer = MedianMADScorer(warm_up=20)
    >>> for _ in range(50):
    ...     scorer.learn_one({"latency_p99_ms": rng.gauss(300, 20),
    ...                       "error_rate": rng.gauss(0.01, 0.002)})
    >>> scorer.score_one({"latency_p99_ms": 305.0, "error_rate": 0.011}) < 0.05
    True
    >>> scorer.score_one({"latency_p99_ms": 600.0, "error_rate": 0.011}) > 0.99
    True
    """

    name: ClassVar[str] = "median_mad"

    def __init__(self, *, window: int = 100, threshold_z: float = 3.5, sharpness: float = 0.5,
                 min_scale: float | Mapping[str, float] = 1e-9, warm_up: int = 20) -> None:
        super().__init__(warm_up=warm_up)
        if window < 3:
            raise ValueError(f"window must be >= 3, got {window}")
        if not sharpness > 0:
            raise ValueError(f"sharpness must be > 0, got {sharpness}")
        self.window = int(window)
        self.threshold_z = float(threshold_z)
        self.sharpness = float(sharpness)
        self.min_scale: float | dict[str, float] = (
            dict(min_scale) if isinstance(min_scale, Mapping) else float(min_scale)
        )
        self._history: dict[str, deque[float]] = {}

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "threshold_z": self.threshold_z,
                "sharpness": self.sharpness, "min_scale": self.min_scale}

    def _floor(self, name: str) -> float:
        if isinstance(self.min_scale, dict):
            return self.min_scale.get(name, 1e-9)
        return self.min_scale

    def _learn(self, x: dict[str, float]) -> None:
        for name, value in x.items():
            history = self._history.get(name)
            if history is None:
                history = self._history[name] = deque(maxlen=self.window)
            history.append(value)

    def zscores(self, x: Vector) -> dict[str, float]:
        """Robust z per feature of ``x`` that has at least 3 learned values (which metric is
        off, and by how much)."""
        out: dict[str, float] = {}
        for name, value in x.items():
            history = self._history.get(name)
            if value is None or math.isnan(value) or history is None or len(history) < 3:
                continue
            values = np.fromiter(history, dtype=np.float64, count=len(history))
            median = float(np.median(values))
            deviations = np.abs(values - median)
            scale = 1.4826 * float(np.median(deviations))
            if not scale > 0:
                scale = 1.2533 * float(deviations.mean())
            scale = max(scale, self._floor(name))
            out[name] = abs(float(value) - median) / scale
        return out

    def _score(self, x: dict[str, float]) -> float | None:
        z = self.zscores(x)
        if not z:
            return None
        exponent = -(max(z.values()) - self.threshold_z) / self.sharpness
        return 1.0 / (1.0 + math.exp(min(exponent, 700.0)))

    def _state(self) -> Any:
        return {name: list(history) for name, history in self._history.items()}

    def _load(self, state: Any) -> None:
        self._history = {str(name): deque((float(v) for v in values), maxlen=self.window)
                         for name, values in state.items()}
