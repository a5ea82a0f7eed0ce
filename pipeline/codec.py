"""Bytes ⇄ events at the Kafka boundary: decode, validate, and say exactly why not.

A message value is one event or an array of events, JSON or MessagePack by its
``content-type`` header (JSON when absent), optionally gzip-compressed by its
``content-encoding`` header. Decoding is validation (bounds live in the Structs);
the few checks a type cannot express (the future-timestamp skew) run right after.

A bad element of a batch rejects that element only: the good ones around it go on,
and the bad one goes to the DLQ with its own bytes and its index in the batch.
No I/O here: adapters hand in bytes and headers and get events and rejections back.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from pipeline.config import IngestLimits
from schemas.event import InferenceEvent, ResourceSample

__all__ = [
    "Decoded",
    "Rejection",
    "content_type_of",
    "decode_events",
    "encode_events",
]

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_ALIASES = {MSGPACK, "application/x-msgpack", "application/vnd.msgpack"}

Reason = Literal[
    "empty",
    "oversize",
    "unsupported_content_type",
    "unsupported_content_encoding",
    "decompression_failed",
    "decompressed_oversize",
    "malformed",
    "schema",
    "batch_too_large",
    "future_timestamp",
    "stale_timestamp",
]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why some bytes were not ingested. ``index`` is the batch position, if any."""

    reason: Reason
    detail: str
    raw: bytes
    index: int | None = None


@dataclass(slots=True)
class Decoded:
    events: list[Any] = field(default_factory=list)  # InferenceEvent or ResourceSample
    rejections: list[Rejection] = field(default_factory=list)


Contract = type[InferenceEvent] | type[ResourceSample]


class _Codec:
    """Pre-built msgspec decoders for one encoding and one contract."""

    def __init__(self, module: Any, contract: Contract) -> None:
        self.one_or_many = module.Decoder(contract | list[contract])  # type: ignore[valid-type]
        self.one = module.Decoder(contract)
        self.elements = module.Decoder(list[msgspec.Raw])
        self.encoder = module.Encoder()


_CODECS = {
    (ctype, contract): _Codec(module, contract)
    for ctype, module in ((JSON, msgspec.json), (MSGPACK, msgspec.msgpack))
    for contract in (InferenceEvent, ResourceSample)
}


def _header(headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]], name: str) -> str:
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key.lower() == name:
            return (value or b"").decode("latin-1").strip().lower()
    return ""


def content_type_of(headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]]) -> str | None:
    """The canonical content type of a message, or None when it is not one we read."""
    raw = _header(headers, "content-type").split(";", 1)[0].strip()
    if raw in ("", JSON, "text/json"):
        return JSON
    if raw in _MSGPACK_ALIASES:
        return MSGPACK
    return None


def _gunzip(data: bytes, limit: int) -> bytes | Rejection:
    """Inflate gzip or zlib data, producing at most ``limit`` bytes (bounded memory)."""
    inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # auto-detect gzip / zlib
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        return Rejection("decompression_failed", f"gzip: {exc}", data)
    if len(out) > limit or inflater.unconsumed_tail:
        return Rejection(
            "decompressed_oversize",
            f"decompressed payload exceeds {limit} bytes (compressed {len(data)} bytes)",
            data,
        )
    if not inflater.eof:
        return Rejection("decompression_failed", "gzip: truncated stream", data)
    return out


