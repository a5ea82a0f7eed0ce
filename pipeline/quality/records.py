"""What travels between the quality stages: stubs, feedback items, outcomes. No I/O.

An inference is remembered by the join as a :class:`Stub`; a feedback event, once it
found its inference, becomes an :class:`Outcome`, the one thing the quality tallies
count. The join key of either side is ``e:<event_id>`` or ``r:<request_id>``; both
sides reach the join partition :func:`join_partition` gives, whoever produced them.
"""

from __future__ import annotations

import zlib

import msgspec

from schemas.bounds import EpochSeconds
from schemas.feedback import FeedbackEvent

__all__ = [
    "Fate",
    "FeedbackItem",
    "JoinItem",
    "Outcome",
    "OutcomeBatch",
    "Stub",
    "StubItem",
    "confidence_bin",
    "join_id",
    "join_partition",
]


class Stub(msgspec.Struct, array_like=True, frozen=True):
    """An inference as the join keeps it until its feedback comes (or the horizon)."""

    event_id: str
    series_key: str
    timestamp: EpochSeconds  # inference (event) time, Unix seconds
    prediction: str | float | None = None
    confidence: float | None = None
    latency_ms: float | None = None
    error: bool = False


class StubItem(msgspec.Struct, array_like=True, frozen=True, tag="s"):
    """An inference on the joins topic, under one of its join keys. Only the ``primary``
    copy (the event id's) is counted in the window tallies; the request id's copy is
    there so feedback that names only the request finds it."""

    join_id: str
    stub: Stub
    primary: bool = True


class FeedbackItem(msgspec.Struct, array_like=True, frozen=True, tag="f"):
    """A valid feedback event on the joins topic, under its join key."""

    join_id: str
    feedback: FeedbackEvent


JoinItem = StubItem | FeedbackItem


class Fate(msgspec.Struct, array_like=True, frozen=True):
    """What became of one feedback event: stored in ClickHouse (``feedback``), so no
    feedback is lost even when it never counts.

    ``joined``: counted; ``duplicate``: its feedback id was counted before; ``repeat``: the
    inference already had feedback of this kind (the first label or satisfaction counts);
    ``unmatched``: no inference with its id within the horizon (unknown or expired)."""

    feedback: FeedbackEvent
    status: str  # "joined" | "duplicate" | "repeat" | "unmatched"
    series_key: str = ""
    inference_time: EpochSeconds | None = None
    prediction: str | float | None = None


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


class OutcomeBatch(msgspec.Struct, array_like=True, frozen=True):
    """What one join partition hands the quality windows of one series in one step.

    ``(source, seq, series_key)`` identifies it: ``seq`` is the offset of the joins record
    it came from (-1: from the join's clock, fates only), so a batch re-sent after a crash
    is recognised and merged once. ``tallies`` are the
    inference-time windows' inference counts ``(window start, QualityCounts builtins)``;
    ``fates`` are for the store (``series_key`` is empty for unmatched feedback)."""

    source: int
    seq: int
    series_key: str
    outcomes: list[Outcome] = []
    tallies: list[tuple[float, dict]] = []
    fates: list[Fate] = []
    serving: dict[str, int | float] = {}  # VersionStats sums of the inferences in this batch


def join_id(event_id: str | None, request_id: str | None) -> str:
    """The join key: the event id when known, else the request id.

    >>> join_id("ev-1", "req-1"), join_id(None, "req-1")
    ('e:ev-1', 'r:req-1')
    """
    return f"e:{event_id}" if event_id else f"r:{request_id}"


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
