"""Quality windows of the series of one outcomes partition. No I/O.

Outcome batches from the join fill two kinds of window per series:

- ``inference_time``: placed by the inference's time, so a window's quality fills in as
  its labels arrive. Its inference tallies give the label coverage and the confidence
  histogram the accuracy estimate reads. Kept for the join horizon.
- ``feedback_time``: placed by the feedback's time: what the labels received in that
  window say. The basis alert rules read for realised quality.

A window is published once it ends (plus a grace for the two hops from the sources),
then again whenever it changed, at most once per window length. Its ``version`` is
``1 + floor((wall - window_end) / window_seconds)``: emissions of one window are at least a
window length apart, so versions grow without any state, across restarts and after a
window was forgotten and made again. Each series learns its calibration (P(correct |
confidence)) from its labelled outcomes; inference-time windows carry the estimate.

Batches are merged once. A batch re-sent by the join (after its crash) has the identity
``(source, seq, series)`` of the first, and each series keeps the last ``seq`` merged per
join partition (a join partition sends a series' batches in offset order, and re-sends
them in that order). An outcomes record read again after this stage's own crash is known
per window and per calibration: each keeps the last outcomes offset it absorbed, so a
change set that landed only in part is completed by the replay, not counted twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.config import Settings
from pipeline.quality.counts import QualityCounts
from pipeline.quality.estimate import Calibration
from pipeline.quality.records import OutcomeBatch
from pipeline.quality.versions import VersionStats
from pipeline.scoring.baselines import parse_series_key
from schemas.quality import QualityWindow, VersionSummary

__all__ = ["QualityWindows"]

log = logging.getLogger(__name__)
_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder()
INFERENCE, FEEDBACK = "inference_time", "feedback_time"
WindowKey = tuple[str, str, float]  # (series key, basis, window start)


@dataclass(slots=True)
class _Window:
    counts: QualityCounts | None  # None: at rest, as ``raw``
    raw: bytes | None = None
    dirty: bool = False  # changed since last published
    next_emit: float = 0.0  # wall clock: not published again before
    offset: int = -1  # the last outcomes offset absorbed


@dataclass
class _Series:
    labels: dict[str, str]
    calibration: Calibration
    calibration_changed: bool = False
    calibration_offset: int = -1  # the last outcomes offset it learned from
    marks: dict[int, int] = field(default_factory=dict)  # join partition -> last seq
    # this period's sums for version comparison, published every window length
    period: VersionStats = field(default_factory=VersionStats)
    period_start: float | None = None
    period_offset: int = -1
    period_changed: bool = False
    seen: float | None = None  # wall clock of its last batch (None: not since restore)


@dataclass
class QualityWindows:
    """Windows, calibrations and merge marks of one outcomes partition."""

    settings: Settings
    windows: dict[WindowKey, _Window] = field(default_factory=dict)
    series: dict[str, _Series] = field(default_factory=dict)
    too_old: int = 0  # outcomes for windows past the horizon: counted in fates only
    _changed: set[WindowKey] = field(default_factory=set)  # to checkpoint
    _dirty: set[WindowKey] = field(default_factory=set)  # to publish
    _now: float = 0.0  # the wall clock of the batch being added
    _marks_changed: set[str] = field(default_factory=set)  # series
    _forgotten: set[str] = field(default_factory=set)  # series whose state to delete

    # ------------------------------------------------------------------ verbs
    def add(self, batch: OutcomeBatch, wall: float, offset: int) -> bool:
        """Merge one batch read at outcomes ``offset``; False when it was merged before."""
        if not batch.series_key or batch.seq < 0:
            return False  # fates of unmatched feedback: for the store only
        self._now = wall
        series = self._series(batch.series_key)
        series.seen = wall
        if batch.seq <= series.marks.get(batch.source, -1):
            return False
        q = self.settings.quality
        oldest = wall - q.horizon_seconds - q.wait_for_inference_seconds - q.window_seconds
        for start, data in batch.tallies:
            if start >= oldest:
                window = self._window(batch.series_key, INFERENCE, start, offset)
                if window is not None:
                    window.merge_builtins(data)
        learned = self._new()
        for outcome in batch.outcomes:
            at_inference = self._start(outcome.inference_time)
            if at_inference < oldest:
                self.too_old += 1
                continue
            for basis, start in ((INFERENCE, at_inference),
                                 (FEEDBACK, self._start(outcome.feedback_time))):
                window = self._window(batch.series_key, basis, start, offset)
                if window is not None:
                    window.add(outcome)
            learned.add(outcome)
        self._period(series, batch, offset)
        counts, correct = learned.calibration
        if any(counts) and offset > series.calibration_offset:
            series.calibration.learn(counts, correct)
            series.calibration_changed = True
        series.calibration_offset = max(series.calibration_offset, offset)
        series.marks[batch.source] = batch.seq
        self._marks_changed.add(batch.series_key)
        return True

    def due(self, wall: float) -> list[QualityWindow]:
        """The windows to publish now, each with its next version."""
        q = self.settings.quality
        size, grace = q.window_seconds, self.grace
        out = []
        for key in sorted(self._dirty):
            window = self.windows[key]
            series_key, basis, start = key
            end = start + size
            if wall < end + grace or wall < window.next_emit:
                continue
            counts = self._live(key, window)
            version = 1 + int((wall - end) // size)
            out.append(self._build(series_key, basis, start, end, version, counts))
            window.dirty = False
            window.next_emit = wall + size
            self._changed.add(key)
            self._dirty.discard(key)
        return out

    def summaries(self, wall: float) -> list[VersionSummary]:
        """Each series' sums of its period, once the period is over. Periods lie on one
        wall-clock grid of window lengths, so the versions of a model, summed on different
        workers, report the same periods and are compared over the same time."""
        out = []
        size = self.settings.quality.window_seconds
        for series_key, series in self.series.items():
            start = series.period_start
            if start is None or wall < start + size:
                continue
            sums = series.period.to_builtins()
            out.append(VersionSummary(series_key=series_key, labels=series.labels,
                                      period_start=start, period_end=start + size, **sums))
            series.period, series.period_start = VersionStats(), None
            series.period_changed = True
        return out

    def _period(self, series: _Series, batch: OutcomeBatch, offset: int) -> None:
        if series.period_offset > offset or (series.period_offset == offset
                                             and not series.period_changed):
            return  # absorbed before a crash; its change landed
        if batch.serving:
            series.period.merge_builtins(batch.serving)
        below = self.settings.quality.thumbs_down_below
        for outcome in batch.outcomes:
            series.period.add(outcome, below)
        if series.period_start is None and not series.period.empty():
            series.period_start = self._start(self._now)
        series.period_offset, series.period_changed = offset, True

    def expire(self, wall: float) -> None:
        """Forget published windows past their use: inference-time ones after the join
        horizon, feedback-time ones a window after they were published. A series quiet
        for that long, with no window left, is forgotten too (calibration, merge marks):
        no batch of it can still come from the join."""
        q = self.settings.quality
        size = q.window_seconds
        keep_inference = q.horizon_seconds + q.wait_for_inference_seconds + size
        self._expire_windows(wall, keep_inference)
        held = {series_key for series_key, _, _ in self.windows}
        for series_key, series in list(self.series.items()):
            if series.seen is None:
                series.seen = wall  # restored: quiet from now on, as far as we know
            elif (series_key not in held and series.period_start is None
                  and wall - series.seen > keep_inference):
                del self.series[series_key]
                self._marks_changed.discard(series_key)
                self._forgotten.add(series_key)

    def _expire_windows(self, wall: float, keep_inference: float) -> None:
        size = self.settings.quality.window_seconds
        for key, window in list(self.windows.items()):
            _, basis, start = key
            age = wall - (start + size)
            if window.dirty or age < self.grace + size:
                continue
            if basis == FEEDBACK or age > keep_inference:
                del self.windows[key]
                self._changed.add(key)
            elif window.counts is not None:  # at rest until its next outcome
                window.raw = _ENC.encode(window.counts.to_builtins())
                window.counts = None

    # ------------------------------------------------------------------ state
    def checkpoint(self) -> dict[str, bytes | None]:
        """State changes since the last checkpoint: windows, calibrations, marks last."""
        changes: dict[str, bytes | None] = {}
        for series_key in sorted(self._forgotten):  # a series made again overwrites below
            for kind in "cvm":
                changes[f"{kind}|{series_key}"] = None
        self._forgotten.clear()
        for key in sorted(self._changed):
            series_key, basis, start = key
            window = self.windows.get(key)
            name = f"w|{basis}|{start!r}|{series_key}"
            if window is None:
                changes[name] = None
                continue
            data = (window.counts.to_builtins() if window.counts is not None
                    else _DEC.decode(window.raw))
            changes[name] = _ENC.encode({"c": data, "d": window.dirty, "n": window.next_emit,
                                         "o": window.offset})
        for series_key, series in self.series.items():
            if series.calibration_changed:
                changes[f"c|{series_key}"] = _ENC.encode(
                    {"c": series.calibration.to_builtins(), "o": series.calibration_offset})
                series.calibration_changed = False
        for series_key, series in self.series.items():
            if series.period_changed:
                changes[f"v|{series_key}"] = _ENC.encode({
                    "s": series.period.to_builtins(), "t": series.period_start,
                    "o": series.period_offset})
                series.period_changed = False
        for series_key in sorted(self._marks_changed):
            marks = self.series[series_key].marks
            changes[f"m|{series_key}"] = _ENC.encode(sorted(marks.items()))
        self._changed.clear()
        self._marks_changed.clear()
        return changes

    @classmethod
    def restore(cls, settings: Settings, state: dict[str, bytes]) -> QualityWindows:
        table = cls(settings)
        bins = settings.quality.confidence_bins
        for name, raw in state.items():
            kind, _, rest = name.partition("|")
            if kind == "w":
                basis, _, rest = rest.partition("|")
                start, _, series_key = rest.partition("|")
                data = _DEC.decode(raw)
                try:
                    table._load(data["c"])
                except ValueError as exc:  # e.g. confidence_bins changed since
                    log.warning("quality window %s of %s dropped on restore: %s", start,
                                series_key, exc)
                    continue
                table._series(series_key)
                key = (series_key, basis, float(start))
                table.windows[key] = _Window(None, _ENC.encode(data["c"]), bool(data["d"]),
                                             float(data["n"]), int(data.get("o", -1)))
                if data["d"]:
                    table._dirty.add(key)
            elif kind == "c":
                data = _DEC.decode(raw)
                try:
                    calibration = Calibration.from_builtins(data["c"], bins)
                except ValueError as exc:  # learned again from the next labels
                    log.warning("calibration of %s reset on restore: %s", rest, exc)
                    continue
                series = table._series(rest)
                series.calibration, series.calibration_offset = calibration, int(data["o"])
            elif kind == "v":
                data = _DEC.decode(raw)
                series = table._series(rest)
                try:
                    series.period = VersionStats.from_builtins(data["s"])
                except ValueError as exc:
                    log.warning("version sums of %s reset on restore: %s", rest, exc)
                    continue
                series.period_start, series.period_offset = data["t"], int(data["o"])
            elif kind == "m":
                table._series(rest).marks = {int(s): int(q) for s, q in _DEC.decode(raw)}
        return table

    # ------------------------------------------------------------------ helpers
    @property
    def grace(self) -> float:
        """Time after a window's end for its inferences to come through the join."""
        return max(self.settings.metrics.lateness_seconds, 5.0)

    def _start(self, t: float) -> float:
        """The start of the window (of the grid) that ``t`` falls in."""
        size = self.settings.quality.window_seconds
        return math.floor(t / size) * size

    def _new(self) -> QualityCounts:
        q = self.settings.quality
        return QualityCounts(q.confidence_bins, q.max_classes, q.thumbs_down_below)

    def _load(self, data: Any) -> QualityCounts:
        q = self.settings.quality
        return QualityCounts.from_builtins(data, q.confidence_bins, q.max_classes,
                                           q.thumbs_down_below)

    def _series(self, series_key: str) -> _Series:
        series = self.series.get(series_key)
        if series is None:
            try:
                labels = parse_series_key(series_key)
            except ValueError:  # not one of ours (the topic is writable): keep it whole
                labels = {"series": series_key}
            series = self.series[series_key] = _Series(
                labels, Calibration(self.settings.quality.confidence_bins))
        return series

    def _window(self, series_key: str, basis: str, start: float,
                offset: int) -> QualityCounts | None:
        """The window's counts to add to, or None when it absorbed ``offset`` already."""
        key = (series_key, basis, start)
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = _Window(self._new())
        elif window.offset > offset or (window.offset == offset and key not in self._changed):
            return None  # absorbed before a crash; its change landed
        window.offset = offset
        counts = self._live(key, window)
        window.dirty = True
        self._changed.add(key)
        self._dirty.add(key)
        return counts

    def _live(self, key: WindowKey, window: _Window) -> QualityCounts:
        if window.counts is None:
            window.counts = self._load(_DEC.decode(window.raw or b"\x80"))
            window.raw = None
        return window.counts

    def _build(self, series_key: str, basis: str, start: float, end: float, version: int,
               counts: QualityCounts) -> QualityWindow:
        metrics = counts.metrics()
        if basis == FEEDBACK:  # inferences are counted by inference time only
            metrics.update(inferences=0, label_coverage=None, business_value_per_request=None)
        else:
            q = self.settings.quality
            estimate = self.series[series_key].calibration.estimate(
                counts.confidence_histogram, min_labels=q.min_calibration_labels)
            if estimate is not None:
                metrics.update(estimated_accuracy=estimate.accuracy,
                               estimated_accuracy_low=estimate.low,
                               estimated_accuracy_high=estimate.high)
        return QualityWindow(series_key=series_key, labels=self.series[series_key].labels,
                             basis=basis, window_start=start, window_end=end,  # type: ignore[arg-type]
                             version=version, **metrics)


