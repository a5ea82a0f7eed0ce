"""Find the rows a store refuses by splitting a failed insert (no I/O: the insert is handed in).

A store refuses a whole insert when one of its rows does not fit (a value outside a
column's range, say). Retrying the same insert fails forever, and dropping it loses
the good rows with the bad. :func:`isolate` bisects instead: it inserts the rows, and
when the store refuses them it inserts each half on its own, down to single rows. The
rows that still fail alone are returned with the store's error; every other row is
written. One bad row among ``n`` costs about ``2·log2(n)`` inserts.

Only refusals are split. Whether an error is a refusal (about the data) or transient
(store down, connection lost, too busy) is the caller's call, ``refused_by(exc)``; a
transient error propagates at once, so the caller retries the whole insert later. A
half already written may then be written again: callers keep that safe with
deterministic dedup keys (ReplacingMergeTree here), as for any at-least-once insert.

>>> stored = []
>>> def insert(rows):
...     if any(r < 0 for r in rows):
...         raise ValueError(f"negative value in {len(rows)} rows")
...     stored.extend(rows)
>>> [(r.row, r.error) for r in isolate([1, 2, -3, 4], insert, lambda e: isinstance(e, ValueError))]
[(-3, 'ValueError: negative value in 1 rows')]
>>> sorted(stored)
[1, 2, 4]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pipeline.sources.codec import describe

__all__ = ["Refused", "isolate"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refused(Generic[T]):
    """One row the store refused on its own, and the store's error for it."""

    row: T
    error: str


def isolate(
    rows: Sequence[T],
    insert: Callable[[Sequence[T]], None],
    refused_by: Callable[[BaseException], bool],
) -> list[Refused[T]]:
    """Insert ``rows``; return the ones the store refuses alone, in their original order.

    ``insert`` writes a run of rows and raises if the store refuses them;
    ``refused_by(exc)`` says whether ``exc`` is about the data. Any other exception
    propagates unchanged (nothing is returned for a transient failure).
    """
    refused: list[Refused[T]] = []
    pending: list[Sequence[T]] = [rows] if rows else []
    while pending:
        part = pending.pop()
        try:
            insert(part)
        except Exception as exc:
            if not refused_by(exc):
                raise
            if len(part) == 1:
                refused.append(Refused(part[0], describe(exc)))
                continue
            middle = len(part) // 2
            pending.append(part[middle:])  # the left half is popped first: order is kept
            pending.append(part[:middle])
    return refused
