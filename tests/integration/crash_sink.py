"""A sink that dies (os._exit) after its first durable insert and before the offset commit.

Run as a subprocess by test_sink_crash: it reproduces the one crash window that
at-least-once delivery leaves open, so the test can show the replay is not stored twice.
"""

from __future__ import annotations

import asyncio
import os
import sys

from pipeline.config import load_settings
from pipeline.sinks.clickhouse.writer import ClickHouseSink


class CrashAfterInsert(ClickHouseSink):
    async def _commit(self, consumer, batch) -> None:  # type: ignore[override]
        print(f"inserted {len(batch.events)} events; crashing before commit", flush=True)
        os._exit(137)


async def main() -> None:
    settings = load_settings()
    sink = CrashAfterInsert(settings)
    await sink.run(asyncio.Event())
    sys.exit("unreachable: the sink should have crashed after its first insert")


if __name__ == "__main__":
    asyncio.run(main())
