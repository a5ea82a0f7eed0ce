"""Garbage-collector settings for a worker holding state for many series.

A worker at 10,000 series holds millions of long-lived objects (sketch buckets, windows
kept for corrections, monitors). CPython 3.11's default thresholds (700, 10, 10) run a
full collection every ~70,000 net allocations, and each one walks every live object: at
1,000 series that was about a third of the processing time (9.2 s of 29 s in
``benchmarks/cardinality.py``). The state holds no reference cycles worth collecting
often, so: objects alive at start-up (modules, settings) are frozen out of collection,
and the young generation is collected every 20,000 allocations, full collections a
thousand times less often than by default.

The sink also pauses the collector while it decodes and writes a batch
(:data:`COLLECTOR_PAUSED`): one policy for the process's GC, in one place.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["COLLECTOR_PAUSED", "CollectorPause", "tune_gc"]

THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Freeze what is alive now and raise the collection thresholds (idempotent)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


class CollectorPause:
    """Holds off Python's cycle collector while the sink decodes or writes a batch.

    Decoding allocates one GC-tracked Struct per event, alive until the batch is stored,
    and none of them can be in a reference cycle (strings, numbers, flat dicts). With the
    collector on, the allocations of a batch trigger collection after collection that walk
    those Structs again and again (young generations, then the whole heap): about a fifth
    of the sink process's CPU per event (RESULTS.md). While ``collect`` or ``insert`` runs
    the collector waits; it runs again between them (fetching, dead letters, commits), so
    the garbage of the rest of the process is still collected every batch. Re-entrant and
    shared by the loop and the insert thread; it never enables a collector it found off.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._was_enabled:
                gc.enable()


COLLECTOR_PAUSED = CollectorPause()
