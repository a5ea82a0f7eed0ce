"""Simulated traffic as OTLP spans: what `simulate --otlp` sends maps back, through the
OTLP source, to the events it was made from (both encodings)."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.config import IngestLimits
from pipeline.dev.otlp_spans import encode_spans
from pipeline.dev.simulate import synthetic
from pipeline.sources.codec import decode_events
from pipeline.sources.otlp import ENCODINGS, map_spans
from schemas.event import InferenceEvent
from tests.unit.dev.test_simulate import START, FakeBroker, _publish

FIELDS = ("model", "operation", "provider", "service", "environment", "status", "error_type",
          "input_tokens", "output_tokens", "cache_read_tokens", "finish_reason", "request_id")


def _events() -> list[InferenceEvent]:
    return [r for _, r in synthetic(seed=5, rate=200.0, duration=5.0, start=START)
            if isinstance(r, InferenceEvent)]


def _through_the_source(payload: bytes, encoding: str) -> list[InferenceEvent]:
    mapped = map_spans(payload, encoding)
    assert mapped.rejection is None and mapped.skipped == 0
    decoded = decode_events(msgspec.json.encode(mapped.events), (),
                            IngestLimits(max_past_seconds=1e10), START + 100)
    assert not decoded.rejections, decoded.rejections[:3]
    return decoded.events


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_spans_map_back_to_the_events_they_came_from(encoding: str) -> None:
    sent = _events()
    assert any(e.status == "error" for e in sent) and len({e.service for e in sent}) > 1
    back = _through_the_source(encode_spans(sent, encoding), encoding)
    assert len(back) == len(sent) and len({e.event_id for e in back}) == len(sent)
    by_request = sorted(back, key=lambda e: e.timestamp)
    for original, mapped in zip(sorted(sent, key=lambda e: e.timestamp), by_request,
                                strict=True):
        for name in FIELDS:
            want = getattr(original, name)
            if name == "error_type" and original.status == "error" and not want:
                want = "_OTHER"
            assert getattr(mapped, name) == want, name
        assert mapped.latency_ms == pytest.approx(original.latency_ms, abs=1e-3)
        assert mapped.timestamp == pytest.approx(original.timestamp, abs=1e-6)
        if original.time_to_first_token_ms is not None:
            assert mapped.time_to_first_token_ms == pytest.approx(
                original.time_to_first_token_ms, rel=1e-9)


def test_the_same_event_always_gets_the_same_span_ids() -> None:
    sent = _events()[:5]
    first = _through_the_source(encode_spans(sent, "otlp_proto"), "otlp_proto")
    again = _through_the_source(encode_spans(sent, "otlp_json"), "otlp_json")
    assert [e.event_id for e in first] == [e.event_id for e in again]


def test_publish_sends_otlp_records_to_the_otlp_topic() -> None:
    records = list(synthetic(seed=5, rate=200.0, duration=3.0, start=START))
    broker = FakeBroker()
    stats = _publish(records, broker, speed=0, batch_size=100, otlp=("spans", "otlp_json"))
    spans = [value for topic, value, _ in broker.messages if topic == "spans"]
    assert spans and not [t for t, _, _ in broker.messages if t.endswith("events")]
    ids = {e.event_id for payload in spans for e in _through_the_source(payload, "otlp_json")}
    assert len(ids) == stats.events == sum(isinstance(r, InferenceEvent) for _, r in records)


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="otlp_proto or otlp_json"):
        encode_spans(_events()[:1], "zipkin")
