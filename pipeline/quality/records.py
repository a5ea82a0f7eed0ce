"""What travels between the quality stages: stubs, feedback items, outcomes. No I/O.

An inference is remembered by the join as a :class:`Stub`; a feedback event, once it
found its inference, becomes an :class:`Outcome`, the one thing the quality tallies
count. The join key of either side is ``e:<event_id>`` or ``r:<request_id>``; both
sides reach the join partition :func:`join_partition` gives, whoever produced them.
"""

from __future__ import annotations

import zlib

import msgspec

__all__ = ["Outcome", "Stub", "confidence_bin", "join_partition"]


class Stub(msgspec.Struct, array_like=True, frozen=True):
    """An inference as the join keeps it until its feedback comes (or the horizon)."""

    event_id: str
    series_key: str
    timestamp: float  # inference (event) time, Unix seconds
    prediction: str | float | None = None
    confidence: float | None = None
    latency_ms: float | None = None
    error: bool = False


class Outcome(msgspec.Struct, array_like=True, frozen=True):
    """One feedback joined to its inference: what the quality tallies count.

    ``kind`` says which of ``label``, ``satisfaction``, ``value`` is set. A label is
    compared with the prediction: both numbers → a regression error; else their string
    forms → right or wrong (classification)."""

    feedback_id: str
    kind: str  # "label" | "satisfaction" | "business"
    inference_time: float
    feedback_time: float
    prediction: str | float | None = None
    confidence: float | None = None
    label: str | float | None = None
    satisfaction: float | None = None
    value: float | None = None
    latency_ms: float | None = None
    error: bool = False

    @property
    def delay_seconds(self) -> float:
        """Label delay: feedback time after inference time (never negative)."""
        return max(0.0, self.feedback_time - self.inference_time)


def join_partition(join_id: str, partitions: int) -> int:
    """The joins-topic partition of a join key; the same for every producer of it.

    >>> join_partition("e:abc", 6) == join_partition("e:abc", 6)
    True
    """
    return zlib.crc32(join_id.encode()) % partitions


def confidence_bin(confidence: float, bins: int) -> int:
    """The equal-width bin of a confidence in [0, 1] (1.0 in the last bin), shared by
    the window histograms, the calibration and the ECE.

    >>> [confidence_bin(c, 10) for c in (0.0, 0.05, 0.1, 0.95, 1.0)]
    [0, 0, 1, 9, 9]
    """
    return min(bins - 1, max(0, int(confidence * bins)))
