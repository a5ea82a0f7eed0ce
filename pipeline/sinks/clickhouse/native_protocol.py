"""Native output for clients that ask for a TCP protocol revision over HTTP.

A ClickHouse server given ``client_protocol_version=N`` writes Native blocks the way its
TCP protocol does at revision N: each block starts with its ``BlockInfo``, and from
revision 54454 each column's type is followed by a "has custom serialization" byte.
chDB only writes revision 0 (neither). clickhouse-go, under Grafana's ClickHouse data
source, decodes at its revision, so :func:`reframe` inserts what revision 0 leaves out.

Column data is the same at every revision for dense columns (what revision 0 writes),
so nothing is re-encoded: the walk below only measures where each column's bytes end.
It knows the types the store's tables and usual queries produce (numbers, decimals,
dates, strings, UUID, IPs, enums, Nullable, Array, Map, Tuple, LowCardinality);
for others (Variant, Dynamic, JSON, aggregate states) :class:`UnsupportedType` says so.
"""

from __future__ import annotations

import re

__all__ = ["CUSTOM_SERIALIZATION", "UnsupportedType", "reframe"]

CUSTOM_SERIALIZATION = 54454  # DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION
# BlockInfo: field 1 is_overflows = false, field 2 bucket_num = -1, field 0 ends it.
_BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

_FIXED = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1, "Nothing": 1,
    "UInt16": 2, "Int16": 2, "Date": 2, "Enum16": 2, "BFloat16": 2,
    "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4,
    "Decimal32": 4, "Time": 4,
    "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Decimal64": 8, "Time64": 8,
    "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32,
}
_NAMED_ELEMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s+(\S.*)$", re.DOTALL)


class UnsupportedType(ValueError):
    """A column type the walk cannot measure."""


def _split(type_name: str) -> tuple[str, list[str]]:
    """``Map(String, Array(UInt8))`` → (``Map``, [``String``, ``Array(UInt8)``])."""
    name, paren, rest = type_name.strip().partition("(")
    if not paren:
        return name, []
    args, depth, quote, current = [], 0, "", []
    for ch in rest[:-1]:
        if quote:
            quote = "" if ch == quote and (not current or current[-1] != "\\") else quote
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    args.append("".join(current).strip())
    return name.strip(), args


def _element(arg: str) -> str:
    """A tuple element's type, without its name (``a UInt8`` → ``UInt8``)."""
    found = _NAMED_ELEMENT.match(arg)
    return found.group(1) if found else arg


class _Walk:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def leb128(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def uint64(self) -> int:
        value = int.from_bytes(self.data[self.pos:self.pos + 8], "little")
        self.pos += 8
        return value

    def skip(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise UnsupportedType("Native data ends inside a column")
        self.pos += size

    def prefix(self, type_name: str) -> None:
        """The per-column state written before any data (LowCardinality's key version)."""
        name, args = _split(type_name)
        if name == "LowCardinality":
            self.skip(8)
        elif name in ("Nullable", "Array", "SimpleAggregateFunction"):
            self.prefix(args[-1])
        elif name in ("Tuple", "Map", "Nested"):
            for arg in args:
                self.prefix(_element(arg))

    def column(self, type_name: str, rows: int) -> None:
        name, args = _split(type_name)
        if name in _FIXED:
            self.skip(_FIXED[name] * rows)
        elif name == "Decimal":
            precision = int(args[0])
            self.skip(rows * (4 if precision <= 9 else 8 if precision <= 18
                              else 16 if precision <= 38 else 32))
        elif name == "FixedString":
            self.skip(int(args[0]) * rows)
        elif name.startswith("Interval"):
            self.skip(8 * rows)
        elif name == "String":
            for _ in range(rows):
                self.skip(self.leb128())
        elif name == "Nullable":
            self.skip(rows)
            self.column(args[0], rows)
        elif name == "SimpleAggregateFunction":
            self.column(args[-1], rows)
        elif name in ("Array", "Map", "Nested"):
            self.skip(8 * (rows - 1))
            nested = self.uint64() if rows else 0
            if name == "Array":
                self.column(args[0], nested)
            else:
                for arg in args:
                    self.column(_element(arg), nested)
        elif name == "Tuple":
            for arg in args:
                self.column(_element(arg), rows)
        elif name == "LowCardinality":
            self._low_cardinality(args[0], rows)
        else:
            raise UnsupportedType(f"Native at a client protocol version: type {type_name}")

    def _low_cardinality(self, type_name: str, rows: int) -> None:
        inner_name, inner_args = _split(type_name)
        keys_type = inner_args[0] if inner_name == "Nullable" else type_name
        done = 0
        while done < rows:
            flags = self.uint64()
            self.column(keys_type, self.uint64())
            count = self.uint64()
            self.skip(count * (1, 2, 4, 8)[flags & 0xFF])
            done += count


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def reframe(data: bytes, revision: int) -> bytes:
    """Native blocks written at revision 0 (``data``) as revision ``revision`` writes them.

    >>> revision_0 = b"\\x01\\x01\\x05check\\x05UInt8\\x01"  # SELECT 1 AS check
    >>> reframe(revision_0, 54460).hex(" ")
    '01 00 02 ff ff ff ff 00 01 01 05 63 68 65 63 6b 05 55 49 6e 74 38 00 01'
    """
    if revision <= 0 or not data:
        return data
    walk, out = _Walk(data), bytearray()
    while walk.pos < len(data):
        columns, rows = walk.leb128(), walk.leb128()
        out += _BLOCK_INFO + _leb128(columns) + _leb128(rows)
        for _ in range(columns):
            start = walk.pos
            walk.skip(walk.leb128())  # name
            size = walk.leb128()
            type_name = data[walk.pos:walk.pos + size].decode()
            walk.skip(size)
            out += data[start:walk.pos]
            if revision >= CUSTOM_SERIALIZATION:
                out.append(0)  # dense: revision 0 never writes sparse columns
            data_start = walk.pos
            if rows:
                walk.prefix(type_name)
                walk.column(type_name, rows)
            out += data[data_start:walk.pos]
    return bytes(out)
