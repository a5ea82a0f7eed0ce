"""Bad/total counts of a series over past windows, for rules that look back (burn rates,
error rates over ``over``). Bounded memory, checkpointable.

Recent windows are kept exactly, keyed by window start, so a corrected window (a higher
``version`` of the same window) replaces its counts instead of adding to them. Windows
older than ``exact_for`` seconds before the newest one are folded into buckets of
``resolution`` seconds (by window end); a correction of a folded window is ignored and
counted in ``ignored``. A lookback ``L`` at time ``t`` sums the windows and buckets whose
end is in ``(t - L, t]``; a bucket counts with its end, so a lookback may take in up to
``resolution`` seconds of older data. Data older than the longest lookback is dropped.

>>> h = CountHistory(lookbacks=(300.0, 3600.0))
>>> for i in range(12):
...     h.add(i * 60.0, (i + 1) * 60.0, bad=1.0, total=100.0)
>>> h.sum(720.0, 300.0), h.sum(720.0, 3600.0)
((5.0, 500.0), (12.0, 1200.0))
>>> h.add(660.0, 720.0, bad=3.0, total=100.0)  # a correction of the last window
>>> h.sum(720.0, 300.0)
(7.0, 500.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["HISTORY_FORMAT", "CountHistory"]

HISTORY_FORMAT = 1


class CountHistory:
    """Exact recent windows plus coarse buckets; see the module doc."""

    __slots__ = ("_buckets", "_exact", "exact_for", "horizon", "ignored", "newest",
                 "resolution")

    def __init__(self, lookbacks: Sequence[float], *, resolution: float | None = None,
                 exact_for: float | None = None) -> None:
        if not lookbacks or min(lookbacks) <= 0:
            raise ValueError("lookbacks must be positive seconds")
        self.horizon = max(lookbacks)
        # at most ~360 buckets, and buckets no coarser than a tenth of the shortest lookback
        self.resolution = resolution or max(min(lookbacks) / 10.0, self.horizon / 360.0)
        self.exact_for = exact_for if exact_for is not None else min(lookbacks)
        self.newest = -math.inf
        self.ignored = 0
        self._exact: dict[float, tuple[float, float, float]] = {}  # start -> (end, bad, total)
        self._buckets: dict[int, list[float]] = {}  # index -> [bad, total]; end = idx * res

    def __len__(self) -> int:
        return len(self._exact) + len(self._buckets)

    def add(self, window_start: float, window_end: float, bad: float, total: float) -> None:
        """Record (or correct) the counts of one window."""
        if window_start in self._exact or window_end > self.newest - self.exact_for:
            self._exact[window_start] = (window_end, bad, total)
        else:
            self.ignored += 1  # already folded into a bucket: cannot be corrected
            return
        if window_end > self.newest:
            self.newest = window_end
            self._compact()

    def _compact(self) -> None:
        fold_before = self.newest - self.exact_for
        for start in [s for s, (end, _, _) in self._exact.items() if end <= fold_before]:
            end, bad, total = self._exact.pop(start)
            bucket = self._buckets.setdefault(math.ceil(end / self.resolution), [0.0, 0.0])
            bucket[0] += bad
            bucket[1] += total
        drop_before = self.newest - self.horizon - self.resolution
        for idx in [i for i in self._buckets if i * self.resolution <= drop_before]:
            del self._buckets[idx]

    def sum(self, now: float, lookback: float) -> tuple[float, float]:
        """(bad, total) of the windows ending in ``(now - lookback, now]``."""
        after = now - lookback
        bad = total = 0.0
        for end, b, t in self._exact.values():
            if after < end <= now:
                bad += b
                total += t
        for idx, (b, t) in self._buckets.items():
            # bucket idx holds window ends in ((idx-1)·res, idx·res]: count it when it overlaps
            if after < idx * self.resolution and (idx - 1) * self.resolution < now:
                bad += b
                total += t
        return bad, total

    def to_builtins(self) -> dict[str, Any]:
        """Checkpoint form (msgpack/JSON safe)."""
        return {
            "format": HISTORY_FORMAT,
            "newest": None if self.newest == -math.inf else self.newest,
            "ignored": self.ignored,
            "exact": [[s, e, b, t] for s, (e, b, t) in sorted(self._exact.items())],
            "buckets": [[i, b, t] for i, (b, t) in sorted(self._buckets.items())],
            "resolution": self.resolution,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a checkpoint made by :meth:`to_builtins` (same lookbacks expected).

        Buckets of another resolution (the rule changed) are dropped; exact windows kept.
        """
        if data.get("format") != HISTORY_FORMAT:
            raise ValueError(f"unknown history format {data.get('format')!r}")
        newest = data.get("newest")
        self.newest = -math.inf if newest is None else float(newest)
        self.ignored = int(data.get("ignored", 0))
        self._exact = {float(s): (float(e), float(b), float(t)) for s, e, b, t in data["exact"]}
        self._buckets = {}
        if math.isclose(float(data.get("resolution", 0.0)), self.resolution):
            self._buckets = {int(i): [float(b), float(t)] for i, b, t in data["buckets"]}
        if self.newest != -math.inf:
            self._compact()
