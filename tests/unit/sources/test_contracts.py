"""Contracts and validation: every rejection reason, asserted by reason and detail."""

from __future__ import annotations

import gzip
import json
import math
import tracemalloc

import msgspec
import pytest

from pipeline.config import IngestLimits
from pipeline.sources.codec import MSGPACK, decode_events, encode_events
from schemas import InferenceEvent, ResourceSample, export_json_schemas

NOW = 1_800_000_000.0
LIMITS = IngestLimits()
JSON_H = {"content-type": b"application/json"}
MSGPACK_H = {"content-type": b"application/msgpack"}


def good(**overrides) -> dict:
    event = {"event_id": "e1", "timestamp": NOW - 1, "model": "gpt-x", "latency_ms": 120.5}
    event.update(overrides)
    return event


def decode_json(value, headers=JSON_H, limits=LIMITS):
    return decode_events(value, headers, limits, NOW)


def only_rejection(out):
    assert out.events == []
    assert len(out.rejections) == 1, out.rejections
    return out.rejections[0]


# --------------------------------------------------------------------------- accepted
def test_full_event_round_trips_in_json_and_msgpack():
    event = InferenceEvent(
        event_id="e1", timestamp=NOW, request_id="r1", trace_id="t" * 32, span_id="s" * 16,
        service="chat-api", environment="prod", tenant="acme", user="u-9f2", region="eu-west",
        model="gpt-x", model_version="2024-09", provider="openai", operation="chat",
        status="error", error_type="timeout", http_status=504, finish_reason="length",
        latency_ms=812.0, time_to_first_token_ms=95.0, queue_wait_ms=3.0,
        time_per_output_token_ms=12.5, input_tokens=1020, output_tokens=129,
        cache_read_tokens=512, cache_hit=True, cost_usd=0.0031, cost_source="given",
        prediction="positive",
        confidence=0.93, feedback_score=1.0, features={"prompt_length": 1020.0, "lang": "en"},
        attributes={"app_feature": "summarize"},
    )
    for ctype, headers in (("application/json", JSON_H), (MSGPACK, MSGPACK_H)):
        out = decode_events(encode_events(event, ctype), headers, LIMITS, NOW)
        assert out.rejections == []
        assert out.events == [event]


def test_missing_content_type_means_json_and_batches_decode():
    batch = json.dumps([good(event_id=f"e{i}") for i in range(3)]).encode()
    out = decode_events(batch, {}, LIMITS, NOW)
    assert [e.event_id for e in out.events] == ["e0", "e1", "e2"]


def test_unknown_fields_ignored_and_optional_fields_default():
    out = decode_json(json.dumps(good(new_field_from_v2={"x": 1})).encode())
    (event,) = out.events
    assert event.status == "ok" and event.input_tokens is None and event.features == {}


def test_resource_sample_decodes():
    raw = json.dumps({"timestamp": NOW, "host": "gpu-1", "gpu_util": 0.8}).encode()
    out = decode_events(raw, JSON_H, LIMITS, NOW, ResourceSample)
    assert out.events[0].gpu_util == 0.8


