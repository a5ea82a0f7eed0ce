"""The anomaly-scorer contract: ``learn_one(x)`` / ``score_one(x) -> float | None``.

``x`` is the vector of one series' window metrics (``{"latency_p99_ms": 812.0,
"error_rate": 0.01, ...}``). The verbs are river's: ``score_one`` reads, ``learn_one``
mutates and returns nothing; score a window *before* learning it. Scores are in ``[0, 1]``
(higher = more anomalous). During the warm-up — the first ``warm_up`` learned windows
(default 20) — ``score_one`` returns ``None``: too little history to call anything anomalous.
``None``/NaN entries of ``x`` are ignored (a window without traffic has no p99).

``checkpoint() -> bytes`` / ``restore(bytes)`` persist the full state so a restarted worker
continues exactly where it stopped (same scores as an uninterrupted run). The envelope is
msgpack with the scorer's name and parameters, checked on restore.

Pure: no I/O.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

__all__ = ["CHECKPOINT_FORMAT", "AnomalyScorer", "Vector"]

CHECKPOINT_FORMAT = 1
Vector = Mapping[str, float | None]


def _clean(x: Vector) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in x.items():
        if value is None or math.isnan(value):
            continue
        if math.isinf(value):
            raise ValueError(f"infinite value for {name!r}")
        out[name] = float(value)
    return out


class AnomalyScorer(abc.ABC):
    """Base of the anomaly scorers (see the module docstring).

    Subclasses set ``name`` and implement :meth:`_learn`, :meth:`_score` (called after the
    warm-up only, may return ``None`` when no feature of ``x`` is known), :meth:`params`,
    :meth:`_state` and :meth:`_load`.
    """

    name: ClassVar[str]

    def __init__(self, *, warm_up: int = 20) -> None:
        if warm_up < 1:
            raise ValueError(f"warm_up must be >= 1, got {warm_up}")
        self.warm_up = int(warm_up)
        self._n = 0

    @property
    def n_learned(self) -> int:
        """Number of vectors learned."""
        return self._n

    @property
    def ready(self) -> bool:
        """True once the warm-up is over (``score_one`` may return a score)."""
        return self._n >= self.warm_up

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._all_params().items())
        return f"{type(self).__name__}({params})"

    def learn_one(self, x: Vector) -> None:
        """Learn one window's metrics."""
        clean = _clean(x)
        if clean:
            self._n += 1
            self._learn(clean)

    def score_one(self, x: Vector) -> float | None:
        """Anomaly score in ``[0, 1]``; ``None`` during the warm-up."""
        if not self.ready:
            return None
        clean = _clean(x)
        score = self._score(clean) if clean else None
        return None if score is None else min(1.0, max(0.0, float(score)))

    @abc.abstractmethod
    def _learn(self, x: dict[str, float]) -> None: ...

    @abc.abstractmethod
    def _score(self, x: dict[str, float]) -> float | None: ...

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """The subclass's own parameters (msgpack-safe)."""

    @abc.abstractmethod
    def _state(self) -> Any:
        """The subclass's state, msgpack-encodable."""

    @abc.abstractmethod
    def _load(self, state: Any) -> None:
        """Inverse of :meth:`_state`."""

    def _all_params(self) -> dict[str, Any]:
        return {"warm_up": self.warm_up, **self.params()}

    def checkpoint(self) -> bytes:
        """The full state as bytes."""
        return msgspec.msgpack.encode({"v": CHECKPOINT_FORMAT, "s": self.name,
                                       "p": self._all_params(), "n": self._n,
                                       "state": self._state()})

    def restore(self, data: bytes) -> None:
        """Replace this scorer's state by a checkpoint of an identically configured one."""
        envelope = msgspec.msgpack.decode(data)
        if not isinstance(envelope, dict) or envelope.get("v") != CHECKPOINT_FORMAT:
            raise ValueError("not an AnomalyScorer checkpoint of a supported format")
        if envelope["s"] != self.name or envelope["p"] != self._all_params():
            raise ValueError(f"checkpoint of {envelope['s']} {envelope['p']} cannot be "
                             f"restored into {self!r}")
        self._load(envelope["state"])
        self._n = int(envelope["n"])
