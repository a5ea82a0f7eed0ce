"""Stage 1: per source partition, partial window profiles per (series, window). No I/O.

Decisions are made per event, in offset order, from state that is checkpointed with
the slots, so a replay after a crash rebuilds the same partials:
- an event is on time when its window's end is past neither the partition's event
  watermark nor the watermark at which windows were last closed;
- a later event goes to a correction slot ``seq = 1 + (watermark - end) // size``
  that closes one window-length of watermark later (so a replay groups late events
  the same way), and is counted as late;
- an event later than the correction horizon is only counted (``too_late``).
The partition remembers the last source offset its checkpointed state covers, and
each slot the last offset it absorbed; a replayed message at or below either is
skipped, so at-least-once delivery (a crash, a rebalance that re-reads from the last
committed offset) does not count an event twice. The partition's meta record is
written last in a checkpoint, so it never claims offsets whose slots were not written.

A closed slot becomes a :class:`~pipeline.windows.partials.Partial` that ``close``
returns and the next ``checkpoint`` deletes. Keeping it until Kafka has it is the
stage's job: :class:`~pipeline.windows.partial_stage.PartialStage` puts it in the
runtime's :class:`~pipeline.runtime.outbox.Outbox` (changelog keys ``<kind>|out|…``,
beside this table's ``<kind>|…``) in the same change set as that checkpoint, so a crash
before the send re-sends the same bytes rather than rebuilding a *different* partial
under the same identity, which stage 2 would drop.

At high cardinality most open slots hold a few events and wait a window for more: a slot
not touched since its last checkpoint is kept as those checkpoint bytes (~0.5 KiB,
against ~4 KiB of live sketches) and decoded when its next event comes. Slots of one
series share one labels dict.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.config import MetricsSettings
from pipeline.windows.event_time import PartitionClock, WindowSpec
from pipeline.windows.guard import CardinalityGuard
from pipeline.windows.kinds import Kind, event_kind
from pipeline.windows.partials import Partial
from pipeline.windows.profile import series_key

__all__ = ["Failed", "Stage1Partition"]

SlotKey = tuple[str, float, int]  # (series key, window start, seq)
Failed = tuple[int, Any, Exception]  # (source offset, record, why) of a record not absorbed
META = "meta"
_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder()


@dataclass(slots=True)
class _Slot:
    labels: dict[str, str]
    profile: Any  # the kind's profile (WindowProfile, ResourceProfile); None: at rest
    last_offset: int = -1
    raw: bytes | None = None  # the profile's msgpack as last checkpointed

    def builtins(self) -> Any:
        return self.profile.to_builtins() if self.profile is not None else _DEC.decode(self.raw)


@dataclass
class Stage1Partition:
    """Open partial profiles of one source partition, with its watermark."""

    partition: int
    settings: MetricsSettings
    guard: CardinalityGuard
    kind: Kind | None = None  # default: inference events
    spec: WindowSpec = field(init=False)
    clock: PartitionClock = field(init=False)
    closed_watermark: float = -math.inf
    max_offset: int = -1  # every message up to here is in the state
    replayed: int = 0  # messages skipped because the state already covered them
    slots: dict[SlotKey, _Slot] = field(default_factory=dict)
    late: Counter[str] = field(default_factory=Counter)
    too_late: Counter[str] = field(default_factory=Counter)
    _dirty: set[SlotKey] = field(default_factory=set)
    _deleted: set[SlotKey] = field(default_factory=set)
    _keys: dict[tuple[str, ...], tuple[str, dict[str, str]]] = field(default_factory=dict)
    _live: set[SlotKey] = field(default_factory=set)  # slots whose profile is decoded
    _last_meta: bytes = b""  # the META record as last checkpointed

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = event_kind(self.settings)
        self.spec = WindowSpec.from_settings(self.settings)
        self.clock = PartitionClock(self.spec.lateness, self.spec.idle_timeout)

    # ------------------------------------------------------------------ events
    def add(self, messages: Iterable[tuple[int, Sequence[Any]]], wall: float) -> list[Failed]:
        """Absorb ``(offset, records)`` messages of this partition, in offset order.

        Returns the records that could not be absorbed, with why: one record that
        breaks the maths fails alone (to the DLQ), never the batch or the worker.
        """
        kind = self.kind
        assert kind is not None
        grouped: dict[SlotKey, list[tuple[int, Any]]] = defaultdict(list)
        failed: list[Failed] = []
        if len(self._keys) > 4 * self.guard.max_series:
            self._keys.clear()  # a cache, bounded like the series it names
        for offset, events in messages:
            if offset <= self.max_offset:
                self.replayed += 1
                continue
            self.max_offset = offset
            for event in events:
                try:
                    self._route(offset, event, wall, grouped)
                except Exception as exc:  # this record only: the others go on
                    failed.append((offset, event, exc))
        for slot_key, batch in grouped.items():
            slot = self.slots[slot_key]
            if slot.profile is None:  # at rest since its last checkpoint
                slot.profile = kind.load(_DEC.decode(slot.raw))
            self._live.add(slot_key)
            late = slot_key[2] > 0
            try:
                kind.add(slot.profile, [event for _, event in batch], late)
            except Exception:  # find the record(s) at fault, one at a time
                for offset, event in batch:
                    try:
                        kind.add(slot.profile, [event], late)
                    except Exception as exc:
                        failed.append((offset, event, exc))
            slot.last_offset = batch[-1][0]
            self._dirty.add(slot_key)
        return failed

    def _route(self, offset: int, event: Any, wall: float,
               grouped: dict[SlotKey, list[tuple[int, Any]]]) -> None:
        """Put one record in the slots of its series and windows (or count it too late)."""
        kind = self.kind
        assert kind is not None
        names, spec, slots = kind.labels, self.spec, self.slots
        size = spec.size
        horizon = self.settings.correction_horizon_windows * size
        values = self.guard.admit(kind.values(event), wall)
        known = self._keys.get(values)
        if known is None:
            labels = dict(zip(names, values, strict=True))
            known = self._keys[values] = (series_key(labels), labels)
        key, labels = known
        closed = max(self.clock.event_watermark(), self.closed_watermark)
        for start in spec.starts(event.timestamp):
            end = start + size
            if end > closed:
                slot_key = (key, start, 0)
            elif end + horizon > closed:
                slot_key = (key, start, 1 + int((closed - end) // size))
                self.late[key] += 1
            else:
                self.too_late[key] += 1
                continue
            slot = slots.get(slot_key)
            if slot is not None and offset <= slot.last_offset:
                continue  # replayed: this slot already absorbed that message
            if slot is None:
                slots[slot_key] = _Slot(labels, kind.new())
            grouped[slot_key].append((offset, event))
        self.clock.observe(event.timestamp, wall)

    # ------------------------------------------------------------------ closing
    def empty(self) -> bool:
        """No event yet (bad records and empty messages do not count): holds no window."""
        return not math.isfinite(self.clock.max_event_time) and not self.slots

    def watermark(self, wall: float, caught_up: bool = True) -> float:
        """The partition's watermark; the idle advance applies only when ``caught_up``.

        A partition with unread messages is slow, not idle: advancing its watermark by
        the wall clock would close windows whose events are still in the backlog.
        """
        clock = self.clock.watermark(wall) if caught_up else self.clock.event_watermark()
        return max(clock, self.closed_watermark)

    def close(self, wall: float, caught_up: bool = True) -> list[Partial]:
        """Close every slot whose window (or correction band) the watermark passed.

        Returns their partials; the next ``checkpoint`` deletes their slots.
        """
        wm = self.watermark(wall, caught_up)
        if wm > self.closed_watermark:
            self.closed_watermark = wm
        size = self.spec.size
        out = []
        for slot_key in [k for k in self.slots if k[1] + size + k[2] * size <= wm]:
            key, start, seq = slot_key
            slot = self.slots.pop(slot_key)
            partial = Partial(kind=self.kind.name, series_key=key, labels=slot.labels,
                              window_start=start, window_end=start + size,
                              src_partition=self.partition, seq=seq,
                              profile=slot.builtins())
            out.append(partial)
            self._dirty.discard(slot_key)
            self._live.discard(slot_key)
            self._deleted.add(slot_key)
        return out

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> tuple[dict[str, bytes], list[str]]:
        """Changed state since the last checkpoint: (upserts, deletes) of table keys."""
        upserts = {}
        for k in self._dirty:
            slot = self.slots.get(k)
            if slot is not None:
                slot.raw = _ENC.encode(slot.profile.to_builtins())
                upserts[_slot_name(k)] = _ENC.encode(
                    [slot.labels, slot.last_offset, msgspec.Raw(slot.raw)])
        for k in self._live - self._dirty:  # untouched since their checkpoint: at rest
            slot = self.slots.get(k)
            if slot is not None and slot.raw is not None:
                slot.profile = None
        self._live = {k for k in self._dirty if k in self.slots}
        deletes = [_slot_name(k) for k in self._deleted]
        # dicts keep insertion order: META goes out after every slot it vouches for, and
        # only when it changed (a quiet partition's tick writes nothing)
        meta = _ENC.encode([self.clock.to_builtins(), self.closed_watermark,
                            dict(self.late), dict(self.too_late), self.max_offset])
        if meta != self._last_meta:
            upserts[META] = self._last_meta = meta
        self._dirty.clear()
        self._deleted.clear()
        return upserts, deletes

    @classmethod
    def restore(cls, partition: int, settings: MetricsSettings, guard: CardinalityGuard,
                items: Iterable[tuple[str, bytes]], kind: Kind | None = None
                ) -> Stage1Partition:
        """Rebuild from the (key, value) items ``checkpoint`` wrote for this partition."""
        state = cls(partition, settings, guard, kind)
        assert state.kind is not None
        for name, raw in items:
            data = _DEC.decode(raw)
            if name == META:
                state._last_meta = raw
                clock, closed, late, too_late, state.max_offset = data
                state.clock = PartitionClock.from_builtins(clock, state.spec.lateness,
                                                           state.spec.idle_timeout)
                state.closed_watermark = closed
                state.late, state.too_late = Counter(late), Counter(too_late)
            else:
                labels, last_offset, profile = data
                state.kind.load(profile)  # validated now; decoded again when an event comes
                state.slots[_parse_slot(name)] = _Slot(labels, None, last_offset,
                                                       _ENC.encode(profile))
        return state


def _slot_name(key: SlotKey) -> str:
    return f"{key[1]!r}|{key[2]}|{key[0]}"


def _parse_slot(name: str) -> SlotKey:
    start, seq, key = name.split("|", 2)
    return key, float(start), int(seq)
