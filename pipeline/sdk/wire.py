"""The wire format of ``inferwatch.events``: content types and encoding (msgspec only).

Producers (this SDK, the simulator, benchmarks) encode with ``encode_events``; the
worker's decoder (``pipeline.sources.codec``) reads the same content types. It lives
here, beside the SDK, because the SDK installs without the worker's dependencies.

>>> from schemas.event import InferenceEvent
>>> event = InferenceEvent(event_id="a", timestamp=1.0, model="m", latency_ms=5.0)
>>> encode_events([event])[:16]
b'[{"event_id":"a"'
>>> len(encode_events([event, event], MSGPACK)) < len(encode_events([event, event]))
True
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["JSON", "MSGPACK", "encode_events"]

JSON = "application/json"
MSGPACK = "application/msgpack"

_ENCODERS = {JSON: msgspec.json.Encoder(), MSGPACK: msgspec.msgpack.Encoder()}


def encode_events(events: Any, content_type: str = JSON) -> bytes:
    """Encode one record or a batch (a list), in the given content type."""
    return _ENCODERS[content_type].encode(events)