def decode_events(
    value: bytes | None,
    headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]],
    limits: IngestLimits,
    now: float,
    contract: Contract = InferenceEvent,
) -> Decoded:
    """Decode one Kafka message value into valid records of ``contract`` and rejections.

    ``now`` is the wall clock (Unix seconds) for the future-timestamp check.

    >>> from pipeline.config import IngestLimits
    >>> good = b'{"event_id":"a","timestamp":1,"model":"m","latency_ms":5}'
    >>> bad = b'{"event_id":"b","timestamp":1,"model":"m","latency_ms":-5}'
    >>> out = decode_events(b"[" + good + b"," + bad + b"]", {}, IngestLimits(), now=2.0)
    >>> [e.event_id for e in out.events], [(r.reason, r.index) for r in out.rejections]
    (['a'], [('schema', 1)])
    """
    result = Decoded()
    raw = value or b""
    if not raw:
        result.rejections.append(Rejection("empty", "message has no value", raw))
        return result
    if len(raw) > limits.max_message_bytes:
        result.rejections.append(
            Rejection("oversize", f"{len(raw)} bytes > limit {limits.max_message_bytes}", raw)
        )
        return result
    ctype = content_type_of(headers)
    if ctype is None:
        detail = f"content-type {_header(headers, 'content-type')!r}; use {JSON} or {MSGPACK}"
        result.rejections.append(Rejection("unsupported_content_type", detail, raw))
        return result
    encoding = _header(headers, "content-encoding")
    payload: bytes = raw
    if encoding in ("gzip", "deflate"):
        inflated = _gunzip(raw, limits.max_decompressed_bytes)
        if isinstance(inflated, Rejection):
            result.rejections.append(inflated)
            return result
        payload = inflated
    elif encoding not in ("", "identity"):
        detail = f"content-encoding {encoding!r}; use gzip or none"
        result.rejections.append(Rejection("unsupported_content_encoding", detail, raw))
        return result

    codec = _CODECS[ctype, contract]
    try:
        decoded = codec.one_or_many.decode(payload)
    except msgspec.ValidationError:
        decoded = None  # some element is bad: split the batch below
    except msgspec.DecodeError as exc:
        result.rejections.append(Rejection("malformed", str(exc), raw))
        return result

    horizon = now + limits.max_future_seconds
    oldest = now - limits.max_past_seconds
    if isinstance(decoded, contract):
        candidates: list[tuple[int | None, Any, bytes]] = [(None, decoded, raw)]
    elif decoded is not None:
        if len(decoded) > limits.max_batch_events:
            result.rejections.append(_too_large(len(decoded), limits, raw))
            return result
        if all(oldest <= e.timestamp <= horizon for e in decoded):  # the fast, common path
            result.events = decoded
            return result
        candidates = _split(codec, payload, raw, limits, result)  # to keep original bytes
    else:
        candidates = _split(codec, payload, raw, limits, result)

    for index, event, element in candidates:
        if event.timestamp > horizon:
            detail = (
                f"timestamp {event.timestamp:.3f} is {event.timestamp - now:.0f}s in the future "
                f"(limit {limits.max_future_seconds:.0f}s)"
            )
            result.rejections.append(Rejection("future_timestamp", detail, element, index))
        elif event.timestamp < oldest:
            detail = (
                f"timestamp {event.timestamp:.3f} is {now - event.timestamp:.0f}s old "
                f"(limit {limits.max_past_seconds:.0f}s, the raw retention)"
            )
            result.rejections.append(Rejection("stale_timestamp", detail, element, index))
        else:
            result.events.append(event)
    return result


def _too_large(count: int, limits: IngestLimits, raw: bytes) -> Rejection:
    return Rejection("batch_too_large", f"{count} events > limit {limits.max_batch_events}", raw)


def _split(
    codec: _Codec, payload: bytes, raw: bytes, limits: IngestLimits, result: Decoded
) -> list[tuple[int | None, Any, bytes]]:
    """Slow path: decode element by element so one bad event rejects only itself."""
    try:
        elements = codec.elements.decode(payload)
    except msgspec.DecodeError:
        # Not an array, so it was a single event that failed validation.
        try:
            codec.one.decode(payload)
        except msgspec.DecodeError as exc:
            result.rejections.append(Rejection("schema", str(exc), raw))
        return []
    if len(elements) > limits.max_batch_events:
        result.rejections.append(_too_large(len(elements), limits, raw))
        return []
    good: list[tuple[int | None, Any, bytes]] = []
    for index, element in enumerate(elements):
        try:
            good.append((index, codec.one.decode(element), bytes(element)))
        except msgspec.DecodeError as exc:
            result.rejections.append(Rejection("schema", str(exc), bytes(element), index))
    return good


def encode_events(events: Any, content_type: str = JSON) -> bytes:
    """Encode one record or a batch (a list), in the given content type."""
    return _CODECS[content_type, InferenceEvent].encoder.encode(events)
