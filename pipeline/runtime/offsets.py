"""Contiguous offsets per input partition: never absorb past a message that never came.

Our input topics (events, resources, partials) are plain, uncompacted topics: every
offset is a message. A stage that has absorbed a partition through offset ``n`` must
see ``n + 1`` next. During a rebalance faust can drop messages it already fetched (its
flow control clears the agents' queues) and later commit past a single missing offset,
so a message could be skipped for good. :class:`GapGuard` says how much of a batch
continues the partition, and where to seek back to when it does not; a gap that
persists over ``max_seeks`` seeks (a transactional producer's control records, say) is
accepted and counted rather than retried forever. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

__all__ = ["Admitted", "GapGuard"]


@dataclass(frozen=True, slots=True)
class Admitted:
    take: int  # how many leading messages of the batch to absorb
    seek: int | None  # offset to re-read the partition from, if any
    skipped: int  # offsets given up on (a persistent gap), 0 normally


@dataclass
class GapGuard:
    """Per-partition gap detection with bounded seek-back retries."""

    retry_seconds: float = 5.0
    max_seeks: int = 3
    # key -> (expected offset, seeks so far, time of the last seek)
    pending: dict[Hashable, tuple[int, int, float]] = field(default_factory=dict)
    skipped: int = 0

    def admit(self, key: Hashable, next_offset: int | None, offsets: Sequence[int],
              now: float) -> Admitted:
        """Split ascending ``offsets`` of one partition whose state covers everything
        before ``next_offset`` (None: no state yet, anything goes).

        Offsets below ``next_offset`` are replays (the stage skips them itself); the
        first offset beyond it ends what may be absorbed.

        >>> guard = GapGuard()
        >>> guard.admit("p0", 5, [3, 4, 5, 6], now=0.0)
        Admitted(take=4, seek=None, skipped=0)
        >>> guard.admit("p0", 7, [7, 9, 10], now=0.0)
        Admitted(take=1, seek=8, skipped=0)
        >>> guard.admit("p0", 8, [9, 10], now=0.5)  # queued before the seek: wait for it
        Admitted(take=0, seek=None, skipped=0)
        >>> guard.admit("p0", 8, [8, 9], now=0.6)
        Admitted(take=2, seek=None, skipped=0)
        """
        expected = next_offset
        take = 0
        skipped = 0
        for offset in offsets:
            if expected is None or offset < expected:
                take += 1
                expected = max(expected or 0, offset + 1)
                continue
            if offset == expected:
                if self.pending.get(key, (None,))[0] == expected:
                    del self.pending[key]
                take += 1
                expected += 1
                continue
            wanted, seeks, last = self.pending.get(key, (expected, 0, -float("inf")))
            if wanted != expected:
                seeks, last = 0, -float("inf")
            if seeks >= self.max_seeks:  # the gap is real: accept it, once
                del self.pending[key]
                skipped += offset - expected
                self.skipped += offset - expected
                take += 1
                expected = offset + 1
                continue
            if now - last >= self.retry_seconds:
                self.pending[key] = (expected, seeks + 1, now)
                return Admitted(take, expected, skipped)
            return Admitted(take, None, skipped)
        return Admitted(take, None, skipped)

    def forget(self, key: Hashable) -> None:
        """Drop the pending seek of a partition that left this worker."""
        self.pending.pop(key, None)
