"""OTLP spans → inference events: decode a ``TracesData`` record, map its GenAI spans.

The OTel Collector's Kafka exporter writes one ``TracesData`` per record, as protobuf
(``otlp_proto``) or OTLP/JSON (``otlp_json``), with no content-type header: the topic's
configured encoding says which. A span with ``gen_ai.operation.name`` and a model becomes
one event dict in the shape of :class:`~schemas.event.InferenceEvent`; other spans are
counted as skipped. Mapping does not validate: the events stage 1 decodes do, element by
element, exactly like native events. Which attribute names are read, and in which order
of preference, is documented in ``docs/otlp.md`` (a test ties the table to ``SOURCES``).

OTLP/JSON is read with msgspec, not ``json_format.Parse``: that one is ~25 times slower
(``benchmarks/otlp.py``), and it takes ids as base64 where OTLP/JSON has hex (base64 ids
are accepted too). No I/O.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from pipeline.sources.codec import Rejection, describe

__all__ = ["ENCODINGS", "SOURCES", "Encoding", "Mapped", "map_spans"]

Encoding = Literal["otlp_proto", "otlp_json"]
ENCODINGS: tuple[Encoding, ...] = ("otlp_proto", "otlp_json")
MALFORMED = "otlp_malformed"

OPERATION = "gen_ai.operation.name"
# event field -> span attributes, preferred first (the table in docs/otlp.md)
SOURCES: dict[str, tuple[str, ...]] = {
    "operation": (OPERATION,),
    "model": ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name"),
    "provider": ("gen_ai.provider.name", "gen_ai.system"),
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                     "llm.token_count.prompt"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                      "llm.token_count.completion"),
    "cache_read_tokens": ("gen_ai.usage.cache_read.input_tokens",
                          "gen_ai.usage.cache_read_input_tokens",
                          "llm.token_count.prompt_details.cache_read"),
    "time_to_first_token_ms": ("gen_ai.response.time_to_first_chunk",),  # seconds
    "finish_reason": ("gen_ai.response.finish_reasons",),  # array: the first
    "error_type": ("error.type",),
    "request_id": ("gen_ai.response.id",),
}
RESOURCE_SOURCES: dict[str, tuple[str, ...]] = {
    "service": ("service.name",),
    "environment": ("deployment.environment.name", "deployment.environment"),
}
_WANTED = frozenset(a for names in SOURCES.values() for a in names)
_RESOURCE_WANTED = frozenset(a for names in RESOURCE_SOURCES.values() for a in names)
_STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR
_OTHER_ERROR = "_OTHER"  # semconv's error.type when an error has no type of its own


@dataclass(slots=True)
class Mapped:
    """What one record gave: event dicts, spans skipped, or why it was unreadable."""

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    rejection: Rejection | None = None


def map_spans(value: bytes | None, encoding: Encoding) -> Mapped:
    """The GenAI spans of one OTLP ``TracesData`` record as event dicts. Never raises:
    a record that cannot be read comes back as a rejection with its original bytes.

    >>> from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
    >>> data = TracesData()
    >>> span = data.resource_spans.add().scope_spans.add().spans.add(
    ...     trace_id=bytes(range(16)), span_id=bytes(8), start_time_unix_nano=10**18,
    ...     end_time_unix_nano=10**18 + 250_000_000)
    >>> for key, text in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "m")):
    ...     _ = span.attributes.add(key=key).value.string_value = text
    >>> out = map_spans(data.SerializeToString(), "otlp_proto")
    >>> out.events[0]["model"], out.events[0]["latency_ms"], out.skipped
    ('m', 250.0, 0)
    >>> map_spans(b"\\xff\\xff", "otlp_proto").rejection.reason
    'otlp_malformed'
    """
    raw = value or b""
    if not raw:
        return Mapped(rejection=Rejection("empty", "message has no value", raw))
    try:
        if encoding == "otlp_proto":
            out = _from_proto(raw)
        elif encoding == "otlp_json":
            out = _from_json(raw)
        else:
            return Mapped(rejection=Rejection(MALFORMED, f"unknown encoding {encoding!r}",
                                              raw))
    except (DecodeError, msgspec.DecodeError, ValueError, RecursionError) as exc:
        return Mapped(rejection=Rejection(MALFORMED, f"{encoding}: {describe(exc)}",
                                          raw))
    except Exception as exc:  # the poison-proof boundary: report it, never raise it
        return Mapped(rejection=Rejection("internal", describe(exc), raw))
    if not out.events and not out.skipped:  # e.g. JSON on a proto topic parsing as nothing
        detail = f"{encoding}: the record holds no spans (is it {encoding}?)"
        return Mapped(rejection=Rejection("empty", detail, raw))
    return out


# ---------------------------------------------------------------------- the mapping
def _event(attrs: dict[str, Any], resource: dict[str, Any], trace_id: str, span_id: str,
           start_ns: int, end_ns: int, status_error: bool) -> dict[str, Any] | None:
    """One span's event dict, or None for a span that is no inference (no model)."""
    model = _first(attrs, SOURCES["model"])
    if model is None:  # execute_tool, create_agent …: GenAI spans, but no model call
        return None
    event: dict[str, Any] = {
        "event_id": trace_id + span_id,
        "timestamp": end_ns / 1e9,
        "trace_id": trace_id,
        "span_id": span_id,
        "model": model,
        "operation": attrs[OPERATION],
        "latency_ms": (end_ns - start_ns) / 1e6,
    }
    event.update(resource)
    for name in ("provider", "input_tokens", "output_tokens", "request_id"):
        found = _first(attrs, SOURCES[name])
        if found is not None:
            event[name] = found
    cached = _first(attrs, SOURCES["cache_read_tokens"])
    if cached is not None:
        event["cache_read_tokens"] = cached
        event["cache_hit"] = isinstance(cached, int) and cached > 0
    ttfc = _first(attrs, SOURCES["time_to_first_token_ms"])
    if isinstance(ttfc, (int, float)) and not isinstance(ttfc, bool):
        event["time_to_first_token_ms"] = ttfc * 1000.0
    elif ttfc is not None:
        event["time_to_first_token_ms"] = ttfc  # not a number: stage 1 says so
    reasons = _first(attrs, SOURCES["finish_reason"])
    if isinstance(reasons, list):
        reasons = reasons[0] if reasons else None
    if reasons is not None:
        event["finish_reason"] = reasons
    error_type = _first(attrs, SOURCES["error_type"])
    if isinstance(error_type, str) and error_type.startswith("<class '"):
        error_type = error_type[8:].removesuffix("'>")  # str(type(exc)), as some write it
    if error_type is not None or status_error:
        event["status"] = "error"
        event["error_type"] = _OTHER_ERROR if error_type is None else error_type
    return event


