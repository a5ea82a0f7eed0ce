"""Native blocks reframed for a client protocol revision (what clickhouse-go decodes).

chDB writes Native at revision 0; :func:`reframe` must add exactly the BlockInfo and the
per-column serialization byte a server writes at the client's revision, and leave every
column's bytes as they were, for every type the walk claims and across several blocks.
clickhouse-connect reads revision-54405 framing (BlockInfo, no serialization byte), so it
is the judge of the first part; the exact bytes of a small block judge the second.
"""

from __future__ import annotations

from typing import Any

import chdb
import pytest
from clickhouse_connect.driver.ctypes import RespBuffCls
from clickhouse_connect.driver.query import QueryContext
from clickhouse_connect.driver.transform import NativeTransform

from pipeline.sinks.clickhouse.native_protocol import UnsupportedType, reframe

BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"
EVERY_TYPE = (
    "SELECT number AS n, toInt8(number % 100) AS i8, toString(number) AS s, "
    "toNullable(number) AS nn, if(number % 2 = 0, NULL, 'q') AS ns, [number, 1] AS arr, "
    "[[number]] AS nested_arr, map('a', number) AS m, "
    "toLowCardinality(toString(number % 3)) AS lc, "
    "[toLowCardinality(toNullable(toString(number % 2)))] AS arr_lc, "
    "toDateTime('2026-01-01 00:00:00', 'UTC') + number AS t, "
    "toDateTime64('2026-01-01 00:00:00.123', 3, 'UTC') AS t64, toDate('2026-01-02') AS d, "
    "toDecimal64(number, 3) AS dec, toDecimal128(number, 5) AS dec128, "
    "tuple(number, 'x') AS tup, CAST(tuple(1, 'a'), 'Tuple(a UInt8, b String)') AS named, "
    "toUUID('00000000-0000-0000-0000-000000000001') AS u, toFixedString('ab', 2) AS fs, "
    "CAST('y, z', 'Enum8(\\'x\\' = 1, \\'y, z\\' = 2)') AS e, toIPv4('1.2.3.4') AS ip4, "
    "toIPv6('::1') AS ip6, toFloat32(number) / 3 AS f32, number % 2 = 0 AS b, "
    "toIntervalSecond(number) AS iv FROM numbers({rows})"
)


class _Whole:
    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def gen(self) -> Any:
        yield self.data

    def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def engine() -> Any:
    handle = chdb.connect(":memory:")
    yield handle
    handle.close()


def native(engine: Any, sql: str) -> bytes:
    return engine.query(sql, "Native").bytes()


def rows(data: bytes, block_info: bool) -> list[tuple]:
    context = QueryContext()
    context.block_info = block_info
    return NativeTransform.parse_response(RespBuffCls(_Whole(data)), context).result_rows


@pytest.mark.parametrize("count", [1, 3, 150_000])  # 150,000: several blocks
def test_every_type_keeps_its_bytes_across_blocks(engine: Any, count: int) -> None:
    raw = native(engine, EVERY_TYPE.format(rows=count))
    framed = reframe(raw, 54405)
    assert rows(framed, block_info=True) == rows(raw, block_info=False)
    blocks = (len(framed) - len(raw)) // len(BLOCK_INFO)
    assert blocks >= (2 if count > 65_536 else 1)
    columns = EVERY_TYPE.count(" AS ")
    assert len(reframe(raw, 54460)) == len(framed) + blocks * columns


def test_exact_bytes_at_a_custom_serialization_revision(engine: Any) -> None:
    raw = native(engine, "SELECT 1 AS check, 'ab' AS s")
    assert raw == b"\x02\x01\x05check\x05UInt8\x01\x01s\x06String\x02ab"
    assert reframe(raw, 54460) == (BLOCK_INFO + b"\x02\x01" + b"\x05check\x05UInt8\x00\x01"
                                   + b"\x01s\x06String\x00\x02ab")
    assert reframe(raw, 0) == raw
    assert reframe(b"", 54460) == b""


def test_a_type_it_cannot_measure_is_named(engine: Any) -> None:
    raw = native(engine, "SELECT uniqState(number) AS st FROM numbers(3)")
    with pytest.raises(UnsupportedType, match="AggregateFunction"):
        reframe(raw, 54460)
