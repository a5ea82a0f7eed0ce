"""Hostile payloads at the decode boundary: each gets a precise reason, none raises.

The mechanism under test is general (any exception becomes a rejection; structure is
read before anything large is built); the cases are the classes of input found from
outside: deep nesting, wrong encodings, compression tricks, empty and huge arrays.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import tracemalloc
import zlib

import msgspec
import pytest

from pipeline.config import IngestLimits
from pipeline.sources.codec import decode_events
from pipeline.sources.dlq import DEFAULT_MAX_BYTES, TRUNCATED, dead_letter, deliver, shrink
from pipeline.sources.shape import json_array_length, msgpack_array_length
from schemas.event import ResourceSample

NOW = 1_700_000_000.0
LIMITS = IngestLimits()
JSON_H = {"content-type": b"application/json"}
MSGPACK_H = {"content-type": b"application/msgpack"}
GZIP_JSON_H = {**JSON_H, "content-encoding": b"gzip"}
GOOD = {"event_id": "e", "timestamp": NOW, "model": "m", "latency_ms": 5.0}


def reasons(value: bytes, headers=JSON_H, limits=LIMITS, contract=None) -> list[str]:
    kwargs = {"contract": contract} if contract is not None else {}
    out = decode_events(value, headers, limits, NOW, **kwargs)
    return [r.reason for r in out.rejections] + ["ok"] * len(out.events)


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_msgpack(depth: int) -> bytes:
    return b"\x91" * depth + b"\x90"  # arrays of one element, the innermost empty


@pytest.mark.parametrize("value,headers", [
    (deep_json(1000), JSON_H),
    (deep_json(100_000), JSON_H),
    (deep_msgpack(1000), MSGPACK_H),
    (deep_msgpack(100_000), MSGPACK_H),
    (msgspec.json.encode({**GOOD, "x": 1}).replace(b'"x":1', b'"x":' + deep_json(5000)),
     JSON_H),
    (b"[" + msgspec.json.encode(GOOD) + b"," + deep_json(3000) + b"]", JSON_H),
    (b'{"event_id":' + b"[" * 5000, JSON_H),
])
def test_deep_nesting_is_malformed_not_a_crash(value, headers):
    got = reasons(value, headers)
    assert "malformed" in got, got
    assert "internal" not in got


def test_a_batch_nested_too_deep_goes_whole_to_the_dlq():
    """Too deep to read is too deep to split: the whole message is the dead letter."""
    value = b"[" + msgspec.json.encode(GOOD) + b"," + deep_json(3000) + b"]"
    out = decode_events(value, JSON_H, LIMITS, NOW)
    assert out.events == []
    assert [(r.reason, r.index, r.raw) for r in out.rejections] == [("malformed", None, value)]


@pytest.mark.parametrize("value", [
    os.urandom(64), b"\xc1", b'{"event_id": "a"}', b"[1, 2, 3]", b"\x93\x01",
    msgspec.json.encode(GOOD),
])
def test_bytes_that_are_not_msgpack_are_malformed(value):
    assert reasons(value, MSGPACK_H) == ["malformed"]


def test_random_bytes_never_raise_and_never_pass():
    rng = random.Random(7)
    for _ in range(500):
        value = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        for headers in (JSON_H, MSGPACK_H, GZIP_JSON_H):
            got = reasons(value, headers)
            assert got and "ok" not in got and "internal" not in got, (value, got)


def test_multi_member_gzip_is_inflated_whole():
    one = msgspec.json.encode([GOOD])
    two = msgspec.json.encode([{**GOOD, "event_id": "f"}])
    # two members concatenated are one valid gzip stream holding "[...][...]": malformed
    # JSON, but inflated whole (not cut at the first member)
    assert reasons(gzip.compress(one) + gzip.compress(two), GZIP_JSON_H) == ["malformed"]
    half = len(one) // 2
    joined = gzip.compress(one[:half]) + gzip.compress(one[half:])
    assert reasons(joined, GZIP_JSON_H) == ["ok"]


def test_gzip_with_trailing_garbage_is_a_decompression_failure():
    value = gzip.compress(msgspec.json.encode(GOOD)) + b"garbage!"
    assert reasons(value, GZIP_JSON_H) == ["decompression_failed"]


@pytest.mark.parametrize("value,headers", [
    (b"[]", JSON_H), (b"  [ ]  ", JSON_H), (b"\x90", MSGPACK_H),
    (gzip.compress(b"[]"), GZIP_JSON_H),
])
def test_empty_array_is_recorded_as_empty(value, headers):
    assert reasons(value, headers) == ["empty"]


def test_compression_bomb_of_tiny_elements_counted_before_it_is_built():
    """An 8 KiB gzip that inflates to millions of zeros: batch_too_large, without the
    hundreds of MiB a list of that many elements would take."""
    payload = b"[" + b"0," * ((4 << 20) - 2) + b"0]"  # just under the 8 MiB inflate limit
    bomb = gzip.compress(payload, 9)
    assert len(bomb) < 64 << 10
    tracemalloc.start()
    try:
        got = decode_events(bomb, GZIP_JSON_H, LIMITS, NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.reason for r in got.rejections] == ["batch_too_large"]
    assert peak < 40 << 20, f"peak {peak >> 20} MiB"


def test_msgpack_bomb_counted_from_its_header():
    payload = b"\xdd" + (5_000_000).to_bytes(4, "big") + b"\x00" * 5_000_000
    tracemalloc.start()
    try:
        got = reasons(payload, MSGPACK_H, IngestLimits(max_message_bytes=8 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == ["batch_too_large"]
    assert peak < 32 << 20


@pytest.mark.parametrize("field,value", [
    ("latency_ms", 10**400), ("latency_ms", -(10**30)), ("input_tokens", 2**64),
    ("input_tokens", -1), ("timestamp", 1e308), ("schema_version", 2**70),
    ("features", {"k": 1e300}), ("event_id", "x" * 10_000), ("http_status", 2**63),
])
def test_huge_numbers_and_strings_are_schema_rejections(field, value):
    value_bytes = msgspec.json.encode({**GOOD, field: 0}).replace(
        f'"{field}":0'.encode(), f'"{field}":'.encode() + msgspec.json.encode(value)
        if not isinstance(value, int) else f'"{field}":{value}'.encode())
    assert reasons(value_bytes) == ["schema"]


def test_invalid_utf8_is_malformed():
    value = msgspec.json.encode(GOOD).replace(b'"m"', b'"\xff\xfe"')
    assert reasons(value) == ["malformed"]
    packed = msgspec.msgpack.encode(GOOD).replace(b"\xa1m", b"\xa2\xff\xfe")
    assert reasons(packed, MSGPACK_H) == ["malformed"]


def test_mixed_batch_keeps_the_good_and_names_each_bad():
    elements = [GOOD, {"x": 1}, 5, {**GOOD, "latency_ms": -1}, {**GOOD, "event_id": "g"}]
    for headers, codec in ((JSON_H, msgspec.json), (MSGPACK_H, msgspec.msgpack)):
        out = decode_events(codec.encode(elements), headers, LIMITS, NOW)
        assert [e.event_id for e in out.events] == ["e", "g"]
        assert [(r.reason, r.index) for r in out.rejections] == [
            ("schema", 1), ("schema", 2), ("schema", 3)]


def test_a_failure_nothing_foresaw_is_an_internal_rejection(monkeypatch):
    import pipeline.sources.codec as codec

    def broken(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(codec, "_decode", broken)
    out = decode_events(b"{}", JSON_H, LIMITS, NOW)
    assert [(r.reason, r.detail) for r in out.rejections] == [
        ("internal", "MemoryError: simulated")]


def test_resource_contract_gets_the_same_boundary():
    assert reasons(deep_json(3000), contract=ResourceSample) == ["malformed"]
    assert reasons(b"[]", contract=ResourceSample) == ["empty"]


# --------------------------------------------------------------------- shapes
def test_json_array_length_matches_a_real_decode():
    rng = random.Random(3)
    atoms = [1, -2.5, None, True, "a,b", 'q"\\', "\\\\", "[{", '\\"],']

    def value(depth=0):
        roll = rng.random()
        if depth > 3 or roll < 0.3:
            return rng.choice(atoms)
        if roll < 0.6:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f'{i}",\\': value(depth + 1) for i in range(rng.randrange(3))}

    for _ in range(500):
        items = [value() for _ in range(rng.randrange(8))]
        raw = msgspec.json.encode(items)
        for chunk in (1, 2, 3, 7, 1 << 20):  # carries across chunk edges
            assert json_array_length(raw, chunk) == len(items), raw


def test_msgpack_array_length_reads_every_header_form():
    for n in (0, 3, 15, 16, 300, 70_000):
        assert msgpack_array_length(msgspec.msgpack.encode(list(range(n)))) == n
    assert msgpack_array_length(msgspec.msgpack.encode({"a": 1})) is None


# --------------------------------------------------------------------- dead letters
def test_a_dead_letter_over_the_limit_becomes_a_bounded_reference():
    from pipeline.sources.codec import Rejection

    big = os.urandom(3 << 20)
    letter = dead_letter(Rejection("oversize", "3 MB", big), key=b"k",
                         headers=[("content-encoding", b"gzip"), ("x", b"y" * 10)],
                         topic="t", partition=2, offset=9)
    assert letter.size() <= DEFAULT_MAX_BYTES
    body = msgspec.json.decode(letter.value)
    assert body["size"] == len(big) and body["source"]["offset"] == 9
    assert len(body["sha256"]) == 64
    headers = dict(letter.headers)
    assert headers[TRUNCATED] == str(len(big)).encode()
    assert headers["inferwatch-error-reason"] == b"oversize"
    assert headers["content-type"] == b"application/json" and "content-encoding" not in headers
    small = dead_letter(Rejection("schema", "bad", b"{}"), key=None, headers={},
                        topic="t", partition=0, offset=1)
    assert small.value == b"{}" and TRUNCATED not in dict(small.headers)


class _Refused(Exception):
    retriable = False


class MessageSizeTooLargeError(_Refused):
    pass


class _Down(Exception):
    retriable = True


def test_deliver_retries_only_what_failed_and_shrinks_what_the_broker_refuses():
    from pipeline.sources.codec import Rejection

    letters = [dead_letter(Rejection("schema", str(i), b"x" * 100 * (i + 1)), key=None,
                           headers={}, topic="t", partition=0, offset=i) for i in range(4)]
    sent: list[bytes] = []
    calls = {"down": 0}

    async def send(letter):
        if letter.value == letters[1].value:
            raise MessageSizeTooLargeError("too large")
        if letter.value == letters[2].value and calls["down"] < 2:
            calls["down"] += 1
            raise _Down("broker away")
        sent.append(letter.value)

    replaced = asyncio.run(deliver(letters, send, max_delay=0.01))
    assert replaced == 1
    assert sent.count(letters[0].value) == 1 and sent.count(letters[3].value) == 1
    assert sent.count(letters[2].value) == 1  # retried until it went, once
    assert letters[1].value not in sent
    assert any(msgspec.json.decode(v).get("truncated") for v in sent if v.startswith(b"{"))


def test_deliver_gives_up_on_a_reference_the_broker_also_refuses():
    from pipeline.sources.codec import Rejection

    letter = dead_letter(Rejection("schema", "x", b"x"), key=None, headers={},
                         topic="t", partition=0, offset=0)
    attempts = []

    async def send(d):
        attempts.append(d)
        raise MessageSizeTooLargeError("tiny broker limit")

    assert asyncio.run(deliver([letter], send)) == 1
    assert len(attempts) == 2  # the letter, then its reference: no loop
    assert shrink(letter).value.startswith(b"{")


def test_zlib_stream_still_accepted():
    assert reasons(zlib.compress(msgspec.json.encode(GOOD)), GZIP_JSON_H) == ["ok"]
