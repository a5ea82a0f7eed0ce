"""Half-Space Trees (river) with feature limits set from the warm-up, scores rescaled.

river's :class:`~river.anomaly.HalfSpaceTrees` splits each feature inside fixed limits
(default ``[0, 1]``), which window metrics (ms, tokens, USD) do not respect. So the first
``warm_up`` vectors are buffered; their per-feature ``[min, max]``, widened by ``margin``
times the range on both sides (``±max(|v|·0.1, 1e-9)`` for a constant feature), become the
limits; then the trees are built and learn the buffered vectors. ``window_size`` (the
reference-mass window) must not exceed ``warm_up``, so the first reference window is full
when scoring starts.

river's score ``1 − S / S_max`` (``S`` the mass-weighted depth sum over the trees) lives in a
narrow band near 1 for small windows, whatever the point. It is rescaled so typical windows
score ~0 and isolated ones 1: ``score = (S_typ − S) / (S_typ − S_min)`` clipped to ``[0, 1]``,
with ``S_typ`` the median ``S`` of the vectors of the current reference window and
``S_min = n_trees · window_size`` (a point isolated right below the root of every tree).

Defaults (``n_trees = 25``, ``height = 6``, ``window_size = 20``, ``margin = 1.0``) come
from the evaluation described in :mod:`pipeline.scoring.anomaly`: ``margin`` 0.25 → 1.0 halved the
false positives; deeper trees or more trees did not help.

The checkpoint holds a ``pickle`` of the river model (taken periodically, read back only by
this pipeline) inside the msgpack envelope of :class:`~pipeline.scoring.anomaly.base.AnomalyScorer`.
"""

from __future__ import annotations

import pickle
from collections import deque
from typing import Any, ClassVar

import numpy as np
from river.anomaly import HalfSpaceTrees

from pipeline.scoring.anomaly.base import AnomalyScorer

__all__ = ["HalfSpaceTreesScorer"]


class HalfSpaceTreesScorer(AnomalyScorer):
    """river HalfSpaceTrees with data-driven limits and a rescaled score.

    >>> import random
    >>> rng = random.Random(0)
    >>> scorer = HalfSpaceTreesScorer(seed=1)
    >>> for _ in range(60):
    ...     scorer.learn_one({"latency_p99_ms": rng.gauss(300, 20),
    ...                       "error_rate": rng.gauss(0.01, 0.002)})
    >>> typical = scorer.score_one({"latency_p99_ms": 300.0, "error_rate": 0.01})
    >>> outlier = scorer.score_one({"latency_p99_ms": 600.0, "error_rate": 0.05})
    >>> typical < 0.5 < outlier
    True
    """

    name: ClassVar[str] = "half_space_trees"

    def __init__(self, *, n_trees: int = 25, height: int = 6, window_size: int = 20,
                 margin: float = 1.0, seed: int = 0, warm_up: int = 20) -> None:
        super().__init__(warm_up=warm_up)
        if not 1 <= window_size <= warm_up:
            raise ValueError(f"window_size must be in [1, warm_up={warm_up}], got {window_size}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.n_trees = int(n_trees)
        self.height = int(height)
        self.window_size = int(window_size)
        self.margin = float(margin)
        self.seed = int(seed)
        self._buffer: list[dict[str, float]] = []
        self._model: HalfSpaceTrees | None = None
        self._limits: dict[str, tuple[float, float]] = {}
        self._recent: deque[dict[str, float]] = deque(maxlen=self.window_size)
        self._reference: list[dict[str, float]] = []
        self._typical: float | None = None

    def params(self) -> dict[str, Any]:
        return {"n_trees": self.n_trees, "height": self.height,
                "window_size": self.window_size, "margin": self.margin, "seed": self.seed}

    @property
    def limits(self) -> dict[str, tuple[float, float]]:
        """The feature limits fixed at the end of the warm-up (empty before)."""
        return dict(self._limits)

    def _learn(self, x: dict[str, float]) -> None:
        if self._model is None:
            self._buffer.append(x)
            if len(self._buffer) < self.warm_up:
                return
            self._limits = self._limits_of(self._buffer)
            self._model = HalfSpaceTrees(n_trees=self.n_trees, height=self.height,
                                         window_size=self.window_size, limits=self._limits,
                                         seed=self.seed)
            pending, self._buffer = self._buffer, []
        else:
            pending = [x]
        for vector in pending:
            self._model.learn_one(vector)
            self._recent.append(vector)
            if self._model.counter == 0:  # masses pivoted: a new reference window
                self._reference = list(self._recent)
                self._typical = None

    def _limits_of(self, vectors: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
        limits: dict[str, tuple[float, float]] = {}
        for name in sorted({k for v in vectors for k in v}):
            values = np.array([v[name] for v in vectors if name in v])
            lo, hi = float(values.min()), float(values.max())
            pad = self.margin * (hi - lo) if hi > lo else max(abs(lo) * 0.1, 1e-9)
            limits[name] = (lo - pad, hi + pad)
        return limits

    def _mass(self, x: dict[str, float]) -> float:
        """``S`` of ``x``: river's score undone (``S = (1 − score) · S_max``)."""
        model = self._model
        assert model is not None
        return (1.0 - model.score_one(x)) * model._max_score

    def _score(self, x: dict[str, float]) -> float | None:
        if self._model is None or not self._reference:
            return None
        if self._typical is None:
            self._typical = float(np.median([self._mass(v) for v in self._reference]))
        lowest = float(self.n_trees * self.window_size)
        mass = self._mass(x)
        if self._typical <= lowest:
            return 0.0 if mass >= self._typical else 1.0
        return (self._typical - mass) / (self._typical - lowest)

    def _state(self) -> Any:
        return {
            "buf": self._buffer,
            "lim": {k: list(v) for k, v in self._limits.items()},
            "model": None if self._model is None else pickle.dumps(self._model),
            "recent": list(self._recent),
            "ref": self._reference,
        }

    def _load(self, state: Any) -> None:
        self._buffer = [dict(v) for v in state["buf"]]
        self._limits = {str(k): (float(v[0]), float(v[1])) for k, v in state["lim"].items()}
        model = state["model"]
        self._model = None if model is None else pickle.loads(model)  # our own checkpoint
        self._recent = deque((dict(v) for v in state["recent"]), maxlen=self.window_size)
        self._reference = [dict(v) for v in state["ref"]]
        self._typical = None
