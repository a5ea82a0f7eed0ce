"""The join as the runtime drives it: join items in; outcome batches out, by series.

One :class:`~pipeline.quality.join.JoinTable` per joins partition, its state on the
changelog partition of the same number (``s|…`` stubs, ``p|…`` waiting feedback, the
last offset absorbed). What one joins record produces goes out as one outcome batch per
series, identified by ``(source partition, record offset)``, through the stage's
:class:`~pipeline.runtime.outbox.Outbox`, written before the state that made it in one
change set: a crash re-sends or re-makes the same batches, which the quality windows
merge once. A joins record that cannot be read goes to the DLQ
(the topic is internal, but anything may write to it) and the partition goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from pipeline.config import Settings
from pipeline.quality.intake import encode_items
from pipeline.quality.join import JoinTable, Produced
from pipeline.quality.records import JoinItem, OutcomeBatch
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stage import Changes, Output, Step
from pipeline.sources.codec import Rejection, describe
from pipeline.sources.dlq import dead_letter
from pipeline.telemetry import FEEDBACK_FATES, QUALITY_HELD

__all__ = ["JoinStage"]

_ITEMS = msgspec.msgpack.Decoder(list[JoinItem])
_ENC = msgspec.msgpack.Encoder()
_HEADERS = (("content-type", b"application/msgpack"),)
_HELD_STUBS = QUALITY_HELD.labels("inferences")
_HELD_FEEDBACK = QUALITY_HELD.labels("feedback")


def _count(out: Produced) -> None:
    """``inferwatch_feedback{status}``: the fates of this step's feedback."""
    for fates in out.fates.values():
        for fate in fates:
            FEEDBACK_FATES.labels(fate.status).inc()


class JoinStage:
    """Join feedback to inferences per joins partition; hand outcomes on by series."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = (settings.topics.joins,)
        self.tables: dict[int, JoinTable] = {}
        self.outbox = Outbox("out|")
        self.forwards = Outbox("fwd|")  # feedback sent on to its event id's join key
        self._done: dict[int, int] = {}  # last joins offset absorbed, per partition

    def on_assign(self, topic: str, partition: int, state: dict[str, bytes]) -> int | None:
        self.tables[partition] = JoinTable.restore(self.settings.quality, state)
        # names carry the zero-padded offset: sorted, a crash re-sends in the order first sent
        self.outbox.restore(partition, dict(sorted(state.items())))
        self.forwards.restore(partition, dict(sorted(state.items())))
        done = int(state["offset"]) if "offset" in state else -1
        self._done[partition] = done
        return done + 1 if done >= 0 else None

    def on_revoke(self, topic: str, partition: int) -> None:
        self.tables.pop(partition, None)
        self.outbox.drop(partition)
        self.forwards.drop(partition)
        self._done.pop(partition, None)

    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        step = Step()
        done = self._done.get(partition, -1)
        records = [r for r in records if r.offset > done]  # absorbed before a restart
        if not records:
            return step
        table = self.tables[partition]
        limits = self.settings.limits
        changes: Changes = {}
        for record in records:
            out = Produced()
            try:
                table.add(_ITEMS.decode(record.value or b""), wall, out)
            except Exception as exc:  # this record only: the partition goes on
                reason = "malformed" if isinstance(exc, msgspec.DecodeError) else "internal"
                step.dead_letters.append(dead_letter(
                    Rejection(reason, describe(exc), record.value or b""), key=record.key,
                    headers=record.headers, topic=topic, partition=partition,
                    offset=record.offset, max_bytes=limits.max_dead_letter_bytes))
            self._put(partition, f"{record.offset:016d}", out, changes)
            _count(out)
        self._done[partition] = records[-1].offset
        self._emit(partition, changes, step, offset=records[-1].offset)
        return step

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        step = Step()
        _HELD_STUBS.set(sum(len(t.stubs) for t in self.tables.values()))
        _HELD_FEEDBACK.set(sum(t.waiting for t in self.tables.values()))
        for partition, table in self.tables.items():
            out, changes = Produced(), {}
            table.expire(wall, out)
            _count(out)
            self._put(partition, f"t{wall!r}", out, changes)
            if (changes or self.outbox.pending(partition) or self.forwards.pending(partition)
                    or table.dirty()):
                self._emit(partition, changes, step)
        return step

    def _put(self, partition: int, origin: str, out: Produced, changes: Changes) -> None:
        """One outcome batch per series of what one record (or one tick) produced, named
        by its origin: a replay after a crash makes the same names, and an outbox that
        already holds a name keeps it (made before the crash, from the state before)."""
        partitions = self.settings.topics.partitions
        for output in encode_items(out.forward, self.settings.topics.joins, partitions):
            name = f"fwd|{origin}|{output.partition}"
            if not self.forwards.holds(partition, name):
                self.forwards.put(partition, name, output.value, changes)
        for series_key in out.series():
            name = f"out|{origin}|{series_key}"
            if self.outbox.holds(partition, name):
                continue
            offset = int(origin) if origin.isdigit() else -1
            batch = OutcomeBatch(
                partition, offset, series_key, out.outcomes.get(series_key, []),
                [(start, c.to_builtins()) for start, c in
                 sorted(out.tallies.get(series_key, {}).items())],
                out.fates.get(series_key, []),
                serving.to_builtins() if (serving := out.serving.get(series_key)) else {})
            self.outbox.put(partition, name, _ENC.encode(batch), changes)

    def _emit(self, partition: int, changes: Changes, step: Step,
              offset: int | None = None) -> None:
        """One change set: the outbox's new batches first, then the table's state, the
        offset last (a crash half-way leaves batches the replay keeps, never state whose
        batches are missing); then send what the outbox holds."""
        changes.update(self.tables[partition].checkpoint())
        if offset is not None:
            changes["offset"] = str(offset).encode()
        if changes:
            step.changes.setdefault(partition, {}).update(changes)
        self.outbox.flush(partition, step, self._output)
        self.forwards.flush(partition, step, self._forward)

    def _forward(self, name: str, record: bytes) -> Output:
        target = int(name.rsplit("|", 1)[1])  # fwd|<origin>|<joins partition>
        return Output(self.settings.topics.joins, None, record, target, _HEADERS)

    def _output(self, name: str, record: bytes) -> Output:
        series_key = name.split("|", 2)[2]  # out|<origin>|<series>
        return Output(self.settings.topics.outcomes, series_key.encode(), record,
                      headers=_HEADERS)

    def summary(self) -> str:
        held = sum(len(t.stubs) for t in self.tables.values())
        waiting = sum(t.waiting for t in self.tables.values())
        return f"quality join: {held} inferences held, {waiting} feedback waiting"
