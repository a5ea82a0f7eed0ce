"""Stage 1 as the runtime drives it: source bytes in; dead letters, checkpointed partial
windows and watermarks out. No I/O.

One :class:`~pipeline.windows.stage1.Stage1Partition` per source partition of the
events and resources topics. Its state lives in the changelog partition of the same
number, each key prefixed with its kind (``events|…``, ``resources|…``), so both topics'
partition ``p`` share changelog partition ``p``. A closed window's partial stays in the
stage's :class:`~pipeline.runtime.outbox.Outbox` (``<kind>|out|…``), written in the same
change set as the checkpoint that deletes its slot, until the runtime reports it
acknowledged (``Step.done``), so a crash in between re-sends the same bytes, which stage 2
merges once by (source partition, seq). The partition states keep no outbox of their
own: ``on_assign`` restores them from their keys without the outbox's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.config import Settings
from pipeline.runtime.outbox import Outbox
from pipeline.runtime.stage import Changes, Output, Step
from pipeline.sources.codec import Rejection, decode_events, describe
from pipeline.sources.dlq import dead_letter
from pipeline.sources.pricing import price_table
from pipeline.sources.redaction import Redaction
from pipeline.windows.drift_profile import MonitorSpec
from pipeline.windows.guard import CardinalityGuard
from pipeline.windows.kinds import EVENTS, RESOURCES, Kind, event_kind, resource_kind
from pipeline.windows.partials import Partial, Watermark, encode_partial
from pipeline.windows.stage1 import META, Stage1Partition
from schemas.event import InferenceEvent, ResourceSample

__all__ = ["IngestCounts", "PartialStage"]

_JSON = msgspec.json.Encoder()
_OUTBOX = "out|"  # after the kind: changelog keys of closed partials not yet acknowledged


@dataclass
class IngestCounts:
    """What stage 1 has seen, for the worker's periodic log line."""

    messages: int = 0
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return f"{self.messages} messages, {self.events} valid events, rejected: {reasons}"


