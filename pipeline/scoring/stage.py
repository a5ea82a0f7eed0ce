"""Stage 2 as the runtime drives it: merge partials into final windows, score each closed
window once, and emit ``WindowMetrics`` (carrying the rule variables) and
``WindowScores``. No I/O.

State per partials partition ``p`` on changelog partition ``p``: the merged windows of
each kind (``events|…``, ``resources|…``: :class:`~pipeline.windows.stage2.Stage2Partition`),
the series monitors (``monitor|<series>``, written every few windows and on revoke),
and an *outbox* (``out|…``) of results not yet acknowledged by Kafka. A closed window is
marked emitted in the same checkpoint that puts its result in the outbox, so a crash
re-sends the result instead of losing it; readers keep one row per (series, window,
version).

For ``/metrics`` it records the delay from a window's end to its first emission, exposes
how many series it holds windows for, and (opt-in, ``telemetry.model_metrics``) keeps the
latest window of each series in a bounded :class:`~pipeline.telemetry.ModelSeries`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from pipeline.config import Settings
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stage import Changes, Output, Step
from pipeline.scoring.series import PinnedLookup, Scoring
from pipeline.sources.codec import Rejection, describe
from pipeline.sources.dlq import dead_letter
from pipeline.telemetry import WINDOW_CLOSE_DELAY, ModelSeries
from pipeline.windows.drift_profile import MonitorSpec
from pipeline.windows.kinds import EVENTS, RESOURCES, Kind, event_kind, resource_kind
from pipeline.windows.partials import decode_partials
from pipeline.windows.stage2 import META, Stage2Partition
from schemas.metrics import CONTRACT_HEADER, ResourceMetrics, WindowMetrics
from schemas.scores import WindowScores

__all__ = ["MergeStage"]

log = logging.getLogger(__name__)
_JSON = msgspec.json.Encoder()
_OUT = msgspec.msgpack.Encoder()
_IN = msgspec.msgpack.Decoder(tuple[str, bytes, bytes])
_JSON_HEADER = ("content-type", b"application/json")


class _Monitors(dict):
    """Monitor checkpoints as :class:`Scoring` writes them (``"<p>|<series>"``), with a
    note of what changed since the last step. A written checkpoint leaves with the step
    that takes it, and a restored one when its monitor is loaded: at 10,000 series,
    keeping them would cost ~13 KiB per series for bytes the changelog already holds."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: set[str] = set()

    def __setitem__(self, key: str, value: bytes) -> None:
        super().__setitem__(key, value)
        self.changed.add(key)

    def take(self, partition: int) -> Changes:
        prefix = f"{partition}|"
        names = [k for k in self.changed if k.startswith(prefix)]
        self.changed.difference_update(names)
        return {f"monitor|{k[len(prefix):]}": dict.pop(self, k) for k in names}


