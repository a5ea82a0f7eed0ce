"""The quality windows as the runtime drives them: outcome batches in; ``QualityWindow``
records out on the metrics topic (header ``inferwatch-contract: QualityWindow``).

One :class:`~pipeline.quality.windows.QualityWindows` per outcomes partition (the topic
is keyed by series), its state on the changelog partition of the same number. Published
windows go into the outbox in the same change set as the state that made them, so a
crash re-sends the same window and version; the store keeps one row per version. A record
that cannot be read or merged goes to the DLQ and the partition goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from pipeline.config import Settings
from pipeline.quality.records import OutcomeBatch
from pipeline.quality.versions import VersionBook
from pipeline.quality.windows import QualityWindows
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stage import Changes, Output, Step
from pipeline.sources.codec import Rejection, describe
from pipeline.sources.dlq import dead_letter
from schemas.metrics import CONTRACT_HEADER
from schemas.quality import QUALITY_CONTRACT, VERSION_CONTRACT, VersionSummary

__all__ = ["QualityStage"]

_BATCH = msgspec.msgpack.Decoder(OutcomeBatch)
_JSON = msgspec.json.Encoder()
_SUMMARY = msgspec.json.Decoder(VersionSummary)
_HEADERS = (("content-type", b"application/json"), (CONTRACT_HEADER, QUALITY_CONTRACT))
_VERSION_HEADERS = (("content-type", b"application/json"), (CONTRACT_HEADER, VERSION_CONTRACT))


class QualityStage:
    """Quality windows per series from the join's outcome batches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = (settings.topics.outcomes,)
        self.tables: dict[int, QualityWindows] = {}
        self.outbox = Outbox("out|")
        self.published = 0
        self._next_expire = 0.0

    def on_assign(self, topic: str, partition: int, state: dict[str, bytes]) -> int | None:
        self.tables[partition] = QualityWindows.restore(self.settings, state)
        self.outbox.restore(partition, state)
        return None  # what was merged is known by the windows (see QualityWindows)

    def on_revoke(self, topic: str, partition: int) -> None:
        self.tables.pop(partition, None)
        self.outbox.drop(partition)

    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        step = Step()
        table = self.tables[partition]
        limits = self.settings.limits
        for record in records:
            try:
                table.add(_BATCH.decode(record.value or b""), wall, record.offset)
            except Exception as exc:  # this record only: the partition goes on
                reason = "malformed" if isinstance(exc, msgspec.DecodeError) else "internal"
                step.dead_letters.append(dead_letter(
                    Rejection(reason, describe(exc), record.value or b""), key=record.key,
                    headers=record.headers, topic=topic, partition=partition,
                    offset=record.offset, max_bytes=limits.max_dead_letter_bytes))
        self._emit(partition, table, wall, step)
        return step

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        step = Step()
        expire = wall >= self._next_expire
        if expire:
            self._next_expire = wall + self.settings.quality.window_seconds
        for partition, table in self.tables.items():
            if expire:
                table.expire(wall)
            self._emit(partition, table, wall, step)
        return step

    def _emit(self, partition: int, table: QualityWindows, wall: float, step: Step) -> None:
        windows = table.due(wall)
        changes: Changes = {}  # the windows to publish before the state that sent them
        for window in windows:
            name = (f"out|{window.basis}|{window.window_start!r}|{window.version}|"
                    f"{window.series_key}")
            self.outbox.put(partition, name, _JSON.encode(window), changes)
        for summary in table.summaries(wall):
            name = (f"out|v|{summary.period_end!r}|{VersionBook.model_key(summary.labels)}|"
                    f"{summary.series_key}")
            self.outbox.put(partition, name, _JSON.encode(summary), changes)
        changes.update(table.checkpoint())
        if changes:
            step.changes.setdefault(partition, {}).update(changes)
        if windows or self.outbox.pending(partition):
            self.outbox.flush(partition, step, self._output)
        count = len(windows)

        def done() -> None:
            self.published += count

        step.done.append(done)

    def _output(self, name: str, record: bytes) -> Output:
        """Quality windows keyed by series; version sums by model (``out|v|…``), so every
        version of a model reaches the alerting worker that compares them."""
        if name.startswith("out|v|"):  # the model key in the name holds "|": ask the record
            key = VersionBook.model_key(_SUMMARY.decode(record).labels)
            return Output(self.settings.topics.metrics, key.encode(), record,
                          headers=_VERSION_HEADERS)
        series_key = name.split("|", 4)[4]  # out|<basis>|<start>|<version>|<series key>
        return Output(self.settings.topics.metrics, series_key.encode(), record,
                      headers=_HEADERS)

    def summary(self) -> str:
        windows = sum(len(t.windows) for t in self.tables.values())
        return f"quality windows: {windows} held, {self.published} published"

