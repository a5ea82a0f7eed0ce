"""Recommended thresholds: one per registered statistic and scorer, scaled with the counts of
the window and its reference, floored, in each statistic's direction; and the scaling keeps
the no-drift alarm rate flat across window sizes where a fixed threshold does not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.scoring.anomaly import SCORERS
from pipeline.scoring.drift import STATISTICS, KolmogorovSmirnov, NumericHistogram
from pipeline.scoring.drift.registry import BY_NAME
from pipeline.scoring.drift.thresholds import (
    ANOMALY_EXCLUDED_METRICS,
    ANOMALY_MIN_REQUESTS,
    ANOMALY_MIN_SCALE,
    ANOMALY_THRESHOLD,
    ANOMALY_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    THRESHOLD_COUNT,
    effective_count,
    is_drift,
    threshold,
)
from pipeline.scoring.monitor import SHORT_NAMES
from schemas.metrics import WindowMetrics

NAMES = [s.name for s in STATISTICS]
SCALED = [s.name for s in STATISTICS if s.count_exponent > 0]
HUGE = 10**12  # a reference so large that n_eff is the window's count


def test_every_registered_statistic_and_scorer_has_a_threshold():
    assert set(DEFAULT_THRESHOLDS) == set(NAMES) == set(BY_NAME)
    for s in STATISTICS:
        low, high = s.bounds
        assert DEFAULT_THRESHOLDS[s.name] == s.threshold
        assert low < s.threshold < high
        assert 0.0 <= s.floor < s.threshold and s.count_exponent >= 0.0
    # the short names are a contract (scores, SQL, alert rules drift.<short>.<name>):
    # renaming one breaks users' rules
    assert SHORT_NAMES == {"psi": "psi", "jensen_shannon": "js", "hellinger": "hellinger",
                           "wasserstein": "wasserstein", "kolmogorov_smirnov": "ks",
                           "chi_square": "chi2_p"}
    assert set(ANOMALY_THRESHOLDS) == set(SCORERS)
    assert all(0.0 < t <= 1.0 for t in ANOMALY_THRESHOLDS.values())
    assert ANOMALY_THRESHOLDS["median_mad"] == ANOMALY_THRESHOLD


def test_anomaly_feeding_names_window_metrics_and_is_sane():
    fields = set(WindowMetrics.__struct_fields__)
    assert set(ANOMALY_EXCLUDED_METRICS) <= fields
    assert set(ANOMALY_MIN_SCALE) <= fields and all(v > 0 for v in ANOMALY_MIN_SCALE.values())
    assert ANOMALY_MIN_REQUESTS >= 1


@pytest.mark.parametrize("name", NAMES)
def test_without_counts_or_at_the_threshold_count_the_base_value_applies(name):
    base = DEFAULT_THRESHOLDS[name]
    assert threshold(name) == base
    assert threshold(name, int(THRESHOLD_COUNT), HUGE) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("name", SCALED)
def test_thresholds_scale_with_the_effective_count(name):
    base, exponent = DEFAULT_THRESHOLDS[name], BY_NAME[name].count_exponent
    quarter = threshold(name, int(THRESHOLD_COUNT) // 4, HUGE)
    assert quarter == pytest.approx(base * 4**exponent, rel=1e-9)
    assert threshold(name, 25, 25) > threshold(name, 25, 2500) > threshold(name, 2500, 2500)


@pytest.mark.parametrize("name", SCALED)
def test_busy_windows_stop_at_the_floor(name):
    assert threshold(name, 10**9, HUGE) == BY_NAME[name].floor
    assert threshold(name, 200, HUGE) > BY_NAME[name].floor


def test_the_chi_square_p_value_threshold_ignores_the_counts():
    assert threshold("chi_square", 20, 240) == threshold("chi_square", 10**6, 10**7) == \
        DEFAULT_THRESHOLDS["chi_square"]


def test_an_empty_side_never_drifts():
    assert effective_count(0, 100) == effective_count(100, 0) == 0.0
    assert threshold("psi", 0, 100) == math.inf
    assert not is_drift("psi", 50.0, current_count=0, reference_count=100)


def test_effective_count():
    assert effective_count(50, 50) == 25.0
    assert effective_count(50, 600) == effective_count(600, 50) == pytest.approx(46.1538, 1e-4)


def test_is_drift_follows_each_statistics_direction():
    assert is_drift("jensen_shannon", 0.9) and not is_drift("jensen_shannon", 0.01)
    assert is_drift("chi_square", 1e-9) and not is_drift("chi_square", 0.5)
    assert not is_drift("psi", None) and not is_drift("chi_square", None)
    # the counts move the bar: 0.3 is drift for 400 values, noise for 20
    assert is_drift("kolmogorov_smirnov", 0.3, current_count=400, reference_count=4800)
    assert not is_drift("kolmogorov_smirnov", 0.3, current_count=20, reference_count=240)
    # overrides are scaled the same way
    assert is_drift("psi", 0.2, {"psi": 0.1}) and not is_drift("psi", 0.2, {"psi": 0.3})
    with pytest.raises(KeyError):
        is_drift("no_such_statistic", 0.5)
    with pytest.raises(KeyError):
        is_drift("no_such_statistic", None)


def no_drift_alarm_rates(n: int, windows: int = 300) -> tuple[float, float]:
    """KS of ``windows`` no-drift windows of ``n`` values against one reference of 2,400:
    the share above the count-scaled threshold, and above the bare base value."""
    rng = np.random.default_rng(n)
    reference = NumericHistogram()
    reference.add_many(rng.normal(100.0, 15.0, 2400))
    ks, scaled, fixed = KolmogorovSmirnov(), 0, 0
    for _ in range(windows):
        current = NumericHistogram()
        current.add_many(rng.normal(100.0, 15.0, n))
        value = ks.compute(reference, current)
        scaled += is_drift(ks.name, value, current_count=n, reference_count=2400)
        fixed += is_drift(ks.name, value)
    return scaled / windows, fixed / windows


def test_count_scaling_keeps_no_drift_alarms_rare_for_small_and_large_windows():
    small_scaled, small_fixed = no_drift_alarm_rates(25)
    large_scaled, large_fixed = no_drift_alarm_rates(400)
    assert small_scaled <= 0.01 and large_scaled <= 0.01
    assert small_fixed > 0.1  # one fixed value would alarm on every few quiet small windows
    assert large_fixed == 0.0
