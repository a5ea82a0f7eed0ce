"""GapGuard: a stage never absorbs past an offset it did not see."""

from __future__ import annotations

from pipeline.runtime.offsets import Admitted, GapGuard


def test_contiguous_and_replayed_offsets_are_all_taken():
    guard = GapGuard()
    assert guard.admit("p", 10, [8, 9, 10, 11, 12], now=0.0) == Admitted(5, None, 0)
    assert guard.admit("p", None, [40, 41], now=0.0) == Admitted(2, None, 0)  # no state yet


def test_a_gap_stops_the_batch_and_asks_to_seek_back_once_per_retry_interval():
    guard = GapGuard(retry_seconds=5.0, max_seeks=3)
    assert guard.admit("p", 10, [10, 12, 13], now=0.0) == Admitted(1, 11, 0)
    # messages fetched before the seek keep coming: nothing taken, no new seek yet
    assert guard.admit("p", 11, [14, 15], now=1.0) == Admitted(0, None, 0)
    assert guard.admit("p", 11, [16], now=6.0) == Admitted(0, 11, 0)  # retry
    # the re-read arrives: the partition continues and the pending seek is cleared
    assert guard.admit("p", 11, [11, 12], now=7.0) == Admitted(2, None, 0)
    assert guard.pending == {}


def test_a_gap_that_survives_every_retry_is_accepted_and_counted():
    guard = GapGuard(retry_seconds=1.0, max_seeks=2)
    assert guard.admit("p", 5, [7], now=0.0).seek == 5
    assert guard.admit("p", 5, [7], now=1.0).seek == 5
    assert guard.admit("p", 5, [7, 8], now=2.0) == Admitted(2, None, 2)
    assert guard.skipped == 2 and guard.pending == {}


def test_partitions_are_independent_and_forget_drops_a_pending_seek():
    guard = GapGuard()
    assert guard.admit(("events", 0), 0, [2], now=0.0).seek == 0
    assert guard.admit(("events", 1), 0, [0, 1], now=0.0) == Admitted(2, None, 0)
    guard.forget(("events", 0))
    assert guard.pending == {}
