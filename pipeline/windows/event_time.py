"""Event-time window bookkeeping: window assignment and per-partition watermarks. No I/O.

A window ``[start, start + size)`` closes on a partition when that partition's
watermark — the max event time seen minus the allowed lateness — passes its end.
An idle partition (no events for ``idle_timeout`` wall-clock seconds) must not hold
windows open forever, so its watermark then advances with the wall clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.config import MetricsSettings

__all__ = ["PartitionClock", "WindowSpec"]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Tumbling (``hop is None``) or hopping windows, in seconds of event time.

    >>> WindowSpec(size=10).starts(1234.5)
    [1230.0]
    >>> WindowSpec(size=10, hop=5).starts(1234.5)
    [1225.0, 1230.0]
    """

    size: float
    hop: float | None = None
    lateness: float = 5.0
    idle_timeout: float = 30.0

    @classmethod
    def from_settings(cls, metrics: MetricsSettings) -> WindowSpec:
        return cls(metrics.window_seconds, metrics.hop_seconds, metrics.lateness_seconds,
                   metrics.idle_timeout_seconds)

    def __post_init__(self) -> None:
        if self.hop is not None and not (0 < self.hop <= self.size):
            raise ValueError(f"hop must be in (0, size]; got hop={self.hop} size={self.size}")

    def starts(self, ts: float) -> list[float]:
        """Starts of every window that contains event time ``ts``, oldest first.

        Computed on whole milliseconds — the precision ClickHouse stores event time
        with — so a recomputation in SQL puts every event in the same window.
        """
        ms = round(ts * 1000)
        size = round(self.size * 1000)
        step = round((self.hop or self.size) * 1000)
        last = ms // step * step
        if self.hop is None:
            return [last / 1000]
        first = last - (-(-size // step) - 1) * step
        return [s / 1000 for s in range(first, last + 1, step) if s <= ms < s + size]

    def end(self, start: float) -> float:
        return start + self.size


@dataclass(slots=True)
class PartitionClock:
    """The watermark of one source partition.

    ``observe`` takes each event time in offset order; ``watermark(wall)`` is
    ``max_event_time - lateness``, advanced by the wall-clock time beyond the idle
    timeout when the partition has gone quiet.
    """

    lateness: float
    idle_timeout: float
    max_event_time: float = -math.inf
    last_event_wall: float = -math.inf

    def observe(self, ts: float, wall: float) -> None:
        if ts > self.max_event_time:
            self.max_event_time = ts
        self.last_event_wall = wall

    def event_watermark(self) -> float:
        """The watermark as set by events alone (deterministic under replay)."""
        return self.max_event_time - self.lateness

    def watermark(self, wall: float) -> float:
        base = self.event_watermark()
        idle_for = wall - self.last_event_wall
        if math.isfinite(base) and idle_for > self.idle_timeout:
            return base + (idle_for - self.idle_timeout)
        return base

    def to_builtins(self) -> list[float]:
        return [self.max_event_time, self.last_event_wall]

    @classmethod
    def from_builtins(cls, data: list[float], lateness: float, idle_timeout: float
                      ) -> PartitionClock:
        return cls(lateness, idle_timeout, float(data[0]), float(data[1]))