class PartialStage:
    """Decode and validate source records, absorb them into partial windows, emit."""

    def __init__(self, settings: Settings, drift: MonitorSpec | None = None) -> None:
        self.settings = settings
        topics = settings.topics
        self.topics = (topics.events, topics.resources)
        self.metrics = settings.metrics
        self._kinds: dict[str, Kind] = {EVENTS: event_kind(self.metrics, drift),
                                        RESOURCES: resource_kind(self.metrics)}
        self._kind_of = {topics.events: EVENTS, topics.resources: RESOURCES}
        self._contract = {EVENTS: InferenceEvent, RESOURCES: ResourceSample}
        self._guards = {
            EVENTS: CardinalityGuard(self.metrics.max_series_per_worker,
                                     tuple(self.metrics.series_labels)),
            RESOURCES: CardinalityGuard(self.metrics.max_series_per_worker,
                                        ("host", "server", "model")),
        }
        self.states: dict[tuple[str, int], Stage1Partition] = {}
        self._sent_watermarks: dict[tuple[str, int], float] = {}
        # closed partials until Kafka has them, per kind (both kinds of partition p share
        # changelog partition p): ``<kind>|out|<window start>|<seq>|<series>``
        self.outboxes = {kind: Outbox(f"{kind}|{_OUTBOX}") for kind in self._kinds}
        self.counts = IngestCounts()
        # events without cost_usd are priced here (None: pricing off); a bad table file
        # fails now, when the worker starts, not on every event
        self.prices = price_table(settings.pricing)
        self.redaction = Redaction.from_settings(settings.privacy)  # None: nothing configured

    # ------------------------------------------------------------------ partitions
    def on_assign(self, topic: str, partition: int, state: dict[str, bytes]) -> int | None:
        kind = self._kind_of[topic]
        prefix, outbox = f"{kind}|", self.outboxes[kind]
        outbox.restore(partition, state)
        items = [(k[len(prefix):], v) for k, v in state.items()
                 if k.startswith(prefix) and not k.startswith(outbox.prefix)]
        restored = Stage1Partition.restore(partition, self.metrics, self._guards[kind], items,
                                           self._kinds[kind])
        self.states[kind, partition] = restored
        return restored.max_offset + 1 if restored.max_offset >= 0 else None

    def on_revoke(self, topic: str, partition: int) -> None:
        key = (self._kind_of[topic], partition)
        self.states.pop(key, None)
        self._sent_watermarks.pop(key, None)
        self.outboxes[key[0]].drop(partition)

    # ------------------------------------------------------------------ records
    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        kind = self._kind_of[topic]
        state = self.states[kind, partition]
        step = Step()
        limits = self.settings.limits
        messages: list[tuple[int, list[Any]]] = []
        for record in records:
            decoded = decode_events(record.value, record.headers or (), limits, wall,
                                    self._contract[kind], self.prices,
                                    redaction=self.redaction)
            self.counts.messages += 1
            self.counts.events += len(decoded.events)
            for rejection in decoded.rejections:
                self.counts.rejected[rejection.reason] += 1
                step.dead_letters.append(dead_letter(
                    rejection, key=record.key, headers=record.headers, topic=topic,
                    partition=partition, offset=record.offset,
                    max_bytes=limits.max_dead_letter_bytes))
            messages.append((record.offset, decoded.events))
        for offset, event, exc in state.add(messages, wall):
            self.counts.events -= 1
            self.counts.rejected["internal"] += 1
            step.dead_letters.append(dead_letter(
                Rejection("internal", describe(exc), _JSON.encode(event)), key=None,
                headers=[("content-type", b"application/json")], topic=topic,
                partition=partition, offset=offset, max_bytes=limits.max_dead_letter_bytes))
        self._close(kind, partition, state, wall, False, step)
        return step

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        """Close what the watermarks passed; a caught-up idle partition advances with the
        wall clock (one with unread records is slow, not idle)."""
        self._guards[EVENTS].expire(older_than=wall - 10 * self.metrics.window_seconds
                                    - self.metrics.idle_timeout_seconds)
        step = Step()
        topic_of = {kind: topic for topic, kind in self._kind_of.items()}
        for (kind, partition), state in list(self.states.items()):
            self._close(kind, partition, state, wall, caught_up(topic_of[kind], partition), step)
        return step

    # ------------------------------------------------------------------ checkpoints
    def _close(self, kind: str, partition: int, state: Stage1Partition, wall: float,
               idle_ok: bool, step: Step) -> None:
        """Close due windows, checkpoint, and queue the outbox and a newer watermark."""
        key = (kind, partition)
        outbox = self.outboxes[kind]
        closed = state.close(wall, idle_ok)
        mark = state.watermark(wall, idle_ok)
        changes: Changes = {}
        for partial in closed:  # written before the checkpoint deletes their slots
            outbox.put(partition, _outbox_name(outbox.prefix, partial), encode_partial(partial),
                       changes)
        upserts, deletes = state.checkpoint()
        changes.update(_ordered(kind, upserts, deletes))
        step.changes.setdefault(partition, {}).update(changes)
        partials = self.settings.topics.partials
        outbox.flush(partition, step, lambda name, record: Output(
            partials, name.split("|", 4)[4].encode(), record))
        marker = None
        if mark > self._sent_watermarks.get(key, -math.inf):
            marker = Watermark(kind=kind, src_partition=partition, watermark=mark)
        elif idle_ok and key not in self._sent_watermarks and state.empty():
            marker = Watermark(kind=kind, src_partition=partition, watermark=mark, empty=True)
        if marker is not None:
            payload = encode_partial(marker)
            step.outputs += [Output(partials, b"__watermark__", payload, target)
                             for target in range(self.settings.topics.partitions)]

            def done() -> None:
                self._sent_watermarks[key] = max(mark, self._sent_watermarks.get(key, mark))

            step.done.append(done)

    def active_series(self) -> int:
        """Event series seen recently by the cardinality guard (``/metrics``)."""
        return self._guards[EVENTS].active

    def summary(self) -> str:
        states = self.states.values()
        late = sum(sum(s.late.values()) for s in states)
        too_late = sum(sum(s.too_late.values()) for s in states)
        replayed = sum(s.replayed for s in states)
        slots = sum(len(s.slots) for s in states)
        overflow = dict(self._guards[EVENTS].overflow) or "none"
        return (f"{self.counts.summary()}; open slots {slots}, active series "
                f"{self._guards[EVENTS].active}, late {late}, too late {too_late}, replayed "
                f"messages skipped {replayed}, cardinality overflow {overflow}")


def _outbox_name(prefix: str, partial: Partial) -> str:
    """The changelog key of a closed partial; the series key comes last (it may hold ``|``)."""
    return f"{prefix}{partial.window_start!r}|{partial.seq}|{partial.series_key}"


def _ordered(kind: str, upserts: dict[str, bytes], deletes: Iterable[str]
             ) -> dict[str, bytes | None]:
    """Changelog changes of one checkpoint: upserts, then deletes, then the meta record
    that vouches for both (a crash mid-write never leaves meta ahead of its slots)."""
    out: dict[str, bytes | None] = {f"{kind}|{k}": v for k, v in upserts.items() if k != META}
    out.update((f"{kind}|{k}", None) for k in deletes)
    if META in upserts:
        out[f"{kind}|{META}"] = upserts[META]
    return out
