"""What stage 1 sends stage 2 on ``inferwatch.partials`` (internal, MessagePack).

``Partial``: one source partition's profile of one (series, window). ``seq`` 0 is the
on-time partial; 1, 2, … are corrections from events later than the lateness.
``(src_partition, seq)`` identifies a partial, so stage 2 merges each one once.
``Watermark``: a source partition's watermark, sent to every partials partition so
stage 2 knows when all sources have passed a window's end; ``empty`` marks a partition
that has had no event at all, which stage 2 then does not wait for.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Partial", "PartialsMessage", "Watermark", "decode_partials", "encode_partial"]


class Partial(msgspec.Struct, tag="partial", kw_only=True):
    kind: str = "events"  # "events" (WindowProfile) or "resources" (ResourceProfile)
    series_key: str
    labels: dict[str, str]
    window_start: float
    window_end: float
    src_partition: int
    seq: int
    profile: dict[str, Any]


class Watermark(msgspec.Struct, tag="watermark", kw_only=True):
    kind: str = "events"
    src_partition: int
    watermark: float
    # The source partition has had no event and nothing is unread: it holds no window
    # open (a producer keying every event alike leaves the other partitions empty).
    empty: bool = False


PartialsMessage = Partial | Watermark
_DECODER = msgspec.msgpack.Decoder(PartialsMessage)
_ENCODER = msgspec.msgpack.Encoder()


def encode_partial(message: PartialsMessage) -> bytes:
    return _ENCODER.encode(message)


def decode_partials(raw: bytes) -> PartialsMessage:
    return _DECODER.decode(raw)
