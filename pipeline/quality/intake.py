"""The join's intake as the runtime drives it: inference events and feedback in; join
items out, each on the joins partition of its join key. Stateless, no I/O.

Events and feedback are keyed by whatever their producers chose, so neither topic is
partitioned by the join key; this stage re-keys both onto ``topics.joins`` with
:func:`~pipeline.quality.records.join_partition`, packing the items of one batch per
target partition into one message. Outputs are acknowledged before the source offsets
are committed, so every item arrives at least once; the join is idempotent (stubs by
event id, feedback by feedback id), which makes it once.

Invalid feedback goes to the DLQ here with its reason (this stage owns the feedback
topic); invalid events are skipped here, since stage 1 dead-letters them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.config import Settings
from pipeline.quality.records import FeedbackItem, JoinItem, Stub, StubItem, join_id, join_partition
from pipeline.runtime.stage import Output, Stateless, Step
from pipeline.sources.codec import Rejection, decode_events, describe
from pipeline.sources.dlq import dead_letter
from pipeline.sources.redaction import Redaction
from pipeline.windows.guard import CardinalityGuard
from pipeline.windows.profile import series_key, series_labels
from schemas.event import InferenceEvent
from schemas.feedback import FeedbackEvent

__all__ = ["IntakeCounts", "JoinIntake", "encode_items"]

_ENC = msgspec.msgpack.Encoder()
_HEADERS = (("content-type", b"application/msgpack"),)
_CHUNK = 2_000  # items per joins message: well under the broker's message size


@dataclass
class IntakeCounts:
    """What the intake has seen, for the worker's periodic log line."""

    inferences: int = 0
    feedback: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (f"quality intake: {self.inferences} inferences, {self.feedback} feedback, "
                f"feedback rejected: {reasons}")


class JoinIntake(Stateless):
    """Re-key inference stubs and valid feedback onto the joins topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        topics = settings.topics
        self.topics = (topics.events, topics.feedback)
        self.names = tuple(settings.metrics.series_labels)
        self.guard = CardinalityGuard(settings.metrics.max_series_per_worker, self.names)
        self._keys: dict[tuple[str, ...], str] = {}  # admitted labels -> series key
        self.counts = IntakeCounts()
        self.redaction = Redaction.from_settings(settings.privacy)  # as stage 1 drops keys

    def on_tick(self, wall: float, caught_up: Callable[[str, int], bool]) -> Step:
        metrics = self.settings.metrics
        self.guard.expire(older_than=wall - 10 * metrics.window_seconds
                          - metrics.idle_timeout_seconds)
        return Step()

    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        step = Step()
        items: list[JoinItem] = []
        if topic == self.settings.topics.feedback:
            self._feedback(topic, partition, records, wall, items, step)
        else:
            self._inferences(records, wall, items)
        step.outputs += encode_items(items, self.settings.topics.joins,
                                     self.settings.topics.partitions)
        return step

    def _inferences(self, records: Sequence[Any], wall: float, items: list[JoinItem]) -> None:
        limits, names, keys = self.settings.limits, self.names, self._keys
        if len(keys) > 4 * self.guard.max_series:
            keys.clear()  # a cache, bounded like the series it names
        for record in records:
            for event in decode_events(record.value, record.headers or (), limits, wall,
                                       InferenceEvent, redaction=self.redaction).events:
                try:
                    values = self.guard.admit(tuple(series_labels(event, names).values()), wall)
                    key = keys.get(values)
                    if key is None:
                        key = keys[values] = series_key(dict(zip(names, values, strict=True)))
                    stub = _stub(event, key)
                except Exception:
                    continue
                self.counts.inferences += 1
                items.append(StubItem(f"e:{event.event_id}", stub))
                if event.request_id:
                    items.append(StubItem(f"r:{event.request_id}", stub, primary=False))

    def _feedback(self, topic: str, partition: int, records: Sequence[Any], wall: float,
                  items: list[JoinItem], step: Step) -> None:
        limits = self.settings.limits
        for record in records:
            try:
                decoded = decode_events(record.value, record.headers or (), limits, wall,
                                        FeedbackEvent, redaction=self.redaction)
                rejections = list(decoded.rejections)
                found = [FeedbackItem(join_id(f.event_id, f.request_id), f)
                         for f in decoded.events]
            except Exception as exc:  # whatever fails on one record: that record only
                rejections = [Rejection("internal", describe(exc), record.value or b"")]
                found = []
            items += found
            self.counts.feedback += len(found)
            for rejection in rejections:
                self.counts.rejected[rejection.reason] += 1
                step.dead_letters.append(dead_letter(
                    rejection, key=record.key, headers=record.headers, topic=topic,
                    partition=partition, offset=record.offset,
                    max_bytes=limits.max_dead_letter_bytes))


def _stub(event: InferenceEvent, key: str) -> Stub:
    return Stub(event.event_id, key, event.timestamp, event.prediction, event.confidence,
                event.latency_ms, event.status == "error")


def encode_items(items: Sequence[JoinItem], topic: str, partitions: int) -> list[Output]:
    """One msgpack array per target partition (and per ``_CHUNK`` items), sent to the
    partition of its items' join keys.

    >>> from pipeline.quality.records import Stub, StubItem
    >>> out = encode_items([StubItem("e:a", Stub("a", "model=m", 1.0))], "joins", 6)
    >>> [(o.topic, o.partition, o.key) for o in out]
    [('joins', 0, b'e:a')]
    """
    by_partition: dict[int, list[JoinItem]] = {}
    for item in items:
        by_partition.setdefault(join_partition(item.join_id, partitions), []).append(item)
    return [Output(topic, chunk[0].join_id.encode(), _ENC.encode(chunk), target, _HEADERS)
            for target, group in sorted(by_partition.items())
            for chunk in (group[i:i + _CHUNK] for i in range(0, len(group), _CHUNK))]
