"""Score closed windows: one :class:`~pipeline.scoring.monitor.SeriesMonitor` per series.

One monitor per series of the partials partitions this worker owns, created on the
series' first closed window or restored from the stage's state (any mapping keyed
``"<partition>|<series key>"``, so it moves with its partition). No I/O here.
A monitor is written every ``drift.checkpoint_every_windows`` windows and when its
partition is revoked, never per event: a SIGKILL loses at most that many windows of
learning, which the detectors and the trailing reference absorb.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping

import msgspec

from pipeline.config import Settings
from pipeline.scoring.baseline_topic import follow_baselines
from pipeline.scoring.baselines import Baseline
from pipeline.scoring.drift.reference import Reference
from pipeline.scoring.monitor import SeriesMonitor
from pipeline.windows.profile import WindowProfile
from schemas.metrics import WindowMetrics
from schemas.scores import WindowScores

__all__ = ["PinnedReferences", "Scoring", "follow_pinned"]

log = logging.getLogger(__name__)

PinnedLookup = Callable[[str], Reference | None]


class PinnedReferences:
    """The pinned reference of each series that has a baseline, kept by a follower task."""

    def __init__(self) -> None:
        self.references: dict[str, Reference] = {}

    def __call__(self, series_key: str) -> Reference | None:
        return self.references.get(series_key)

    def update(self, baseline: Baseline | None, series_key: str) -> None:
        """Apply one record of the baselines topic (``None``: the baseline was removed)."""
        if baseline is None:
            self.references.pop(series_key, None)
            return
        try:
            self.references[series_key] = baseline.to_reference()
        except ValueError as exc:
            log.error("ignoring baseline v%d of %s: %s", baseline.version, series_key, exc)
            return
        log.info("drift of %s now measured against pinned baseline v%d (%s)",
                 series_key, baseline.version, baseline.source)


async def follow_pinned(settings: Settings, pinned: PinnedReferences) -> None:
    """Follow the baselines topic into ``pinned`` (returns only on error)."""
    await follow_baselines(settings, {}, on_update=pinned.update)


def _name(partition: int, series_key: str) -> str:
    return f"{partition}|{series_key}"


class Scoring:
    """Scores closed windows of the owned series; checkpoints their monitors."""

    def __init__(self, settings: Settings, table: MutableMapping[str, bytes],
                 pinned: PinnedLookup) -> None:
        self.drift = settings.drift
        self.table = table
        self.pinned = pinned  # series key -> its pinned baseline's reference, if any
        self.monitors: dict[tuple[int, str], SeriesMonitor] = {}
        self.scored = 0
        self.drifted = 0  # windows with at least one drifted distribution
        self.anomalous = 0
        self.change_points = 0

    def score(self, partition: int, metrics: WindowMetrics,
              profile: WindowProfile) -> WindowScores:
        """Score one closed window of a series (its first emission) and learn it."""
        key = (partition, metrics.series_key)
        monitor = self.monitors.get(key)
        if monitor is None:
            monitor = self.monitors[key] = self._load(*key)
        scores = monitor.observe(metrics, profile.drift_profile(self.drift.operational),
                                 self.pinned(metrics.series_key))
        if monitor.since_checkpoint >= self.drift.checkpoint_every_windows:
            self.table[_name(*key)] = monitor.checkpoint()
        self.scored += 1
        self.drifted += bool(scores.drifted)
        self.anomalous += scores.anomalous
        self.change_points += len(scores.change_points)
        return scores

    def _load(self, partition: int, series_key: str) -> SeriesMonitor:
        raw = self.table.pop(_name(partition, series_key), None)  # live from now on
        if raw is None:
            return SeriesMonitor(self.drift)
        try:
            return SeriesMonitor.restore(self.drift, raw)
        except (ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
            log.warning("monitor state of %s unreadable (%s): starting it afresh", series_key, exc)
            return SeriesMonitor(self.drift)

    def release(self, partition: int) -> None:
        """Checkpoint and drop the monitors of a partition that leaves this worker."""
        for key in [k for k in self.monitors if k[0] == partition]:
            monitor = self.monitors.pop(key)
            if monitor.since_checkpoint:
                self.table[_name(*key)] = monitor.checkpoint()

    def summary(self) -> str:
        return (f"scored windows {self.scored} (drifted {self.drifted}, anomalous "
                f"{self.anomalous}, change points {self.change_points}), "
                f"monitored series {len(self.monitors)}")
