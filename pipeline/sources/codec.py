"""Bytes ⇄ events at the Kafka boundary: decode, validate, and say exactly why not.

A message value is one event or an array of events, JSON or MessagePack by its
``content-type`` header (JSON when absent), optionally gzip-compressed by its
``content-encoding`` header. Decoding is validation (bounds live in the Structs);
the few checks a type cannot express (the future-timestamp skew) run right after.
A contract's own ``__post_init__`` rules (``FeedbackEvent``: an event or request id,
the value its kind names) fail inside decoding, so they are ``schema`` rejections.

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
from pipeline.sdk.wire import JSON, MSGPACK, encode_events
from pipeline.sources.pricing import Prices, stamp_costs
from pipeline.sources.redaction import Redaction
from pipeline.sources.shape import json_array_length, msgpack_array_length
from schemas.event import InferenceEvent, ResourceSample
from schemas.feedback import FeedbackEvent

__all__ = [
    "Decoded",
    "Rejection",
    "content_type_of",
    "decode_events",
    "describe",
    "encode_events",
]

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
    "otlp_malformed",  # an OTLP record (sources/otlp) that is not a TracesData
    "internal",  # anything else that failed on this message: exception type and message
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
    events: list[Any] = field(default_factory=list)  # records of the decoded contract
    rejections: list[Rejection] = field(default_factory=list)


Contract = type[InferenceEvent] | type[ResourceSample] | type[FeedbackEvent]


class _Codec:
    """Pre-built msgspec decoders for one encoding and one contract."""

    def __init__(self, module: Any, contract: Contract) -> None:
        self.one_or_many = module.Decoder(contract | list[contract])  # type: ignore[valid-type]
        self.one = module.Decoder(contract)
        self.elements = module.Decoder(list[msgspec.Raw])
        self.syntax = module.Decoder(msgspec.Raw)  # well-formed? (builds nothing)
        self.length = json_array_length if module is msgspec.json else msgpack_array_length


_CODECS = {
    (ctype, contract): _Codec(module, contract)
    for ctype, module in ((JSON, msgspec.json), (MSGPACK, msgspec.msgpack))
    for contract in (InferenceEvent, ResourceSample, FeedbackEvent)
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
    """Inflate gzip or zlib data, every member of a multi-member gzip, producing at
    most ``limit`` bytes in all (bounded memory)."""
    parts: list[bytes] = []
    size = 0
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # auto-detect gzip / zlib
        try:
            out = inflater.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            return Rejection("decompression_failed", f"gzip: {exc}", data)
        size += len(out)
        if size > limit or inflater.unconsumed_tail:
            return Rejection(
                "decompressed_oversize",
                f"decompressed payload exceeds {limit} bytes (compressed {len(data)} bytes)",
                data,
            )
        if not inflater.eof:
            return Rejection("decompression_failed", "gzip: truncated stream", data)
        parts.append(out)
        rest = inflater.unused_data
        if not rest.strip(b"\0"):  # gzip writers may pad the end with zeros
            return b"".join(parts)


def decode_events(
    value: bytes | None,
    headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]],
    limits: IngestLimits,
    now: float,
    contract: Contract = InferenceEvent,
    prices: Prices | None = None,
    *,
    redaction: Redaction | None = None,
) -> Decoded:
    """Decode one Kafka message value into valid records of ``contract`` and rejections.

    ``now`` is the wall clock (Unix seconds) for the future-timestamp check. Never
    raises: whatever fails on this message becomes a rejection (``internal`` where no
    more precise reason applies), so no input can stop the worker that reads it.

    Inference events leave with their cost settled (:func:`~pipeline.sources.pricing.
    stamp_costs`): priced from ``prices`` when they came without ``cost_usd`` (None: no
    pricing), and ``cost_source`` set to ``given``, ``computed`` or None. Both stage 1
    and the sink decode here, so they agree on every event's cost.

    ``redaction`` (``Redaction.from_settings(settings.privacy)``; None: nothing configured)
    drops and masks the attribute and feature keys ``privacy`` names, on inference events
    and feedback, before the records leave: stage 1, the sink and the quality intake all
    decode here, so none of them ever holds a dropped key. Rejections keep the raw bytes.

    >>> from pipeline.config import IngestLimits
    >>> good = b'{"event_id":"a","timestamp":1,"model":"m","latency_ms":5}'
    >>> bad = b'{"event_id":"b","timestamp":1,"model":"m","latency_ms":-5}'
    >>> out = decode_events(b"[" + good + b"," + bad + b"]", {}, IngestLimits(), now=2.0)
    >>> [e.event_id for e in out.events], [(r.reason, r.index) for r in out.rejections]
    (['a'], [('schema', 1)])
    >>> out.events[0].cost_usd, out.events[0].cost_source  # no cost given, none priced
    (None, None)
    """
    raw = value or b""
    try:
        decoded = _decode(raw, headers, limits, now, contract)
        if contract is InferenceEvent:
            stamp_costs(decoded.events, prices)
        if redaction is not None:
            if contract is InferenceEvent:
                redaction.events(decoded.events)
            elif contract is FeedbackEvent:
                redaction.feedback(decoded.events)
        return decoded
    except Exception as exc:  # the poison-proof boundary: report it, never raise it
        return Decoded(rejections=[Rejection("internal", describe(exc), raw)])


def describe(exc: BaseException) -> str:
    """An exception as a one-line DLQ detail: ``Type: message``, with its cause's message
    when that adds something (clickhouse-connect hides the useful part there)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text[:1000]


