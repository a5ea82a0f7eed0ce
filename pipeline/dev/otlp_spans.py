"""Inference events → OTLP ``TracesData`` as the OTel Collector's Kafka exporter writes it.

The inverse of :mod:`pipeline.sources.otlp`, for ``inferwatch simulate --otlp`` and the
demo: each event becomes one GenAI client span carrying the current semantic-convention
attribute (the first name :data:`~pipeline.sources.otlp.SOURCES` lists for each field),
grouped into one ``ResourceSpans`` per (service, environment). Ids are derived from the
event id, so the OTLP source maps a span back to an event with a stable ``event_id``.
``otlp_json`` is OTLP/JSON as the Collector writes it: hex ids, int64 as strings.

>>> from schemas.event import InferenceEvent
>>> from pipeline.sources.otlp import map_spans
>>> e = InferenceEvent(event_id="e1", timestamp=1700000000.5, model="gpt-x", latency_ms=250.0,
...                    operation="chat", input_tokens=12, output_tokens=3, service="api")
>>> [m] = map_spans(encode_spans([e], "otlp_proto"), "otlp_proto").events
>>> m["model"], m["latency_ms"], m["input_tokens"], m["service"]
('gpt-x', 250.0, 12, 'api')
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import msgspec
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData

from pipeline.sources.otlp import RESOURCE_SOURCES, SOURCES
from schemas.event import InferenceEvent

__all__ = ["encode_spans"]

_SCOPE = "inferwatch.simulate"


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def _attributes(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in values.items() if v is not None]


def _span(e: InferenceEvent) -> Span:
    digest = hashlib.blake2b(e.event_id.encode(), digest_size=24).digest()
    trace_id = bytes.fromhex(e.trace_id) if e.trace_id and len(e.trace_id) == 32 else digest[:16]
    end_ns = int(e.timestamp * 1e9)
    fields = {
        "operation": e.operation or "chat", "model": e.model, "provider": e.provider or None,
        "input_tokens": e.input_tokens, "output_tokens": e.output_tokens,
        "cache_read_tokens": e.cache_read_tokens, "error_type": e.error_type,
        "time_to_first_token_ms": (None if e.time_to_first_token_ms is None
                                   else e.time_to_first_token_ms / 1000.0),  # seconds
        "finish_reason": [e.finish_reason] if e.finish_reason else None,
        "request_id": e.request_id,
    }
    attributes = {SOURCES[name][0]: value for name, value in fields.items()}
    attributes["gen_ai.request.model"] = e.model
    failed = e.status == "error"
    if failed and not e.error_type:
        attributes["error.type"] = "_OTHER"
    return Span(
        trace_id=trace_id, span_id=digest[16:24], name=f"{fields['operation']} {e.model}",
        kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=end_ns - int(e.latency_ms * 1e6),
        end_time_unix_nano=end_ns, attributes=_attributes(attributes),
        status={"code": 2} if failed else None,
    )


def traces_data(events: Iterable[InferenceEvent]) -> TracesData:
    """One ``ResourceSpans`` per (service, environment), one span per event."""
    groups: dict[tuple[str, str], list[Span]] = defaultdict(list)
    for e in events:
        groups[e.service, e.environment].append(_span(e))
    service_key, environment_key = RESOURCE_SOURCES["service"][0], \
        RESOURCE_SOURCES["environment"][0]
    return TracesData(resource_spans=[
        ResourceSpans(
            resource=Resource(attributes=_attributes(
                {service_key: service or None, environment_key: environment or None})),
            scope_spans=[ScopeSpans(scope={"name": _SCOPE}, spans=spans)],
        ) for (service, environment), spans in groups.items()
    ])


def encode_spans(events: Iterable[InferenceEvent], encoding: str) -> bytes:
    """``events`` as one Kafka record of the OTLP topic in ``encoding``."""
    message = traces_data(events)
    if encoding == "otlp_proto":
        return message.SerializeToString()
    if encoding != "otlp_json":
        raise ValueError(f"unknown OTLP encoding {encoding!r}: otlp_proto or otlp_json")
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    for resource in data.get("resourceSpans", ()):
        for scope in resource.get("scopeSpans", ()):
            for span in scope.get("spans", ()):
                for key in ("traceId", "spanId"):  # OTLP/JSON: hex, not protojson's base64
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return msgspec.json.encode(data)
