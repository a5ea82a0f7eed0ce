"""pipeline.runtime.retry: the one backoff loop (no broker needed)."""

from __future__ import annotations

import asyncio

from pipeline.runtime.retry import Backoff, forever


def test_forever_runs_again_after_each_failure_until_it_returns(caplog) -> None:
    calls = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("broker away")

    asyncio.run(forever("reading", flaky, backoff=Backoff(first=0.001, cap=0.002)))
    assert len(calls) == 3
    assert [r.getMessage() for r in caplog.records].count(
        "reading failed (retry in 0s): broker away") == 2


def test_forever_stops_when_asked_even_while_failing() -> None:
    async def main() -> int:
        stop = asyncio.Event()
        calls = []

        async def broken() -> None:
            calls.append(1)
            if len(calls) == 2:
                stop.set()
            raise RuntimeError("still down")

        await asyncio.wait_for(forever("x", broken, backoff=Backoff(0.001, 0.001), stop=stop),
                               timeout=5)
        return len(calls)

    assert asyncio.run(main()) == 2