def _decode(raw: bytes, headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]],
            limits: IngestLimits, now: float, contract: Contract) -> Decoded:
    result = Decoded()
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
    except (msgspec.ValidationError, RecursionError):
        decoded = None  # a bad element, or nested too deep: look closer below
    except msgspec.DecodeError as exc:
        result.rejections.append(Rejection("malformed", str(exc), raw))
        return result

    horizon = now + limits.max_future_seconds
    oldest = now - limits.max_past_seconds
    if isinstance(decoded, contract):
        candidates: list[tuple[int | None, Any, bytes]] = [(None, decoded, raw)]
    elif decoded is not None:
        if not decoded:
            result.rejections.append(Rejection("empty", "the array holds no records", raw))
            return result
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
                f"(limit {limits.max_past_seconds:.0f}s, inside the raw retention)"
            )
            result.rejections.append(Rejection("stale_timestamp", detail, element, index))
        else:
            result.events.append(event)
    return result


def _too_large(count: int, limits: IngestLimits, raw: bytes) -> Rejection:
    return Rejection("batch_too_large", f"{count} events > limit {limits.max_batch_events}", raw)


_TOO_DEEP = "nested deeper than the decoder's recursion limit"


def _split(
    codec: _Codec, payload: bytes, raw: bytes, limits: IngestLimits, result: Decoded
) -> list[tuple[int | None, Any, bytes]]:
    """Slow path: decode element by element so one bad event rejects only itself.

    Well-formedness is checked first (so bad bytes are ``malformed``, not ``schema``),
    then the element count is read from the bytes before any element is built.
    """
    try:
        codec.syntax.decode(payload)
    except RecursionError:
        result.rejections.append(Rejection("malformed", _TOO_DEEP, raw))
        return []
    except msgspec.DecodeError as exc:
        result.rejections.append(Rejection("malformed", str(exc), raw))
        return []
    limit = limits.max_batch_events
    # a JSON array with fewer commas than the limit has fewer elements: skip the count
    cheap = codec.length is json_array_length and payload.count(b",") < limit
    count = None if cheap else codec.length(payload)
    if count is not None and count > limit:
        result.rejections.append(_too_large(count, limits, raw))
        return []
    try:
        elements = codec.elements.decode(payload)
    except msgspec.ValidationError:  # not an array: a single record that failed validation
        result.rejections.append(_one(codec, payload, raw))
        return []
    if not elements:
        result.rejections.append(Rejection("empty", "the array holds no records", raw))
        return []
    if len(elements) > limit:
        result.rejections.append(_too_large(len(elements), limits, raw))
        return []
    good: list[tuple[int | None, Any, bytes]] = []
    for index, element in enumerate(elements):
        try:
            good.append((index, codec.one.decode(element), bytes(element)))
        except msgspec.DecodeError as exc:
            result.rejections.append(Rejection("schema", str(exc), bytes(element), index))
        except RecursionError:
            result.rejections.append(Rejection("malformed", _TOO_DEEP, bytes(element), index))
    return good


def _one(codec: _Codec, payload: bytes, raw: bytes) -> Rejection:
    """Why a well-formed single value is not a valid record."""
    try:
        codec.one.decode(payload)
    except msgspec.DecodeError as exc:
        return Rejection("schema", str(exc), raw)
    except RecursionError:
        return Rejection("malformed", _TOO_DEEP, raw)
    return Rejection("schema", "not a record of the contract", raw)
