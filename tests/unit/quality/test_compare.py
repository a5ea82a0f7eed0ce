"""Comparing two model versions: Newcombe's interval for proportions (published values
and an independent Wilson from scipy), Welch's interval for means (scipy), the t quantile
without scipy, and verdicts that respect sample size and margin."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from scipy import stats

from pipeline.quality.compare import (
    Difference,
    _t_quantile,
    compare_means,
    compare_rates,
)

# Newcombe (1998), Table II, method 10: (a, m, b, n) -> 95 % limits of a/m - b/n
NEWCOMBE_TABLE_II = [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775),
    (0, 10, 0, 10, -0.2775, 0.2775),
    (10, 10, 0, 20, 0.6791, 1.0000),
    (10, 10, 0, 10, 0.6075, 1.0000),
]


@pytest.mark.parametrize(("a", "m", "b", "n", "low", "high"), NEWCOMBE_TABLE_II)
def test_newcombe_published_values(a: int, m: int, b: int, n: int, low: float,
                                   high: float) -> None:
    d = compare_rates("accuracy", b, n, a, m, higher_is_worse=False, min_n=1)
    assert d.difference == pytest.approx(a / m - b / n)
    assert d.low == pytest.approx(low, abs=6e-5)
    assert d.high == pytest.approx(high, abs=6e-5)


def newcombe_with_scipy(k_base: int, n_base: int, k_cand: int, n_cand: int,
                        level: float) -> tuple[float, float]:
    """Method 10 from scipy's own Wilson intervals (``binomtest(...).proportion_ci``)."""
    l1, u1 = stats.binomtest(k_cand, n_cand).proportion_ci(level, method="wilson")
    l2, u2 = stats.binomtest(k_base, n_base).proportion_ci(level, method="wilson")
    p1, p2 = k_cand / n_cand, k_base / n_base
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def test_newcombe_matches_an_independent_implementation() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        n_base, n_cand = (int(x) for x in rng.integers(1, 3000, 2))
        k_base, k_cand = int(rng.integers(0, n_base + 1)), int(rng.integers(0, n_cand + 1))
        level = float(rng.choice([0.8, 0.9, 0.95, 0.99]))
        d = compare_rates("e", k_base, n_base, k_cand, n_cand, higher_is_worse=True,
                          level=level)
        low, high = newcombe_with_scipy(k_base, n_base, k_cand, n_cand, level)
        assert (d.low, d.high) == pytest.approx((low, high), abs=1e-9)
        assert d.low <= d.difference <= d.high


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    for n_base, n_cand, level in [(40, 35, 0.95), (200, 12, 0.9), (5, 5000, 0.99), (3, 2, 0.95)]:
        base = rng.lognormal(4.0, 0.5, n_base)
        cand = rng.lognormal(4.1, 0.8, n_cand)
        d = compare_means("latency_ms", base.mean(), base.var(ddof=1), n_base,
                          cand.mean(), cand.var(ddof=1), n_cand, higher_is_worse=True,
                          level=level, min_n=2)
        ref = stats.ttest_ind(cand, base, equal_var=False).confidence_interval(level)
        assert d.difference == pytest.approx(cand.mean() - base.mean())
        assert (d.low, d.high) == pytest.approx((ref.low, ref.high), rel=1e-9)


def test_welch_by_hand() -> None:
    # means 10 and 12, variances 4 and 9, n 20 and 25
    sb, sc = 4 / 20, 9 / 25
    df = (sb + sc) ** 2 / (sb**2 / 19 + sc**2 / 24)
    half = stats.t.ppf(0.975, df) * math.sqrt(sb + sc)
    d = compare_means("m", 10.0, 4.0, 20, 12.0, 9.0, 25, higher_is_worse=True, min_n=2)
    assert (d.low, d.high) == pytest.approx((2 - half, 2 + half), rel=1e-12)
    stat = stats.ttest_ind_from_stats(12.0, 3.0, 25, 10.0, 2.0, 20, equal_var=False).statistic
    assert 2 / math.sqrt(sb + sc) == pytest.approx(stat)


@pytest.mark.parametrize("df", [1, 1.5, 2, 2.7, 3, 4, 5, 9.3, 29, 30.5, 100, 1234.5, 8e4, 2e5,
                                1e8])
def test_t_quantile_matches_scipy(df: float) -> None:
    for p in (1e-9, 0.0005, 0.005, 0.025, 0.05, 0.1, 0.25, 0.4, 0.6, 0.75, 0.9, 0.95, 0.975,
              0.995, 0.9995):
        assert _t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8, abs=1e-10)
    assert _t_quantile(0.5, df) == 0.0


def test_t_quantile_refuses_nonsense() -> None:
    for p, df in [(0.0, 5), (1.0, 5), (0.5, 0), (0.9, -1), (math.nan, 3)]:
        with pytest.raises(ValueError):
            _t_quantile(p, df)


def test_clear_worse_and_better() -> None:
    worse = compare_rates("error_rate", 20, 2000, 80, 2000, higher_is_worse=True)
    assert worse.verdict == "worse" and worse.low > 0
    better = compare_rates("error_rate", 80, 2000, 20, 2000, higher_is_worse=True)
    assert better.verdict == "better" and better.high < 0
    # accuracy: higher is better, so the same drop reads the other way
    dropped = compare_rates("accuracy", 1980, 2000, 1920, 2000, higher_is_worse=False)
    assert dropped.verdict == "worse"
    slower = compare_means("latency_ms", 100.0, 400.0, 500, 110.0, 400.0, 500,
                           higher_is_worse=True)
    assert slower.verdict == "worse"
    happier = compare_means("satisfaction", 0.6, 0.04, 500, 0.7, 0.04, 500,
                            higher_is_worse=False)
    assert happier.verdict == "better"


