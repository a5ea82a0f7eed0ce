"""ADWIN (adaptive windowing) on standardised per-window values.

Defaults for one value per window: ``delta = 0.002`` (river's; the confidence of each cut
test), ``clock = 1`` (river's default 32 checks for a cut only every 32 values: 32 windows,
half an hour of one-minute windows, is far too late here, and one check per window is
cheap), ``grace_period = 10`` and ``min_window_length = 5``. Measured on 300 seeded series
of 1,000 windows (same set-up as Page-Hinkley's): no false alarm at all, median delay 16
windows for a 2 σ shift, 12 for 3 σ, 10 for 4 σ — the conservative detector beside
Page-Hinkley's faster one (``delta = 0.02`` is ~4 windows faster at 1–2 % false alarms).
In ``benchmarks/drift_eval.py`` (10 s windows of real traffic) it never flags a shift within
3 windows — median 10–11 windows after a 0.5–2 σ shift of the requests, at 0.08 false alarms
per 1,000 windows of a series: its cut needs several points on each side. ``delta = 0.1``,
``min_window_length = 2`` reached 51 % within 3 windows but 1.3 false alarms per 1,000 on
seasonal traffic, so the defaults stay and Page-Hinkley is the fast detector.
"""

from __future__ import annotations

from typing import Any, ClassVar

from river.drift import ADWIN

from pipeline.scoring.detectors.base import ChangeDetector

__all__ = ["ADWINDetector"]


class ADWINDetector(ChangeDetector):
    """river's ADWIN behind :class:`ChangeDetector`.

    >>> import random
    >>> rng = random.Random(1)
    >>> detector = ADWINDetector()
    >>> series = [rng.gauss(100, 5) for _ in range(200)] + [rng.gauss(130, 5) for _ in range(50)]
    >>> [i for i, x in enumerate(series) if detector.update(x)]
    [209]
    """

    name: ClassVar[str] = "adwin"

    def __init__(self, *, delta: float = 0.002, clock: int = 1, grace_period: int = 10,
                 min_window_length: int = 5, calibration: int = 30, clip: float = 3.0,
                 min_scale: float = 1e-12) -> None:
        self.delta = float(delta)
        self.clock = int(clock)
        self.grace_period = int(grace_period)
        self.min_window_length = int(min_window_length)
        super().__init__(calibration=calibration, clip=clip, min_scale=min_scale)

    def params(self) -> dict[str, Any]:
        return {"delta": self.delta, "clock": self.clock, "grace_period": self.grace_period,
                "min_window_length": self.min_window_length}

    def _new_detector(self) -> ADWIN:
        return ADWIN(delta=self.delta, clock=self.clock, grace_period=self.grace_period,
                     min_window_length=self.min_window_length)
