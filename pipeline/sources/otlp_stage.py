"""The OTLP bridge as the runtime drives it: span records in; event batches and dead
letters out. Stateless, no I/O.

Each record of a configured OTLP topic is mapped by :func:`~pipeline.sources.otlp.map_spans`
with the topic's encoding; the events go onto the events topic as JSON arrays, where
stage 1 and the sink validate, dead-letter and deduplicate them element by element like
any producer's (``event_id`` is trace id + span id, so a record read twice after a crash
gives the same events). A record that cannot be read, or that fails in any other way,
goes to the DLQ with its original bytes and a reason, and the batch goes on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.config import Settings
from pipeline.runtime.stage import Output, Stateless, Step
from pipeline.sources.codec import Rejection, describe
from pipeline.sources.dlq import dead_letter
from pipeline.sources.otlp import Encoding, map_spans
from pipeline.telemetry import OTLP_SPANS

__all__ = ["OtlpCounts", "OtlpStage"]

_JSON = msgspec.json.Encoder()
_HEADERS = (("content-type", b"application/json"),)
_MAPPED = OTLP_SPANS.labels(outcome="mapped")
_SKIPPED = OTLP_SPANS.labels(outcome="skipped")


@dataclass
class OtlpCounts:
    """What the bridge has seen, for the worker's periodic log line."""

    records: int = 0
    mapped: int = 0
    skipped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (f"{self.records} OTLP records, {self.mapped} GenAI spans mapped to events, "
                f"{self.skipped} other spans skipped, records rejected: {reasons}")


class OtlpStage(Stateless):
    """Map the GenAI spans of OTLP records to inference events on the events topic.

    >>> from pipeline.config import OtlpSettings, Settings
    >>> from pipeline.runtime.stage import Record
    >>> stage = OtlpStage(Settings(otlp=OtlpSettings(topics={"spans": "otlp_json"})))
    >>> step = stage.on_batch("spans", 0, [Record("spans", 0, 7, None, b"{oops")], 0.0)
    >>> stage.topics, dict(step.dead_letters[0].headers)["inferwatch-error-reason"]
    (('spans',), b'otlp_malformed')
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.encodings: dict[str, Encoding] = dict(settings.otlp.topics)
        self.topics = tuple(self.encodings)
        self.counts = OtlpCounts()

    def on_batch(self, topic: str, partition: int, records: Sequence[Any],
                 wall: float) -> Step:
        step = Step()
        encoding = self.encodings[topic]
        limits = self.settings.limits
        encoded: list[tuple[bytes, bytes]] = []  # (trace id, one event as JSON)
        for record in records:
            self.counts.records += 1
            size = len(record.value or b"")
            try:
                if size > limits.max_decompressed_bytes:  # a Collector batch is far smaller
                    rejection = Rejection(
                        "oversize", f"{size} bytes > limit {limits.max_decompressed_bytes} "
                        "(limits.max_decompressed_bytes): not decoded", record.value or b"")
                else:
                    mapped = map_spans(record.value, encoding)
                    rejection = mapped.rejection
                if rejection is None:
                    parts = [(str(e["trace_id"]).encode(), _JSON.encode(e))
                             for e in mapped.events]
            except Exception as exc:  # whatever fails on one record: that record only
                rejection = Rejection("internal", describe(exc), record.value or b"")
            if rejection is not None:
                self.counts.rejected[rejection.reason] += 1
                step.dead_letters.append(dead_letter(
                    rejection, key=record.key, headers=record.headers, topic=topic,
                    partition=partition, offset=record.offset,
                    max_bytes=limits.max_dead_letter_bytes))
                continue
            encoded += parts
            self.counts.mapped += len(parts)
            self.counts.skipped += mapped.skipped
            _MAPPED.inc(len(parts))
            _SKIPPED.inc(mapped.skipped)
        step.outputs += _pack(encoded, self.settings.topics.events, limits.max_batch_events,
                              limits.max_message_bytes)
        return step


def _pack(encoded: list[tuple[bytes, bytes]], topic: str, max_events: int,
          max_bytes: int) -> list[Output]:
    """JSON arrays of at most ``max_events`` events and ``max_bytes`` bytes (an event
    larger than that alone goes alone: stage 1 then dead-letters it as oversize), each
    keyed by its first event's trace id.

    >>> [o.value for o in _pack([(b"t", b"{}"), (b"u", b"{}"), (b"v", b"{}")], "e", 2, 99)]
    [b'[{},{}]', b'[{}]']
    >>> [o.key for o in _pack([(b"t", b"{1}"), (b"u", b"{2}")], "e", 10, 6)]
    [b't', b'u']
    """
    outputs: list[Output] = []
    chunk: list[bytes] = []
    size = 2  # the brackets
    key: bytes | None = None
    for trace_id, part in encoded:
        if chunk and (len(chunk) >= max_events or size + len(part) + 1 > max_bytes):
            outputs.append(Output(topic, key, b"[" + b",".join(chunk) + b"]", None, _HEADERS))
            chunk, size = [], 2
        if not chunk:
            key = trace_id or None
        chunk.append(part)
        size += len(part) + 1
    if chunk:
        outputs.append(Output(topic, key, b"[" + b",".join(chunk) + b"]", None, _HEADERS))
    return outputs