# --------------------------------------------------------------------------- rejected
@pytest.mark.parametrize(
    ("event", "needle"),
    [
        (good(latency_ms="fast"), "Expected `float`, got `str` - at `$.latency_ms`"),
        (good(input_tokens=1.5), "Expected `int | null`, got `float` - at `$.input_tokens`"),
        (good(status="maybe"), "Invalid enum value 'maybe' - at `$.status`"),
        ({"timestamp": NOW, "model": "m", "latency_ms": 1}, "missing required field `event_id`"),
        ({"event_id": "e", "model": "m", "latency_ms": 1}, "missing required field `timestamp`"),
        (good(latency_ms=-1), "Expected `float` >= 0.0 - at `$.latency_ms`"),
        (good(time_to_first_token_ms=-0.1), ">= 0.0 - at `$.time_to_first_token_ms`"),
        (good(output_tokens=-3), "Expected `int` >= 0 - at `$.output_tokens`"),
        (good(latency_ms=1e300), "<= 86400000.0 - at `$.latency_ms`"),
        (good(confidence=1.5), "<= 1.0 - at `$.confidence`"),
        (good(features={f"f{i}": 1.0 for i in range(65)}), "length <= 64 - at `$.features`"),
        (good(model="m" * 129), "length <= 128 - at `$.model`"),
        (good(request_id="r" * 257), "length <= 256 - at `$.request_id`"),
        (good(features={"k": "v" * 257}), "length <= 256"),
        (good(event_id=""), "length >= 1 - at `$.event_id`"),
    ],
    ids=["wrong-type-str", "wrong-type-int", "bad-enum", "missing-event-id", "missing-timestamp",
         "negative-latency", "negative-ttft", "negative-tokens", "absurd-latency",
         "confidence-range", "too-many-features", "long-model", "long-request-id",
         "long-feature-value", "empty-event-id"],
)
def test_schema_rejections_name_the_field(event, needle):
    raw = json.dumps(event).encode()
    rejection = only_rejection(decode_json(raw))
    assert rejection.reason == "schema"
    assert needle in rejection.detail
    assert rejection.raw == raw


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_durations_rejected(value):
    raw = msgspec.msgpack.encode(good(latency_ms=value))
    rejection = only_rejection(decode_events(raw, MSGPACK_H, LIMITS, NOW))
    assert rejection.reason == "schema"
    assert "$.latency_ms" in rejection.detail


def test_nan_feature_value_rejected():
    raw = msgspec.msgpack.encode(good(features={"x": math.nan}))
    rejection = only_rejection(decode_events(raw, MSGPACK_H, LIMITS, NOW))
    assert rejection.reason == "schema" and "$.features" in rejection.detail


def test_timestamp_far_in_future_rejected_but_small_skew_accepted():
    assert decode_json(json.dumps(good(timestamp=NOW + 60)).encode()).events
    rejection = only_rejection(decode_json(json.dumps(good(timestamp=NOW + 86_400)).encode()))
    assert rejection.reason == "future_timestamp"
    assert "86400s in the future" in rejection.detail


def test_timestamp_older_than_retention_rejected_not_silently_expired():
    limits = IngestLimits(max_past_seconds=86_400)
    assert decode_json(json.dumps(good(timestamp=NOW - 3600)).encode(), limits=limits).events
    raw = json.dumps(good(timestamp=NOW - 2 * 86_400)).encode()
    rejection = only_rejection(decode_json(raw, limits=limits))
    assert rejection.reason == "stale_timestamp" and "172800s old" in rejection.detail


def test_oversize_payload_rejected_before_decoding():
    limits = IngestLimits(max_message_bytes=1000)
    raw = json.dumps([good(event_id=f"e{i}") for i in range(50)]).encode()
    rejection = only_rejection(decode_json(raw, limits=limits))
    assert rejection.reason == "oversize" and "> limit 1000" in rejection.detail


def test_gzip_payload_accepted():
    raw = gzip.compress(json.dumps([good(), good(event_id="e2")]).encode())
    out = decode_json(raw, headers={**JSON_H, "content-encoding": b"gzip"})
    assert [e.event_id for e in out.events] == ["e1", "e2"]


def test_compressed_bomb_rejected_with_bounded_memory():
    limits = IngestLimits(max_decompressed_bytes=1 << 20)
    bomb = gzip.compress(b"[" + b" " * (200 << 20) + b"]", compresslevel=9)  # 200 MiB of spaces
    assert len(bomb) < limits.max_message_bytes  # small on the wire
    tracemalloc.start()
    out = decode_json(bomb, headers={**JSON_H, "content-encoding": b"gzip"}, limits=limits)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rejection = only_rejection(out)
    assert rejection.reason == "decompressed_oversize"
    assert peak < 4 * limits.max_decompressed_bytes  # never inflated the 200 MiB


