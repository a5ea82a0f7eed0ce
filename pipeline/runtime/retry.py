"""Retry with capped exponential backoff: one helper for every loop that must not stop.

A reader of a compacted topic, a sender that waits out an outage: each used to carry
its own ``delay = min(delay * 2, cap)`` loop. :class:`Backoff` is that arithmetic;
:func:`forever` runs a coroutine again after each failure, one log line per failure
(the repeat filter in :mod:`pipeline.logs` folds a long outage into a few lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Backoff", "forever"]

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Delays ``first, 2·first, 4·first, …`` capped at ``cap``; :meth:`reset` after a success.

    >>> b = Backoff(first=0.5, cap=2.0)
    >>> [b.next() for _ in range(5)]
    [0.5, 1.0, 2.0, 2.0, 2.0]
    >>> b.reset(); b.next()
    0.5
    """

    first: float = 0.5
    cap: float = 30.0
    _current: float = 0.0

    def next(self) -> float:
        self._current = self.first if not self._current else min(self._current * 2, self.cap)
        return self._current

    def reset(self) -> None:
        self._current = 0.0


async def forever(what: str, run: Callable[[], Awaitable[object]], *,
                  backoff: Backoff | None = None, stop: asyncio.Event | None = None) -> None:
    """Await ``run()``; whenever it raises, log why and run it again after a backoff.

    Returns when ``run()`` returns or ``stop`` is set. Cancellation passes through.
    """
    backoff = backoff or Backoff(first=1.0)
    while stop is None or not stop.is_set():
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broker hiccup must not end the loop
            delay = backoff.next()
            log.error("%s failed (retry in %.0fs): %s", what, delay, exc)
        if stop is None:
            await asyncio.sleep(delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