def _first(attrs: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        found = attrs.get(name)
        if found is not None:
            return found
    return None


def _resource_fields(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, sources in RESOURCE_SOURCES.items():
        found = _first(attrs, sources)
        if found is not None:
            out[name] = found
    return out


class _Tally:
    """Events and skipped spans of one record, filled span by span."""

    __slots__ = ("events", "skipped")

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.skipped = 0

    def add(self, attrs: dict[str, Any], resource: dict[str, Any], trace_id: str,
            span_id: str, start_ns: int, end_ns: int, status_error: bool) -> None:
        event = None
        if OPERATION in attrs:
            event = _event(attrs, resource, trace_id, span_id, start_ns, end_ns, status_error)
        if event is None:
            self.skipped += 1
        else:
            self.events.append(event)


# ---------------------------------------------------------------------- otlp_proto
_SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value"))


def _from_proto(raw: bytes) -> Mapped:
    data = TracesData.FromString(raw)
    tally = _Tally()
    for resource_spans in data.resource_spans:
        resource = _resource_fields(_proto_attrs(resource_spans.resource.attributes,
                                                 _RESOURCE_WANTED))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = _proto_attrs(span.attributes, _WANTED)
                tally.add(attrs, resource, span.trace_id.hex(), span.span_id.hex(),
                          span.start_time_unix_nano, span.end_time_unix_nano,
                          span.status.code == _STATUS_ERROR)
    return Mapped(tally.events, tally.skipped)


def _proto_attrs(key_values: Any, wanted: frozenset[str]) -> dict[str, Any]:
    out = {}
    for kv in key_values:  # the hot loop: each attribute access builds a Python object
        key = kv.key
        if key in wanted:
            value = kv.value
            kind = value.WhichOneof("value")
            out[key] = getattr(value, kind) if kind in _SCALARS else _proto_value(value)
    return out


def _proto_value(value: Any) -> Any:
    """An ``AnyValue`` as Python: str, int, float, bool, a list of those; else None."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_proto_value(v) for v in value.array_value.values]
    if kind in _SCALARS:
        return getattr(value, kind)
    return None  # unset, bytes or a key-value list: no event field takes those


# ---------------------------------------------------------------------- otlp_json
class _JsonArray(msgspec.Struct):
    values: list[_JsonValue] = []


class _JsonValue(msgspec.Struct, rename="camel"):
    """OTLP/JSON ``AnyValue``: int64 may be a string; doubles may be "NaN" or "Infinity"."""

    string_value: str | None = None
    int_value: int | str | None = None
    double_value: float | str | None = None
    bool_value: bool | None = None
    array_value: _JsonArray | None = None

    def python(self) -> Any:
        if self.string_value is not None:
            return self.string_value
        if self.int_value is not None:
            return int(self.int_value)
        if self.double_value is not None:
            return float(self.double_value)
        if self.bool_value is not None:
            return self.bool_value
        if self.array_value is not None:
            return [v.python() for v in self.array_value.values]
        return None


class _JsonKeyValue(msgspec.Struct):
    key: str
    value: msgspec.Raw = msgspec.Raw(b"{}")  # decoded only for the attributes we read


class _JsonStatus(msgspec.Struct):
    code: int | str = 0  # the Collector writes the number; protojson may write the name


class _JsonSpan(msgspec.Struct, rename="camel"):
    trace_id: str = ""
    span_id: str = ""
    start_time_unix_nano: int | str = 0
    end_time_unix_nano: int | str = 0
    attributes: list[_JsonKeyValue] = []
    status: _JsonStatus | None = None


class _JsonScopeSpans(msgspec.Struct):
    spans: list[_JsonSpan] = []


class _JsonResource(msgspec.Struct):
    attributes: list[_JsonKeyValue] = []


class _JsonResourceSpans(msgspec.Struct, rename="camel"):
    resource: _JsonResource | None = None
    scope_spans: list[_JsonScopeSpans] = []


class _JsonTracesData(msgspec.Struct, rename="camel"):
    resource_spans: list[_JsonResourceSpans] = []


_TRACES = msgspec.json.Decoder(_JsonTracesData)
_VALUE = msgspec.json.Decoder(_JsonValue)


def _from_json(raw: bytes) -> Mapped:
    data = _TRACES.decode(raw)
    tally = _Tally()
    for resource_spans in data.resource_spans:
        resource = {}
        if resource_spans.resource is not None:
            resource = _resource_fields(_json_attrs(resource_spans.resource.attributes,
                                                    _RESOURCE_WANTED))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                status = span.status.code if span.status is not None else 0
                tally.add(_json_attrs(span.attributes, _WANTED), resource,
                          _hex_id(span.trace_id, 16), _hex_id(span.span_id, 8),
                          int(span.start_time_unix_nano), int(span.end_time_unix_nano),
                          status in (_STATUS_ERROR, "STATUS_CODE_ERROR"))
    return Mapped(tally.events, tally.skipped)


def _json_attrs(key_values: list[_JsonKeyValue], wanted: frozenset[str]) -> dict[str, Any]:
    return {kv.key: _VALUE.decode(kv.value).python() for kv in key_values if kv.key in wanted}


def _hex_id(text: str, size: int) -> str:
    """An OTLP/JSON trace or span id as lower-case hex: hex as the spec and the Collector
    write it, or base64 as canonical protojson would. Raises ValueError otherwise.

    >>> _hex_id("5B8EFFF798038103D269B633813FC60C", 16)
    '5b8efff798038103d269b633813fc60c'
    >>> _hex_id("AAECAwQFBgc=", 8)
    '0001020304050607'
    """
    if not text:
        return ""
    if len(text) == 2 * size:
        try:
            return bytes.fromhex(text).hex()
        except ValueError:
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error:
        decoded = b""
    if len(decoded) != size:
        raise ValueError(f"id {text[:80]!r} is neither {2 * size} hex digits nor "
                         f"{size} bytes of base64")
    return decoded.hex()
