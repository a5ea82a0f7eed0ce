"""WindowSpec (window assignment) and PartitionClock (per-partition watermark)."""

from __future__ import annotations

import math

import pytest

from pipeline.config import MetricsSettings
from pipeline.windows.event_time import PartitionClock, WindowSpec


# --------------------------------------------------------------------------- WindowSpec
@pytest.mark.parametrize(("ts", "start"), [
    (0.0, 0.0),
    (0.5, 0.0),
    (9.999, 0.0),
    (10.0, 10.0),  # a boundary belongs to the window it starts
    (10.001, 10.0),
    (1234.5, 1230.0),
    (1_700_000_007.25, 1_700_000_000.0),
])
def test_tumbling_assigns_exactly_one_window(ts, start):
    spec = WindowSpec(size=10)
    assert spec.starts(ts) == [start]
    assert spec.end(start) == start + 10


def test_tumbling_windows_partition_the_time_axis():
    spec = WindowSpec(size=5)
    for i in range(200):
        ts = i * 0.25
        (start,) = spec.starts(ts)
        assert start <= ts < spec.end(start)
        assert start % 5 == 0


@pytest.mark.parametrize(("size", "hop", "ts", "starts"), [
    (10, 5, 1234.5, [1225.0, 1230.0]),
    (10, 5, 1230.0, [1225.0, 1230.0]),  # exactly at a window start
    (10, 5, 1235.0, [1230.0, 1235.0]),  # exactly at a start: the window ending here excluded
    (10, 2, 11.0, [2.0, 4.0, 6.0, 8.0, 10.0]),
    (10, 2, 10.0, [2.0, 4.0, 6.0, 8.0, 10.0]),
    (10, 4, 9.0, [0.0, 4.0, 8.0]),  # size not a multiple of hop
    (10, 4, 10.0, [4.0, 8.0]),
    (10, 4, 12.0, [4.0, 8.0, 12.0]),
    (10, 10, 15.0, [10.0]),  # hop == size is tumbling
    (10, 2.5, 7.5, [0.0, 2.5, 5.0, 7.5]),
])
def test_hopping_starts(size, hop, ts, starts):
    spec = WindowSpec(size=size, hop=hop)
    got = spec.starts(ts)
    assert got == starts
    assert got == sorted(got)
    for s in got:
        assert s <= ts < spec.end(s)


def test_hopping_every_covering_window_and_only_those():
    spec = WindowSpec(size=10, hop=2)
    for i in range(1, 400):
        ts = 100 + i * 0.1
        got = spec.starts(ts)
        expected = [s for s in (k * 2.0 for k in range(40, 120)) if s <= ts < s + 10]
        assert got == pytest.approx(expected)
        assert len(got) == 5  # size / hop windows contain every point


@pytest.mark.parametrize("hop", [0.0, -1.0, 10.5, 20.0])
def test_invalid_hop_raises(hop):
    with pytest.raises(ValueError, match="hop"):
        WindowSpec(size=10, hop=hop)


def test_from_settings():
    metrics = MetricsSettings(window_seconds=10, hop_seconds=5, lateness_seconds=2,
                              idle_timeout_seconds=7)
    assert WindowSpec.from_settings(metrics) == WindowSpec(10, 5, 2, 7)
    assert WindowSpec.from_settings(MetricsSettings(window_seconds=60)).hop is None


# --------------------------------------------------------------------------- PartitionClock
def test_no_watermark_before_any_event():
    clock = PartitionClock(lateness=2, idle_timeout=5)
    assert clock.event_watermark() == -math.inf
    assert clock.watermark(0.0) == -math.inf
    assert clock.watermark(1e9) == -math.inf  # idle advance needs a first event


def test_watermark_is_max_event_time_minus_lateness():
    clock = PartitionClock(lateness=2, idle_timeout=5)
    clock.observe(100.0, wall=1000.0)
    assert clock.watermark(1000.0) == 98.0
    clock.observe(105.5, wall=1000.0)
    assert clock.event_watermark() == 103.5
    assert clock.watermark(1000.0) == 103.5


def test_out_of_order_events_do_not_move_the_watermark_back():
    clock = PartitionClock(lateness=2, idle_timeout=5)
    clock.observe(100.0, wall=1000.0)
    clock.observe(110.0, wall=1000.0)
    for ts in (95.0, 101.0, 109.9, 50.0):
        clock.observe(ts, wall=1000.0)
        assert clock.event_watermark() == 108.0
    assert clock.watermark(1000.0) == 108.0


def test_zero_lateness():
    clock = PartitionClock(lateness=0, idle_timeout=5)
    clock.observe(42.0, wall=0.0)
    assert clock.watermark(0.0) == 42.0


def test_idle_advance_only_after_idle_timeout_then_grows_with_wall_time():
    clock = PartitionClock(lateness=2, idle_timeout=5)
    clock.observe(100.0, wall=1000.0)
    for wall in (1000.0, 1001.0, 1004.9, 1005.0):  # idle for <= timeout: no advance
        assert clock.watermark(wall) == 98.0
    assert clock.watermark(1006.0) == pytest.approx(99.0)
    assert clock.watermark(1010.0) == pytest.approx(103.0)
    assert clock.watermark(1100.0) == pytest.approx(193.0)
    # idleness does not change the event watermark (the replay-deterministic part)
    assert clock.event_watermark() == 98.0


def test_a_new_event_resets_the_idle_timer():
    clock = PartitionClock(lateness=2, idle_timeout=5)
    clock.observe(100.0, wall=1000.0)
    assert clock.watermark(1010.0) == pytest.approx(103.0)
    clock.observe(90.0, wall=1010.0)  # an old event still shows the partition is alive
    assert clock.watermark(1010.0) == 98.0
    assert clock.watermark(1015.0) == 98.0
    assert clock.watermark(1017.0) == pytest.approx(100.0)


def test_clock_builtins_round_trip():
    clock = PartitionClock(lateness=2, idle_timeout=5)
    clock.observe(100.0, wall=1000.0)
    copy = PartitionClock.from_builtins(clock.to_builtins(), 2, 5)
    assert copy == clock
    for wall in (1000.0, 1005.0, 1009.0):
        assert copy.watermark(wall) == clock.watermark(wall)
    empty = PartitionClock(2, 5)
    assert PartitionClock.from_builtins(empty.to_builtins(), 2, 5).watermark(1e9) == -math.inf