def test_tiny_samples_are_insufficient() -> None:
    d = compare_rates("error_rate", 0, 10, 9, 10, higher_is_worse=True)
    assert d.verdict == "insufficient_data"
    assert d.low is not None and d.low > 0  # the interval is still reported
    d = compare_rates("error_rate", 0, 10, 9, 10, higher_is_worse=True, min_n=10)
    assert d.verdict == "worse"
    d = compare_means("latency_ms", 100.0, 1.0, 29, 200.0, 1.0, 500, higher_is_worse=True)
    assert d.verdict == "insufficient_data"


def test_no_real_difference_rarely_called_worse() -> None:
    rng = np.random.default_rng(8)
    rates, means = [], []
    for _ in range(400):
        k_base, k_cand = rng.binomial(5000, 0.03, 2)
        rates.append(compare_rates("error_rate", int(k_base), 5000, int(k_cand), 5000,
                                   higher_is_worse=True).verdict)
        base, cand = rng.normal(100.0, 20.0, 300), rng.normal(100.0, 20.0, 300)
        means.append(compare_means("latency_ms", base.mean(), base.var(ddof=1), 300,
                                   cand.mean(), cand.var(ddof=1), 300,
                                   higher_is_worse=True).verdict)
    for verdicts in (rates, means):
        assert verdicts.count("worse") / 400 <= 0.05
        assert verdicts.count("better") / 400 <= 0.05
        assert verdicts.count("no_difference") / 400 >= 0.9


def test_margin() -> None:
    # 1 % → 2 %: surely worse, but not surely by more than two points
    d = compare_rates("error_rate", 100, 10_000, 200, 10_000, higher_is_worse=True)
    assert d.verdict == "worse" and 0 < d.low < 0.02
    assert compare_rates("error_rate", 100, 10_000, 200, 10_000, higher_is_worse=True,
                         margin=0.02).verdict == "no_difference"
    assert compare_rates("error_rate", 100, 10_000, 500, 10_000, higher_is_worse=True,
                         margin=0.02).verdict == "worse"
    assert compare_rates("error_rate", 500, 10_000, 100, 10_000, higher_is_worse=True,
                         margin=0.02).verdict == "better"
    assert compare_means("latency_ms", 100.0, 25.0, 1000, 102.0, 25.0, 1000,
                         higher_is_worse=True, margin=5.0).verdict == "no_difference"
    with pytest.raises(ValueError, match="margin"):
        compare_rates("e", 1, 10, 1, 10, higher_is_worse=True, margin=-0.1)


def test_zero_counts_and_empty_versions_never_raise() -> None:
    d = compare_rates("error_rate", 0, 0, 5, 100, higher_is_worse=True)
    assert (d.baseline, d.candidate, d.difference, d.low, d.high) == (None, 0.05, None, None,
                                                                     None)
    assert d.verdict == "insufficient_data" and d.n_baseline == 0
    d = compare_rates("error_rate", 0, 0, 0, 0, higher_is_worse=True)
    assert d.verdict == "insufficient_data" and d.difference is None
    d = compare_rates("error_rate", 0, 5000, 0, 5000, higher_is_worse=True)
    assert d.difference == 0.0 and d.low < 0 < d.high and d.verdict == "no_difference"
    d = compare_rates("accuracy", 5000, 5000, 5000, 5000, higher_is_worse=False)
    assert d.verdict == "no_difference"
    # a mean of nothing is NaN in SQL; a variance of one observation too
    d = compare_means("latency_ms", math.nan, math.nan, 0, 120.0, math.nan, 1,
                      higher_is_worse=True, min_n=0)
    assert (d.baseline, d.candidate, d.verdict) == (None, 120.0, "insufficient_data")
    d = compare_means("latency_ms", 100.0, None, 1, 120.0, None, 1, higher_is_worse=True,
                      min_n=0)
    assert d.difference == 20.0 and d.low is None and d.verdict == "insufficient_data"
    # no spread at all: the interval is the point
    d = compare_means("m", 1.0, 0.0, 50, 2.0, 0.0, 50, higher_is_worse=True)
    assert (d.low, d.high, d.verdict) == (1.0, 1.0, "worse")
    d = compare_means("m", 1.0, 0.0, 50, 1.0, 0.0, 50, higher_is_worse=True)
    assert d.verdict == "no_difference"


def test_impossible_inputs_raise() -> None:
    with pytest.raises(ValueError):
        compare_rates("e", 11, 10, 1, 10, higher_is_worse=True)
    with pytest.raises(ValueError):
        compare_rates("e", -1, 10, 1, 10, higher_is_worse=True)
    with pytest.raises(ValueError, match="level"):
        compare_rates("e", 1, 10, 1, 10, higher_is_worse=True, level=95)
    with pytest.raises(ValueError, match="variance"):
        compare_means("m", 1.0, -1.0, 50, 1.0, 1.0, 50, higher_is_worse=True)
    with pytest.raises(ValueError, match="mean"):
        compare_means("m", math.nan, 1.0, 50, 1.0, 1.0, 50, higher_is_worse=True)


def test_difference_round_trips_and_validates_the_verdict() -> None:
    d = compare_rates("error_rate", 10, 1000, 40, 1000, higher_is_worse=True)
    assert msgspec.json.decode(msgspec.json.encode(d), type=Difference) == d
    bad = msgspec.json.encode(d).replace(b'"worse"', b'"terrible"')
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(bad, type=Difference)
