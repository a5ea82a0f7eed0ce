"""Change-point detectors on per-window series (p99 latency, error rate, mean confidence,
output tokens, cost per request): one value per closed window.

A :class:`ChangeDetector` wraps a river drift detector behind river's verbs — ``update(x)``
and the ``drift_detected`` property — and adds ``checkpoint() -> bytes`` /
``restore(bytes)`` so stage 2 can persist its state periodically and resume after a restart
with exactly the detections an uninterrupted run would give (not re-learned from scratch).

**Standardisation.** River's detectors are tuned for inputs of unit scale (ADWIN's bound has
a range term, Page-Hinkley's ``delta``/``threshold`` are in input units), but a p99 latency
is in hundreds of ms and an error rate in hundredths. So each *regime* starts with a
calibration of ``calibration`` points whose median ``c`` and robust scale ``s`` (the std of
the points winsorised at ``c ± 3·1.4826·MAD``; if MAD is 0 the plain std, then ``1e-3·|c|``,
then ``min_scale``) are frozen;
the detector sees ``z = clip((x − c) / s, ±clip)``. The calibration points are then replayed
through the detector, so detection can start right after them. Freezing matters: a centre or
scale that kept adapting would follow a level shift and hide it. After a detection a new
regime starts (fresh river detector, new calibration), so the scale follows the series from
one change to the next.

**Clipping** ``|z| <= clip`` (default 3) makes a change point a *sustained* shift: one wild
window moves the statistics by at most ``clip`` and cannot fire Page-Hinkley alone. Single
outlying windows are the anomaly scorer's job (:mod:`pipeline.scoring.anomaly`).

**Checkpoint format.** A versioned msgpack envelope of the wrapper state (parameters,
calibration buffer, centre, scale, counters) holding a ``pickle`` of the river object. Pickle
is acceptable because checkpoints are taken periodically (every N windows, not per event),
written and read only by this pipeline's own state store: never restore bytes from elsewhere
(unpickling runs code). The envelope's parameters are checked on restore, so state cannot be
loaded into a detector configured differently.

Pure: no I/O.
"""

from __future__ import annotations

import abc
import math
import pickle
from typing import Any, ClassVar

import msgspec
import numpy as np

__all__ = ["CHECKPOINT_FORMAT", "ChangeDetector"]

CHECKPOINT_FORMAT = 1


class ChangeDetector(abc.ABC):
    """Base of the per-window change detectors (see the module docstring).

    Subclasses set ``name`` and implement :meth:`_new_detector` (a fresh river detector) and
    :meth:`params` (their own parameters, part of the checkpoint's identity).
    """

    name: ClassVar[str]

    def __init__(self, *, calibration: int = 30, clip: float = 3.0,
                 min_scale: float = 1e-12) -> None:
        if calibration < 3:
            raise ValueError(f"calibration must be >= 3, got {calibration}")
        if not clip > 0 or not min_scale > 0:
            raise ValueError("clip and min_scale must be > 0")
        self.calibration = int(calibration)
        self.clip = float(clip)
        self.min_scale = float(min_scale)
        self._detector = self._new_detector()
        self._buffer: list[float] = []
        self._center: float | None = None
        self._scale: float | None = None
        self._n = 0
        self._detections = 0
        self._drift_detected = False

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _new_detector(self) -> Any:
        """A fresh river drift detector with this detector's parameters."""

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """The subclass's own parameters (msgpack-safe)."""

    def _all_params(self) -> dict[str, Any]:
        return {"calibration": self.calibration, "clip": self.clip,
                "min_scale": self.min_scale, **self.params()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._all_params().items())
        return f"{type(self).__name__}({params})"

    # ------------------------------------------------------------------ state
    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` detected a change."""
        return self._drift_detected

    @property
    def n(self) -> int:
        """Number of values seen (NaN/None not counted)."""
        return self._n

    @property
    def detections(self) -> int:
        """Number of changes detected so far."""
        return self._detections

    @property
    def calibrated(self) -> bool:
        """False while the current regime is still calibrating (no detection possible)."""
        return self._scale is not None

    # ------------------------------------------------------------------ updating
    def update(self, x: float | None) -> bool:
        """Add the next window's value; True when a change is detected at this point.

        ``None``/NaN (a window without the metric, e.g. no traffic) is skipped.
        """
        self._drift_detected = False
        if x is None or math.isnan(x):
            return False
        if math.isinf(x):
            raise ValueError("ChangeDetector.update got an infinite value")
        self._n += 1
        if self._scale is None:
            self._buffer.append(float(x))
            if len(self._buffer) < self.calibration:
                return False
            self._center, self._scale = self._calibrate(np.asarray(self._buffer))
            feed, self._buffer = self._buffer, []
        else:
            feed = [float(x)]
        detected = False
        for value in feed:
            z = (value - self._center) / self._scale  # type: ignore[operator]
            self._detector.update(min(self.clip, max(-self.clip, z)))
            detected = detected or bool(self._detector.drift_detected)
        if detected:  # new regime: fresh detector, recalibrate on what comes next
            self._detections += 1
            self._detector = self._new_detector()
            self._center = self._scale = None
        self._drift_detected = detected
        return detected

    def _calibrate(self, values: np.ndarray) -> tuple[float, float]:
        center = float(np.median(values))
        mad = 1.4826 * float(np.median(np.abs(values - center)))
        if mad > 0:  # std of the values winsorised at ±3 MAD-sigmas: robust, yet efficient
            scale = float(np.clip(values, center - 3 * mad, center + 3 * mad).std())
        else:
            scale = float(values.std())
        if not scale > 0:
            scale = 1e-3 * abs(center)
        return center, max(scale, self.min_scale)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> bytes:
        """The full state as bytes (see the module docstring for the format)."""
        return msgspec.msgpack.encode({
            "v": CHECKPOINT_FORMAT, "d": self.name, "p": self._all_params(),
            "n": self._n, "k": self._detections, "dd": self._drift_detected,
            "buf": self._buffer, "c": self._center, "s": self._scale,
            "r": pickle.dumps(self._detector, protocol=pickle.HIGHEST_PROTOCOL),
        })

    def restore(self, data: bytes) -> None:
        """Replace this detector's state by a checkpoint of an identically configured one."""
        state = msgspec.msgpack.decode(data)
        if not isinstance(state, dict) or state.get("v") != CHECKPOINT_FORMAT:
            raise ValueError("not a ChangeDetector checkpoint of a supported format")
        if state["d"] != self.name or state["p"] != self._all_params():
            raise ValueError(
                f"checkpoint of {state['d']} {state['p']} cannot be restored into {self!r}"
            )
        self._detector = pickle.loads(state["r"])  # our own checkpoint only
        self._buffer = [float(v) for v in state["buf"]]
        self._center, self._scale = state["c"], state["s"]
        self._n, self._detections = int(state["n"]), int(state["k"])
        self._drift_detected = bool(state["dd"])
