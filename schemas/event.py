"""The inference event and resource sample contracts.

Field names follow the OpenTelemetry GenAI semantic conventions where one exists
(``gen_ai.request.model`` → ``model``, ``gen_ai.usage.input_tokens`` → ``input_tokens``,
``error.type`` → ``error_type``, ``http.response.status_code`` → ``http_status``).

Evolution rules (msgspec's): new fields get defaults, existing field types never
change, unknown fields are ignored. Bounds live in the types, so decoding is
validation: a value that decodes is a value the pipeline may trust.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.bounds import INT64_MAX, EpochSeconds, SchemaVersion

__all__ = [
    "SCHEMA_VERSION",
    "InferenceEvent",
    "ResourceSample",
]

SCHEMA_VERSION = 1

# Bounds. Finite upper bounds also reject +inf; ``ge`` rejects NaN and negatives.
_DAY_MS = 86_400_000.0
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Label = Annotated[str, msgspec.Meta(max_length=128)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(max_length=256)]
DurationMs = Annotated[float, msgspec.Meta(ge=0.0, le=_DAY_MS)]
Tokens = Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]  # inside UInt32
Usd = Annotated[float, msgspec.Meta(ge=0.0, le=1_000_000.0)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Finite = Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)]
Features = Annotated[dict[Key, Finite | Text], msgspec.Meta(max_length=64)]
Attributes = Annotated[dict[Key, Text], msgspec.Meta(max_length=32)]


class InferenceEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One model inference, as published by a model server.

    Required: ``event_id`` (unique, the dedup key), ``timestamp`` (event time, Unix
    seconds UTC), ``model`` and ``latency_ms``. Everything else is optional.

    >>> import msgspec
    >>> raw = b'{"event_id": "e1", "timestamp": 1700000000.5, "model": "gpt-x", "latency_ms": 812}'
    >>> msgspec.json.decode(raw, type=InferenceEvent).latency_ms
    812.0
    """

    schema_version: SchemaVersion = SCHEMA_VERSION

    # identity
    event_id: Id
    timestamp: EpochSeconds
    request_id: Text | None = None
    trace_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    span_id: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    service: Label = ""
    environment: Label = ""
    tenant: Label = ""
    user: Label = ""  # pseudonymised by the producer; never a raw identity
    region: Label = ""

    # model (gen_ai.request.model, gen_ai.provider.name, gen_ai.operation.name)
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    model_version: Label = ""
    provider: Label = ""
    operation: Label = ""

    # outcome (error.type, http.response.status_code, gen_ai.response.finish_reasons)
    status: Literal["ok", "error"] = "ok"
    error_type: Label | None = None
    http_status: Annotated[int, msgspec.Meta(ge=100, le=599)] | None = None
    finish_reason: Label | None = None

    # timing, milliseconds
    latency_ms: DurationMs
    time_to_first_token_ms: DurationMs | None = None
    queue_wait_ms: DurationMs | None = None
    time_per_output_token_ms: DurationMs | None = None

    # usage (gen_ai.usage.*)
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cache_read_tokens: Tokens | None = None
    cache_hit: bool | None = None
    cost_usd: Usd | None = None
    # Set by the pipeline, never trusted from the producer: "given" when the event came
    # with cost_usd, "computed" when priced from the price table (docs/pricing.md), None
    # when it has no cost.
    cost_source: Literal["given", "computed"] | None = None

    # quality
    prediction: Text | Finite | None = None
    confidence: Unit | None = None
    feedback_score: Unit | None = None  # 0 = bad … 1 = good (thumbs, stars rescaled)

    # drift inputs and free labels
    features: Features = {}
    attributes: Attributes = {}


class ResourceSample(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One resource reading of a model server host (topic ``inferwatch.resources``).

    Utilisations are fractions in [0, 1].
    """

    schema_version: SchemaVersion = SCHEMA_VERSION
    timestamp: EpochSeconds
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    server: Label = ""
    model: Label = ""
    cpu_util: Unit | None = None
    memory_util: Unit | None = None
    memory_bytes: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None = None
    gpu_util: Unit | None = None
    gpu_memory_util: Unit | None = None
    kv_cache_util: Unit | None = None
    queue_length: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] | None = None  # UInt32