def test_truncated_gzip_rejected():
    raw = gzip.compress(json.dumps(good()).encode())[:-12]
    rejection = only_rejection(decode_json(raw, headers={**JSON_H, "content-encoding": b"gzip"}))
    assert rejection.reason == "decompression_failed"


def test_corrupt_gzip_rejected():
    headers = {"content-encoding": b"gzip"}
    rejection = only_rejection(decode_json(b"not gzip at all", headers=headers))
    assert rejection.reason == "decompression_failed" and "gzip" in rejection.detail


def test_unsupported_content_type_and_encoding():
    raw = json.dumps(good()).encode()
    rejection = only_rejection(decode_json(raw, headers={"content-type": b"text/xml"}))
    assert rejection.reason == "unsupported_content_type" and "text/xml" in rejection.detail
    rejection = only_rejection(decode_json(raw, headers={"content-encoding": b"br"}))
    assert rejection.reason == "unsupported_content_encoding"


@pytest.mark.parametrize("raw", [b"{oops", b'{"event_id": "e1",', b"\xff\xfe"])
def test_malformed_json_rejected(raw):
    rejection = only_rejection(decode_json(raw))
    assert rejection.reason == "malformed" and rejection.raw == raw


def test_malformed_msgpack_rejected():
    rejection = only_rejection(decode_events(b"\xc1", MSGPACK_H, LIMITS, NOW))
    assert rejection.reason == "malformed"


@pytest.mark.parametrize("value", [None, b""])
def test_empty_message_rejected(value):
    assert only_rejection(decode_json(value)).reason == "empty"


def test_scalar_top_level_rejected_as_schema():
    rejection = only_rejection(decode_json(b'"hello"'))
    assert rejection.reason == "schema"


def test_batch_too_large_rejected_whole():
    limits = IngestLimits(max_batch_events=5)
    raw = json.dumps([good(event_id=f"e{i}") for i in range(6)]).encode()
    rejection = only_rejection(decode_json(raw, limits=limits))
    assert rejection.reason == "batch_too_large" and "6 events > limit 5" in rejection.detail


def test_one_bad_element_rejects_only_itself_with_its_own_bytes():
    elements = [json.dumps(good(event_id=f"e{i}")).encode() for i in range(5)]
    elements[3] = b'{"event_id":"bad","timestamp":1,"model":"m","latency_ms":-9}'
    elements[1] = json.dumps(good(event_id="future", timestamp=NOW + 10**6)).encode()
    out = decode_json(b"[" + b", ".join(elements) + b"]")
    assert [e.event_id for e in out.events] == ["e0", "e2", "e4"]
    reasons = {(r.index, r.reason, r.raw) for r in out.rejections}
    assert reasons == {(1, "future_timestamp", elements[1]), (3, "schema", elements[3])}


def test_msgpack_batch_element_rejection_keeps_bytes():
    batch = [good(event_id="a"), good(event_id="b", output_tokens=-1)]
    out = decode_events(msgspec.msgpack.encode(batch), MSGPACK_H, LIMITS, NOW)
    assert [e.event_id for e in out.events] == ["a"]
    (rejection,) = out.rejections
    assert rejection.index == 1
    assert msgspec.msgpack.decode(rejection.raw)["event_id"] == "b"


# --------------------------------------------------------------------------- JSON Schema
def test_json_schema_export_describes_the_contract(tmp_path):
    paths = export_json_schemas(tmp_path)
    assert sorted(p.name for p in paths) == [
        "AlertEvent.schema.json", "FeedbackEvent.schema.json", "InferenceEvent.schema.json",
        "ResourceMetrics.schema.json",
        "ResourceSample.schema.json", "WindowMetrics.schema.json", "WindowScores.schema.json",
    ]
    schema = json.loads((tmp_path / "InferenceEvent.schema.json").read_text())
    body = schema["$defs"]["InferenceEvent"]
    assert set(body["required"]) == {"event_id", "timestamp", "model", "latency_ms"}
    assert body["properties"]["latency_ms"]["minimum"] == 0.0
    assert body["properties"]["features"]["maxProperties"] == 64
