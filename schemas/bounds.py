"""Bounds the contracts share with the ClickHouse columns that store them.

Every bound here equals, or lies inside, the range of its column type, so a value that
decodes is a value the store can hold (``tests/unit/test_bounds.py`` derives one from the
other for every field of every contract and table). Tighten a bound here rather than
widen a column; widening a column takes a migration.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = [
    "EPOCH_SECONDS_MAX", "INT64_MAX", "UINT16_MAX", "UINT32_MAX",
    "Count", "EpochSeconds", "SchemaVersion", "Version",
]

UINT16_MAX = (1 << 16) - 1
UINT32_MAX = (1 << 32) - 1
INT64_MAX = (1 << 63) - 1  # msgspec's largest integer bound; inside UInt64
# Times are stored as DateTime64(3) (1900 … 2299) but every table's TTL reads them as
# toDateTime(...) + INTERVAL n DAY, a UInt32 of seconds that wraps after 2106-02-07: a later
# time would look ancient to the TTL and be deleted. The contract ends at 2100-01-01 UTC,
# which leaves six years for the retention interval.
EPOCH_SECONDS_MAX = 4_102_444_800.0
EpochSeconds = Annotated[float, msgspec.Meta(ge=0.0, le=EPOCH_SECONDS_MAX)]
SchemaVersion = Annotated[int, msgspec.Meta(ge=1, le=UINT16_MAX)]  # UInt16 column
Version = Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)]  # UInt32 column
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]  # UInt64 column
