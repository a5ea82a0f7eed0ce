"""Wilson bound and burn-rate maths on hand-built numbers and windows."""

from __future__ import annotations

import math

import msgspec
import pytest

from pipeline.alerting.conditions import BurnRateCondition, ErrorRateBoundCondition
from pipeline.alerting.history import CountHistory
from pipeline.alerting.maths import (
    BurnWindow,
    burn_rate,
    error_ratio,
    evaluate_burn,
    wilson_interval,
    wilson_lower_bound,
)


def reference_wilson(k: float, n: float, z: float) -> tuple[float, float]:
    """Independent derivation: the Wilson bounds are the roots p of
    (k/n - p)^2 = z^2 p (1 - p) / n, i.e. a p^2 + b p + c = 0 with
    a = 1 + z^2/n, b = -(2k/n + z^2/n), c = (k/n)^2."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


# --------------------------------------------------------------------------- Wilson
@pytest.mark.parametrize(("k", "n", "z"), [
    (1, 3, 1.96), (1, 3, 2.576), (20, 100, 1.96), (30, 200, 2.576), (60, 400, 2.576),
    (5, 1000, 1.645), (999, 1000, 1.96), (1, 1, 1.96), (3, 7, 3.0),
])
def test_wilson_matches_the_quadratic_roots(k, n, z):
    lo, hi = wilson_interval(k, n, z)
    ref_lo, ref_hi = reference_wilson(k, n, z)
    assert lo == pytest.approx(max(0.0, ref_lo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, ref_hi), abs=1e-12)
    assert lo <= k / n <= hi


def test_wilson_hand_computed_values():
    # 1 error in 3 requests, z = 1.96: (1/3 + 0.64027 - 0.83337) / 2.28053 = 0.0615
    assert wilson_lower_bound(1, 3, 1.96) == pytest.approx(0.0615, abs=5e-5)
    # with z = 2.576 the bound is 0.0404: under a 5 % threshold, so 1-in-3 does not fire
    assert wilson_lower_bound(1, 3, 2.576) == pytest.approx(0.0404, abs=5e-5)
    # closed forms at the edges: 0 errors → [0, z²/(n+z²)], all errors → [n/(n+z²), 1]
    assert wilson_interval(0, 10, 1.96) == pytest.approx((0.0, 3.8416 / 13.8416))
    assert wilson_interval(10, 10, 1.96) == pytest.approx((10 / 13.8416, 1.0))
    # the textbook 20/100 at 95 %: [0.1334, 0.2888]
    lo, hi = wilson_interval(20, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.1334, 0.2888)


def test_wilson_lower_bound_grows_with_evidence_at_the_same_rate():
    bounds = [wilson_lower_bound(n // 10, n) for n in (10, 100, 1000, 10000)]
    assert bounds == sorted(bounds)
    assert bounds[-1] == pytest.approx(0.1, abs=0.01)
    assert all(b < 0.1 for b in bounds)


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no traffic: nothing known
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(5, 10, z=0) == 0.5  # z = 0: the plain ratio
    for bad in [(-1, 10), (11, 10), (1, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)


# --------------------------------------------------------------------------- burn rate
def test_burn_rate_hand_computed():
    assert burn_rate(5, 100, 0.99) == 5.0  # 5 % errors on a 1 % budget
    assert burn_rate(144, 10000, 0.99) == pytest.approx(1.44)
    assert burn_rate(1, 1000, 0.999) == 1.0  # exactly on budget
    assert burn_rate(0, 0, 0.99) is None  # no traffic, no burn
    assert error_ratio(1, 4) == 0.25 and error_ratio(0, 0) is None
    for objective in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            burn_rate(1, 10, objective)


PAGE = [BurnWindow(3600, 300, 14.4), BurnWindow(21600, 1800, 6.0)]


def test_multiwindow_both_windows_must_burn():
    # long window burns 16x, short only 10x: the first pair does not fire
    counts = {3600: (160, 1000), 300: (10, 100), 21600: (200, 6000), 1800: (30, 600)}
    v = evaluate_burn(PAGE, 0.99, counts)
    assert v.holds is False
    assert (v.window, v.long_rate, v.short_rate) == (PAGE[0], 16.0, 10.0)


def test_multiwindow_picks_the_highest_firing_factor():
    counts = {3600: (200, 1000), 300: (20, 100), 21600: (700, 6000), 1800: (90, 600)}
    v = evaluate_burn(PAGE, 0.99, counts)
    assert v.holds is True and v.window.factor == 14.4
    assert v.value == 20.0  # min(long 20, short 20)
    counts[300] = (10, 100)  # short window of the fast pair calms down: the slow pair fires
    v = evaluate_burn(PAGE, 0.99, counts)
    assert v.holds is True and v.window.factor == 6.0
    assert (v.long_rate, v.short_rate, v.value) == pytest.approx((700 / 6000 / 0.01, 15.0,
                                                                  700 / 6000 / 0.01))


def test_multiwindow_is_strictly_greater_and_needs_traffic():
    exact = {3600: (144, 1000), 300: (144, 1000), 21600: (0, 1), 1800: (0, 1)}
    assert evaluate_burn(PAGE, 0.99, exact).holds is False  # 14.4 is not > 14.4
    assert evaluate_burn(PAGE, 0.99, {}).holds is None  # no traffic anywhere: unknown
    few = {3600: (50, 100), 300: (50, 100)}
    assert evaluate_burn(PAGE[:1], 0.99, few).holds is True
    assert evaluate_burn(PAGE[:1], 0.99, few, min_total=500).holds is False
    with pytest.raises(ValueError):
        evaluate_burn([], 0.99, {})


# --------------------------------------------------------------------------- history
def test_history_sums_windows_in_the_lookback():
    h = CountHistory((300.0, 3600.0))
    for i in range(60):  # 1-minute windows, i errors in window i
        h.add(60.0 * i, 60.0 * (i + 1), bad=float(i), total=100.0)
    assert h.sum(3600.0, 300.0) == (55 + 56 + 57 + 58 + 59, 500.0)
    assert h.sum(3600.0, 3600.0) == (sum(range(60)), 6000.0)
    assert h.sum(1800.0, 300.0) == (25 + 26 + 27 + 28 + 29, 500.0)  # from buckets


def test_history_corrections_replace_and_memory_is_bounded():
    h = CountHistory((300.0, 3600.0))
    h.add(0.0, 60.0, 1.0, 10.0)
    h.add(0.0, 60.0, 2.0, 10.0)  # corrected window: replaces, not adds
    assert h.sum(60.0, 300.0) == (2.0, 10.0)
    for i in range(1, 10000):
        h.add(60.0 * i, 60.0 * (i + 1), 1.0, 10.0)
    assert len(h) <= 5 + 3600 / h.resolution + 2
    h.add(0.0, 60.0, 99.0, 99.0)  # far too old to correct: counted, ignored
    assert h.ignored == 1
    assert h.sum(600000.0, 3600.0) == (60.0, 600.0)


def test_history_checkpoint_round_trip():
    h = CountHistory((300.0, 3600.0))
    for i in range(30):
        h.add(60.0 * i, 60.0 * (i + 1), float(i % 3), 50.0)
    data = msgspec.json.decode(msgspec.json.encode(h.to_builtins()))
    back = CountHistory((300.0, 3600.0))
    back.restore(data)
    for lookback in (300.0, 1200.0, 3600.0):
        assert back.sum(1800.0, lookback) == h.sum(1800.0, lookback)


# --------------------------------------------------------------------------- conditions
def test_latency_burn_rate_on_hand_built_windows():
    cond = BurnRateCondition(0.99, [BurnWindow(3600, 300, 14.4)], sli="latency")
    h = cond.new_history()
    out = None
    for i in range(12):  # 5-minute windows, 20 % of requests slower than the SLO
        env = {"requests": 1000, "slo_compliance": 0.8}
        out = cond.evaluate(env, 300.0 * i, 300.0 * (i + 1), h)
    assert out.holds is True
    assert out.value == pytest.approx(20.0)
    assert out.details["long_burn_rate"] == pytest.approx(20.0)
    # a window without slo_compliance but with traffic is unknown: not counted
    cond.evaluate({"requests": 1000}, 3600.0, 3900.0, h)
    assert h.sum(3900.0, 300.0) == (0.0, 0.0)
    # a window without traffic counts as zero
    assert cond.counts({"requests": 0}) == (0.0, 0.0)


def test_error_rate_bound_over_a_lookback():
    cond = ErrorRateBoundCondition(0.05, z=2.576, over=300)
    h = cond.new_history()
    outs = [cond.evaluate({"errors": 30, "requests": 200}, 60.0 * i, 60.0 * (i + 1), h)
            for i in range(2)]
    assert [o.holds for o in outs] == [True, True]
    assert outs[1].details["errors"] == 60 and outs[1].details["total"] == 400
    assert outs[1].value == pytest.approx(reference_wilson(60, 400, 2.576)[0])
    # min_requests: too little evidence never fires
    few = ErrorRateBoundCondition(0.05, min_requests=100)
    assert few.evaluate({"errors": 50, "requests": 50}, 0.0, 60.0).holds is False
    # no traffic: the bound is 0 and it does not hold
    assert ErrorRateBoundCondition(0.0).evaluate({"errors": 0, "requests": 0}, 0, 1).holds \
        is False