class MergeStage:
    """Merge, close, score and emit, per partials partition."""

    def __init__(self, settings: Settings, drift: MonitorSpec | None = None,
                 pinned: PinnedLookup | None = None) -> None:
        self.settings = settings
        self.topics = (settings.topics.partials,)
        metrics = settings.metrics
        self._kinds: dict[str, Kind] = {EVENTS: event_kind(metrics, drift),
                                        RESOURCES: resource_kind(metrics)}
        self._monitors = _Monitors()
        self.scoring = (Scoring(settings, self._monitors, pinned or (lambda key: None))
                        if settings.drift.enabled else None)
        self.states: dict[tuple[str, int], Stage2Partition] = {}
        self.outbox = Outbox("out|")
        self.emitted = 0
        telemetry = settings.telemetry
        self.model_series = (ModelSeries(metrics.series_labels, telemetry.max_model_series)
                             if telemetry.model_metrics else None)

    # ------------------------------------------------------------------ partitions
    def on_assign(self, topic: str, partition: int, state: dict[str, bytes]) -> int | None:
        for kind, spec in self._kinds.items():
            prefix = f"{kind}|"
            items = [(k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix)]
            self.states[kind, partition] = Stage2Partition.restore(
                partition, self.settings.metrics, self.settings.topics.partitions, items, spec)
        for key, value in state.items():
            if key.startswith("monitor|"):
                dict.__setitem__(self._monitors, f"{partition}|{key[8:]}", value)
        self.outbox.restore(partition, state)
        done = min(self.states[kind, partition].max_offset for kind in self._kinds)
        return done + 1 if done >= 0 else None

    def on_revoke(self, topic: str, partition: int) -> Step:
        """Checkpoint the partition's monitors (learning since their last checkpoint)."""
        step = Step()
        if self.scoring is not None:
            self.scoring.release(partition)
            step.changes[partition] = self._monitors.take(partition)
        for kind in self._kinds:
            self.states.pop((kind, partition), None)
        for key in [k for k in self._monitors if k.startswith(f"{partition}|")]:
            dict.__delitem__(self._monitors, key)
        self.outbox.drop(partition)
        return step

    # ------------------------------------------------------------------ records
    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        step = Step()
        for record in records:
            try:
                message = decode_partials(record.value or b"")
                self.states[message.kind, partition].apply(message)
            except Exception as exc:  # this record only: the stream goes on
                step.dead_letters.append(dead_letter(
                    Rejection("internal", describe(exc), record.value or b""),
                    key=record.key, headers=record.headers, topic=topic, partition=partition,
                    offset=record.offset,
                    max_bytes=self.settings.limits.max_dead_letter_bytes))
        if records:
            for kind in self._kinds:
                self.states[kind, partition].seen_through(records[-1].offset)
        self._close(partition, step, wall)
        return step

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        """Re-send a restored outbox and forget acknowledged records, traffic or not."""
        step = Step()
        for partition in {p for _, p in self.states}:
            if self.outbox.pending(partition):
                self._close(partition, step, wall)
        return step

    # ------------------------------------------------------------------ closing
    def _close(self, partition: int, step: Step, wall: float) -> None:
        changes: Changes = {}
        for kind in self._kinds:
            state = self.states[kind, partition]
            for result, profile in state.close_with_profiles():
                if isinstance(result, WindowMetrics):
                    self._observe(result, wall)
                for name, record in self._results(partition, kind, result, profile):
                    self.outbox.put(partition, name, record, changes)
            upserts, deletes = state.checkpoint()
            changes.update({f"{kind}|{k}": v for k, v in upserts.items() if k != META})
            changes.update((f"{kind}|{k}", None) for k in deletes)
            if META in upserts:
                changes[f"{kind}|{META}"] = upserts[META]
        changes.update(self._monitors.take(partition))
        step.changes.setdefault(partition, {}).update(changes)
        self.outbox.flush(partition, step, _output)

    def _results(self, partition: int, kind: str, result: Any, profile: Any
                 ) -> list[tuple[str, bytes]]:
        """Outbox records of one closed window: its metrics and, scored once, its scores."""
        topics = self.settings.topics
        out = []
        if (self.scoring is not None and kind == EVENTS and result.version == 1
                and isinstance(result, WindowMetrics)):
            try:
                scores = self.scoring.score(partition, result, profile)
            except Exception:  # a scoring bug must not cost the metrics
                log.exception("scoring %s failed; window published unscored",
                              result.series_key)
            else:
                result = msgspec.structs.replace(result, scores=scores.variables())
                out.append(_record(topics.scores, scores, scores.series_key))
        key = result.series_key if isinstance(result, WindowMetrics) else result.host
        out.append(_record(topics.metrics, result, key))
        self.emitted += 1
        return out

    def _observe(self, result: WindowMetrics, wall: float) -> None:
        """``/metrics``: how late a window's first result is; the model metrics."""
        if result.version == 1:
            WINDOW_CLOSE_DELAY.observe(max(0.0, wall - result.window_end))
        if self.model_series is not None:
            self.model_series.add(result)

    def active_series(self) -> int:
        """Distinct event series with windows held (open or within the correction
        horizon) on this worker (``/metrics``)."""
        return len({key[0] for (kind, _), state in list(self.states.items())
                    if kind == EVENTS for key in list(state.windows)})

    def summary(self) -> str:
        windows = sum(len(s.windows) for s in self.states.values())
        duplicates = sum(s.duplicates for s in self.states.values())
        expired = sum(s.expired for s in self.states.values())
        scores = f", {self.scoring.summary()}" if self.scoring is not None else ""
        return (f"open windows {windows}, windows emitted {self.emitted}, "
                f"duplicate partials skipped {duplicates}, expired partials {expired}{scores}")


def _output(name: str, record: bytes) -> Output:
    """The output of an outbox record (its name carries the contract)."""
    topic, key, value = _IN.decode(record)
    contract = name.split("|", 2)[1]
    return Output(topic, key, value, headers=(_JSON_HEADER, (CONTRACT_HEADER, contract.encode())))


def _record(topic: str, result: WindowMetrics | ResourceMetrics | WindowScores,
            key: str) -> tuple[str, bytes]:
    """(outbox name, record): the name is unique per (contract, key, window, version)."""
    version = getattr(result, "version", 1)
    name = f"out|{type(result).__name__}|{key}|{result.window_start!r}|{version}"
    return name, _OUT.encode((topic, key.encode(), _JSON.encode(result)))
