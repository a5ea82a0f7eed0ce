"""How many elements an encoded array holds, found without building the elements.

A hostile 8 KB gzip can inflate to a JSON array of millions of zeros; decoding it to
a list only to say "too many" costs hundreds of MiB. These functions read the count
from the bytes: MessagePack states it in the array header; for JSON, the commas at
depth 1 outside strings are counted with numpy, a chunk at a time (bounded memory).
No I/O.
"""

from __future__ import annotations

import numpy as np

__all__ = ["json_array_length", "msgpack_array_length"]

_CHUNK = 1 << 18  # 256 KiB: a few MiB of numpy temporaries at a time
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_DEPTH = np.zeros(256, np.int32)
_DEPTH[[ord("["), ord("{")]] = 1
_DEPTH[[ord("]"), ord("}")]] = -1
_WHITESPACE = b" \t\r\n"


def msgpack_array_length(payload: bytes) -> int | None:
    """Element count from a MessagePack array header; None when it is not an array.

    >>> msgpack_array_length(bytes([0x93, 1, 2, 3])), msgpack_array_length(b"\\xdc\\x01\\x00")
    (3, 256)
    >>> msgpack_array_length(b"\\x81") is None
    True
    """
    if not payload:
        return None
    head = payload[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(payload) >= 3:
        return int.from_bytes(payload[1:3], "big")
    if head == 0xDD and len(payload) >= 5:
        return int.from_bytes(payload[1:5], "big")
    return None


def json_array_length(payload: bytes, chunk_bytes: int = _CHUNK) -> int | None:
    """Top-level element count of a *well-formed* JSON array; None when it is not one.

    Check well-formedness first (e.g. decode to ``msgspec.Raw``): backslashes are then
    inside strings only, which is what the escape handling assumes.

    >>> json_array_length(b' [1, "a,b", [2, 3], {"x": "\\\\"", "y": 4}] ')
    4
    >>> json_array_length(b"[ ]"), json_array_length(b'{"a": 1}')
    (0, None)
    """
    start = len(payload) - len(payload.lstrip(_WHITESPACE))
    if payload[start:start + 1] != b"[":
        return None
    if payload[start + 1:].lstrip(_WHITESPACE)[:1] == b"]":
        return 0
    depth, in_string, backslashes, commas = 0, 0, 0, 0
    for offset in range(0, len(payload), chunk_bytes):
        size = min(chunk_bytes, len(payload) - offset)
        chunk = np.frombuffer(payload, np.uint8, size, offset)
        positions = np.arange(len(chunk), dtype=np.int64)
        # position of the last non-backslash at or before i (-1: the run began earlier)
        last_plain = np.maximum.accumulate(np.where(chunk == _BACKSLASH, -1, positions))
        run_before = np.empty(len(chunk), np.int64)  # backslashes right before i
        run_before[0] = backslashes
        prev = last_plain[:-1]
        run_before[1:] = positions[:-1] - prev + np.where(prev < 0, backslashes, 0)
        quotes = (chunk == _QUOTE) & (run_before % 2 == 0)
        inside = (np.cumsum(quotes, dtype=np.int64) + in_string) % 2  # after char i
        outside = (inside == 0) & ~quotes
        levels = depth + np.cumsum(_DEPTH[chunk] * outside, dtype=np.int64)
        commas += int(np.count_nonzero((chunk == _COMMA) & outside & (levels == 1)))
        depth, in_string = int(levels[-1]), int(inside[-1])
        tail = int(last_plain[-1])
        backslashes = len(chunk) - 1 - tail + (backslashes if tail < 0 else 0)
    return commas + 1
