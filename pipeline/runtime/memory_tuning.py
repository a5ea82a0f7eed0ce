"""Garbage-collector settings for a worker holding state for many series.

A worker at 10,000 series holds millions of long-lived objects (sketch buckets, windows
kept for corrections, monitors). CPython 3.11's default thresholds (700, 10, 10) run a
full collection every ~70,000 net allocations, and each one walks every live object: at
1,000 series that was about a third of the processing time (9.2 s of 29 s in
``benchmarks/cardinality.py``). The state holds no reference cycles worth collecting
often, so: objects alive at start-up (modules, settings) are frozen out of collection,
and the young generation is collected every 20,000 allocations, full collections a
thousand times less often than by default.
"""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Freeze what is alive now and raise the collection thresholds (idempotent)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
