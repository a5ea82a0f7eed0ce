"""OTLP spans → events: payloads made by the real OpenTelemetry SDK and encoded by the
OTLP exporter's own encoder, as protobuf and as the Collector's OTLP/JSON; every mapping
rule and fall-back, both encodings. The helpers here also feed the other OTLP tests."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from pipeline.config import IngestLimits
from pipeline.sources.codec import decode_events
from pipeline.sources.otlp import ENCODINGS, RESOURCE_SOURCES, SOURCES, map_spans

ROOT = Path(__file__).resolve().parents[3]
RESOURCE = {"service.name": "chatbot", "deployment.environment.name": "prod"}
CURRENT = {  # the current GenAI semantic conventions, every attribute the mapping reads
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.provider.name": "openai",
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 30,
    "gen_ai.usage.cache_read.input_tokens": 100,
    "gen_ai.response.time_to_first_chunk": 0.25,
    "gen_ai.response.finish_reasons": ["length", "stop"],
    "gen_ai.response.id": "chatcmpl-1",
    "gen_ai.request.temperature": 0.2,  # read by nobody: ignored
}


# ---------------------------------------------------------------------- payload helpers
def sdk_spans(*specs: dict[str, Any], resource: dict[str, Any] | None = None,
              start: float | None = None) -> list[ReadableSpan]:
    """Finished SDK spans, one per spec: ``attrs``, optional ``error`` (an ERROR status),
    ``duration`` seconds (default 0.5), ``name``. Starts ``start`` (default a minute ago)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(RESOURCE if resource is None
                                                       else resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("inferwatch-tests")
    t0 = int(((time.time() - 60) if start is None else start) * 1e9)
    for spec in specs:
        span = tracer.start_span(spec.get("name", "chat"), start_time=t0,
                                 attributes=spec.get("attrs", {}))
        if spec.get("error"):
            span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end(end_time=t0 + int(spec.get("duration", 0.5) * 1e9))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def collector_json(message: Any) -> bytes:
    """OTLP/JSON as the Collector's ``otlp_json`` marshaler writes it: lowerCamelCase keys,
    trace and span ids as hex (not protojson's base64), int64 as strings, enums as numbers."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(data).encode()


def encode(spans: list[ReadableSpan], encoding: str) -> bytes:
    """The record the Collector's Kafka exporter writes for ``spans``: a ``TracesData``
    (same wire format as the OTLP exporter's ``ExportTraceServiceRequest``)."""
    request = encode_spans(spans)
    return request.SerializeToString() if encoding == "otlp_proto" else collector_json(request)


def mapped(encoding: str, *specs: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    out = map_spans(encode(sdk_spans(*specs, **kw), encoding), encoding)
    assert out.rejection is None, out.rejection
    return out.events


both = pytest.mark.parametrize("encoding", ENCODINGS)


# ---------------------------------------------------------------------- the mapping
@both
def test_current_semconv_span_maps_every_field(encoding: str) -> None:
    [span] = sdk_spans({"attrs": CURRENT, "duration": 1.25})
    [event] = map_spans(encode([span], encoding), encoding).events
    context = span.get_span_context()
    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    assert event == {
        "event_id": trace_id + span_id,
        "timestamp": span.end_time / 1e9,
        "trace_id": trace_id,
        "span_id": span_id,
        "service": "chatbot",
        "environment": "prod",
        "model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "operation": "chat",
        "latency_ms": pytest.approx(1250.0),
        "input_tokens": 120,
        "output_tokens": 30,
        "cache_read_tokens": 100,
        "cache_hit": True,
        "time_to_first_token_ms": pytest.approx(250.0),
        "finish_reason": "length",
        "request_id": "chatcmpl-1",
    }


@both
def test_mapped_events_pass_the_native_validation(encoding: str) -> None:
    events = mapped(encoding, {"attrs": CURRENT}, {"attrs": CURRENT, "error": True})
    out = decode_events(msgspec.json.encode(events), {}, IngestLimits(), time.time())
    assert not out.rejections
    assert [e.status for e in out.events] == ["ok", "error"]
    assert out.events[0].trace_id == events[0]["trace_id"]


@both
def test_older_and_openinference_names_are_fall_backs(encoding: str) -> None:
    older = {"gen_ai.operation.name": "text_completion", "gen_ai.request.model": "m-req",
             "gen_ai.system": "vllm", "gen_ai.usage.prompt_tokens": 7,
             "gen_ai.usage.completion_tokens": 3, "gen_ai.usage.cache_read_input_tokens": 0,
             "gen_ai.response.finish_reasons": "stop"}
    openinference = {"gen_ai.operation.name": "chat", "llm.model_name": "m-oi",
                     "llm.token_count.prompt": 11, "llm.token_count.completion": 5,
                     "llm.token_count.prompt_details.cache_read": 4}
    a, b = mapped(encoding, {"attrs": older}, {"attrs": openinference},
                  resource={"service.name": "s", "deployment.environment": "staging"})
    assert (a["model"], a["provider"], a["input_tokens"], a["output_tokens"]) == (
        "m-req", "vllm", 7, 3)
    assert (a["cache_read_tokens"], a["cache_hit"], a["finish_reason"]) == (0, False, "stop")
    assert (a["operation"], a["environment"]) == ("text_completion", "staging")
    assert (b["model"], b["input_tokens"], b["output_tokens"], b["cache_read_tokens"]) == (
        "m-oi", 11, 5, 4)
    assert "provider" not in b


@both
def test_current_names_win_over_their_fall_backs(encoding: str) -> None:
    attrs = {**CURRENT, "gen_ai.system": "old", "gen_ai.usage.prompt_tokens": 1,
             "gen_ai.usage.completion_tokens": 1, "llm.token_count.prompt": 2,
             "llm.model_name": "oi", "gen_ai.usage.cache_read_input_tokens": 3}
    [event] = mapped(encoding, {"attrs": attrs},
                     resource={**RESOURCE, "deployment.environment": "old"})
    assert (event["provider"], event["input_tokens"], event["output_tokens"]) == (
        "openai", 120, 30)
    assert (event["model"], event["cache_read_tokens"], event["environment"]) == (
        "gpt-4o-2024-08-06", 100, "prod")


@both
def test_minimal_span_leaves_optional_fields_out(encoding: str) -> None:
    [event] = mapped(encoding, {"attrs": {"gen_ai.operation.name": "embeddings",
                                          "gen_ai.request.model": "e5"}}, resource={})
    assert set(event) == {"event_id", "timestamp", "trace_id", "span_id", "model",
                          "operation", "latency_ms", "service"}  # the SDK's default name
    assert event["service"].startswith("unknown_service")


@both
def test_errors_from_error_type_or_an_error_status(encoding: str) -> None:
    base = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    typed, status_only, both_, ok, repr_ = mapped(
        encoding, {"attrs": {**base, "error.type": "timeout"}},
        {"attrs": base, "error": True},
        {"attrs": {**base, "error.type": "429"}, "error": True},
        {"attrs": base}, {"attrs": {**base, "error.type": "<class 'httpx.ReadTimeout'>"}})
    assert (typed["status"], typed["error_type"]) == ("error", "timeout")
    assert (status_only["status"], status_only["error_type"]) == ("error", "_OTHER")
    assert (both_["status"], both_["error_type"]) == ("error", "429")
    assert "status" not in ok and "error_type" not in ok
    assert repr_["error_type"] == "httpx.ReadTimeout"  # str(type(exc)) as a class name


@both
def test_empty_finish_reasons_and_missing_usage_are_left_out(encoding: str) -> None:
    [event] = mapped(encoding, {"attrs": {"gen_ai.operation.name": "chat",
                                          "gen_ai.request.model": "m",
                                          "gen_ai.response.finish_reasons": []}})
    assert not {"finish_reason", "input_tokens", "cache_hit"} & set(event)


@both
def test_other_spans_are_skipped_and_counted(encoding: str) -> None:
    spans = sdk_spans({"name": "GET /", "attrs": {"http.request.method": "GET"}},
                      {"attrs": CURRENT},
                      {"name": "execute_tool", "attrs": {"gen_ai.operation.name":
                                                         "execute_tool"}},  # no model
                      {"name": "db", "attrs": {"gen_ai.request.model": "m"}})  # no operation
    out = map_spans(encode(spans, encoding), encoding)
    assert (len(out.events), out.skipped, out.rejection) == (1, 3, None)


@both
def test_many_resources_and_spans_in_one_record(encoding: str) -> None:
    first = sdk_spans(*[{"attrs": CURRENT}] * 3, resource={"service.name": "a"})
    second = sdk_spans({"attrs": CURRENT}, resource={"service.name": "b"})
    out = map_spans(encode(first + second, encoding), encoding)
    assert [e["service"] for e in out.events] == ["a", "a", "a", "b"]
    assert len({e["event_id"] for e in out.events}) == 4


@both
def test_the_same_span_read_twice_gives_the_same_event(encoding: str) -> None:
    payload = encode(sdk_spans({"attrs": CURRENT}), encoding)
    assert map_spans(payload, encoding).events == map_spans(payload, encoding).events


@both
@pytest.mark.parametrize("payload", [b"\x0a\xff\xff\xff", b"{not json", b"[1, 2]",
                                     b'{"resourceSpans": 5}'])
def test_undecodable_records_are_rejected_with_their_bytes(encoding: str,
                                                           payload: bytes) -> None:
    if encoding == "otlp_proto" and payload.startswith((b"{", b"[")):
        payload = b"\x0a" + payload  # a length prefix promising more than there is
    out = map_spans(payload, encoding)
    assert out.rejection is not None and out.rejection.reason == "otlp_malformed"
    assert out.rejection.raw == payload and not out.events


@both
@pytest.mark.parametrize("payload", [None, b"", b"\x08\x01", b"{}", b'{"resourceSpans": []}'])
def test_a_record_without_spans_is_rejected_as_empty(encoding: str, payload: bytes) -> None:
    if encoding == "otlp_proto" and payload and payload.startswith(b"{"):
        payload = b""
    out = map_spans(payload, encoding)
    reason = "otlp_malformed" if encoding == "otlp_json" and payload == b"\x08\x01" else "empty"
    assert out.rejection is not None and out.rejection.reason == reason
    assert out.rejection.raw == (payload or b"")


def test_json_ids_in_base64_are_read_and_bad_ids_rejected() -> None:
    request = encode_spans(sdk_spans({"attrs": CURRENT}))
    protojson = json_format.MessageToJson(request).encode()  # canonical: base64 ids
    [event] = map_spans(protojson, "otlp_json").events
    assert event["trace_id"] == request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    data = json.loads(collector_json(request))
    data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "zz" * 16
    out = map_spans(json.dumps(data).encode(), "otlp_json")
    assert out.rejection is not None and "neither 32 hex digits" in out.rejection.detail


def test_json_ints_as_numbers_and_status_names_are_read() -> None:
    request = encode_spans(sdk_spans({"attrs": CURRENT, "error": True}))
    text = json_format.MessageToJson(request)  # enums as names: "STATUS_CODE_ERROR"
    text = re.sub(r'"intValue": "(\d+)"', r'"intValue": \1', text)
    [event] = map_spans(text.encode(), "otlp_json").events
    assert (event["input_tokens"], event["status"]) == (120, "error")


def test_the_docs_table_names_every_attribute_read() -> None:
    table = (ROOT / "docs" / "otlp.md").read_text()
    for names in (*SOURCES.values(), *RESOURCE_SOURCES.values()):
        for name in names:
            assert f"`{name}`" in table, name
