"""Drift statistics against reference implementations (scipy, direct numpy formulas) on fixed
samples, and one contract suite applied to every registered statistic.

Tolerances, from the histogram's relative accuracy alpha (every value is represented by a
bucket value within ``alpha·|x|`` of it):

* PSI, JS, Hellinger are computed on coarse bins that are runs of whole buckets; binning the
  raw samples at the returned edges gives the same counts (asserted), so they must equal the
  reference formulas on those counts to float precision (1e-12).
* Wasserstein-1: moving every value by at most ``alpha·|x|`` moves W1 by at most the mean
  displacement of each sample, so ``|W_hist − W_exact| <= alpha·(E|a| + E|b|)``.
* Kolmogorov–Smirnov: the histogram's CDFs are exact at bucket ends; inside one bucket
  ``F_a − F_b`` can move by at most that bucket's ``p_a + p_b``. So
  ``0 <= D_exact − D_hist <= max_b (p_a(b) + p_b(b))``.
* Chi-square: the counts are exact, so the p-value equals scipy's to 1e-9 relative.
"""

from __future__ import annotations

import inspect
from itertools import pairwise

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

import pipeline.scoring.drift as drift
from pipeline.scoring.drift import (
    KINDS,
    PSI,
    STATISTICS,
    CategoricalHistogram,
    ChiSquare,
    Hellinger,
    JensenShannon,
    KolmogorovSmirnov,
    NumericHistogram,
    Statistic,
    Wasserstein,
    coarsen,
    statistics_for,
)
from pipeline.scoring.drift.chi_square import pooled_table

ALPHA = 0.01
SHIFTS = (0.0, 0.25, 0.5, 1.0)


def numeric(values) -> NumericHistogram:
    h = NumericHistogram(ALPHA)
    h.add_many(values)
    return h


def categorical(counts: dict[str, int]) -> CategoricalHistogram:
    h = CategoricalHistogram()
    h.add_many([k for k, n in counts.items() for _ in range(n)])
    return h


SAMPLES = {  # name -> (reference sample, current sample), fixed seeds
    "normal": (np.random.default_rng(1).normal(0.0, 1.0, 6000),
               np.random.default_rng(2).normal(0.4, 1.2, 2500)),
    "latency": (np.random.default_rng(3).lognormal(5.0, 0.6, 6000),
                np.random.default_rng(4).lognormal(5.2, 0.5, 2500)),
    "with_zeros": (np.concatenate([np.zeros(500), np.random.default_rng(5).exponential(3, 3000)]),
                   np.concatenate([np.zeros(50), np.random.default_rng(6).exponential(4, 1000)])),
}


def raw_binned(ref_values: np.ndarray, cur_values: np.ndarray, bins: int = 10):
    """Coarse counts of both raw samples at the edges the histograms chose."""
    binned = coarsen(numeric(ref_values), numeric(cur_values), bins)
    k = binned.reference.size
    ref_counts = np.bincount(np.searchsorted(binned.edges, ref_values, side="left"), minlength=k)
    cur_counts = np.bincount(np.searchsorted(binned.edges, cur_values, side="left"), minlength=k)
    assert np.array_equal(ref_counts, binned.reference)
    assert np.array_equal(cur_counts, binned.current)
    return ref_counts, cur_counts


def psi_formula(ref_counts, cur_counts, eps=1e-4):
    k = len(ref_counts)
    p = (ref_counts / ref_counts.sum() + eps) / (1 + k * eps)
    q = (cur_counts / cur_counts.sum() + eps) / (1 + k * eps)
    return float(np.sum((q - p) * np.log(q / p)))


def hellinger_formula(ref_counts, cur_counts):
    p, q = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    return float(np.sqrt(1.0 - np.sum(np.sqrt(p * q))))


# ---------------------------------------------------------------------------- vs references
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_jensen_shannon_equals_scipy(sample):
    ref_values, cur_values = SAMPLES[sample]
    ref_counts, cur_counts = raw_binned(ref_values, cur_values)
    expected = jensenshannon(ref_counts, cur_counts, base=2)
    got = JensenShannon().compute(numeric(ref_values), numeric(cur_values))
    assert got == pytest.approx(expected, abs=1e-12)
    assert got > 0.01  # the samples do differ: not a vacuous comparison


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_psi_and_hellinger_equal_the_formulas_on_the_same_bins(sample):
    ref_values, cur_values = SAMPLES[sample]
    ref_counts, cur_counts = raw_binned(ref_values, cur_values)
    ref, cur = numeric(ref_values), numeric(cur_values)
    assert PSI().compute(ref, cur) == pytest.approx(psi_formula(ref_counts, cur_counts), abs=1e-12)
    assert Hellinger().compute(ref, cur) == pytest.approx(
        hellinger_formula(ref_counts, cur_counts), abs=1e-9)
    assert PSI().compute(ref, cur) > 0.01


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_wasserstein_within_alpha_of_scipy(sample):
    ref_values, cur_values = SAMPLES[sample]
    exact = wasserstein_distance(ref_values, cur_values)
    tolerance = ALPHA * (np.abs(ref_values).mean() + np.abs(cur_values).mean())
    ref, cur = numeric(ref_values), numeric(cur_values)
    got = Wasserstein(normalize="none").compute(ref, cur)
    assert abs(got - exact) <= tolerance, (got, exact, tolerance)
    assert exact > 5 * tolerance  # the bound is tight enough to mean something
    # normalised: divided by the reference's IQR (bucketed quantiles, within alpha)
    iqr = ref.quantile(0.75) - ref.quantile(0.25)
    assert Wasserstein(normalize="iqr").compute(ref, cur) == pytest.approx(got / iqr, rel=1e-12)
    exact_iqr = np.quantile(ref_values, 0.75) - np.quantile(ref_values, 0.25)
    assert Wasserstein().compute(ref, cur) == pytest.approx(exact / exact_iqr, rel=0.05)
    assert Wasserstein(normalize="std").compute(ref, cur) == pytest.approx(
        exact / ref_values.std(), rel=0.05)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_kolmogorov_smirnov_within_one_bucket_of_scipy(sample):
    ref_values, cur_values = SAMPLES[sample]
    exact = ks_2samp(ref_values, cur_values).statistic
    ref, cur = numeric(ref_values), numeric(cur_values)
    aligned = ref.aligned(cur)
    mass = aligned.first / ref.count + aligned.second / cur.count
    # the zero bucket holds exact zeros only: both CDFs are exact across it
    tolerance = float(np.max(mass[aligned.values != 0.0]))
    got = KolmogorovSmirnov().compute(ref, cur)
    assert got <= exact + 1e-12
    assert exact - got <= tolerance, (got, exact, tolerance)
    assert tolerance < 0.05 < exact


def test_wasserstein_of_point_masses_is_the_distance_moved():
    ref, cur = numeric([1.0] * 30 + [5.0] * 10), numeric([1.0] * 10 + [5.0] * 10 + [100.0] * 20)
    exact = wasserstein_distance([1.0] * 30 + [5.0] * 10, [1.0] * 10 + [5.0] * 10 + [100.0] * 20)
    got = Wasserstein(normalize="none").compute(ref, cur)
    assert abs(got - exact) <= ALPHA * (ref.sum / ref.count + cur.sum / cur.count)
    assert got == pytest.approx(Wasserstein(normalize="none").compute(cur, ref), rel=1e-12)


def test_wasserstein_falls_back_to_std_then_raw_for_degenerate_references():
    mostly_zero = numeric([0.0] * 90 + [10.0] * 10)  # IQR 0, std 3
    cur = numeric([0.0] * 50 + [10.0] * 50)
    raw = Wasserstein(normalize="none").compute(mostly_zero, cur)
    assert Wasserstein().compute(mostly_zero, cur) == pytest.approx(raw / mostly_zero.std())
    constant = numeric([5.0] * 10)
    assert Wasserstein().compute(constant, cur) == Wasserstein(normalize="none").compute(
        constant, cur)
    with pytest.raises(ValueError):
        Wasserstein(normalize="mad")  # type: ignore[arg-type]


def test_chi_square_p_value_equals_scipy():
    ref = {"a": 400, "b": 300, "c": 200, "d": 100}
    cur = {"a": 50, "b": 80, "c": 50, "d": 20}
    table = np.array([[ref[k] for k in "abcd"], [cur[k] for k in "abcd"]])
    expected = chi2_contingency(table, correction=False).pvalue
    got = ChiSquare().compute(categorical(ref), categorical(cur))
    assert got == pytest.approx(expected, rel=1e-9)
    assert 1e-6 < got < 0.05


def test_chi_square_pools_rare_categories_like_a_pooled_scipy_table():
    ref = {"a": 500, "b": 400, "r1": 30, "r2": 25, "r3": 20}
    cur = {"a": 60, "b": 30, "r1": 2, "r3": 1, "new": 1}
    got = ChiSquare().compute(categorical(ref), categorical(cur))
    # expected counts of r1, r2, r3, new in the current row are < 5: pooled into one column
    pooled = np.array([[500, 400, 75], [60, 30, 4]])
    table = np.array([[500, 400, 0, 30, 25, 20], [60, 30, 1, 2, 0, 1]])
    assert pooled_table(table).tolist() == pooled.tolist()
    assert got == pytest.approx(chi2_contingency(pooled, correction=False).pvalue, rel=1e-9)
    assert got != pytest.approx(chi2_contingency(table, correction=False).pvalue, rel=1e-3)


def test_chi_square_min_count_rule():
    ref = categorical({"a": 500, "b": 500})
    skewed = {"a": 45, "b": 4}
    assert ChiSquare().compute(ref, categorical(skewed)) is None  # 49 < 50
    skewed["b"] = 5
    p = ChiSquare().compute(ref, categorical(skewed))
    assert p is not None and p < 1e-6
    assert ChiSquare(min_count=100).compute(ref, categorical(skewed)) is None


def test_chi_square_single_category_left_is_no_evidence():
    ref, cur = categorical({"a": 1000, "b": 2}), categorical({"a": 60})
    assert ChiSquare().compute(ref, cur) == 1.0


# ---------------------------------------------------------------------------- contract suite
def shifted_numeric(shift: float) -> tuple[NumericHistogram, NumericHistogram]:
    reference = np.random.default_rng(10).normal(100.0, 10.0, 5000)
    current = np.random.default_rng(11).normal(100.0 + 10.0 * shift, 10.0, 2000)
    return numeric(reference), numeric(current)


P_REFERENCE = np.array([0.4, 0.3, 0.2, 0.1])
P_SHIFTED = np.array([0.1, 0.2, 0.3, 0.4])


def shifted_categorical(shift: float) -> tuple[CategoricalHistogram, CategoricalHistogram]:
    """Reference proportions P_REFERENCE; current mixed toward P_SHIFTED by ``shift``."""
    current = (1 - shift) * P_REFERENCE + shift * P_SHIFTED
    names = ["w", "x", "y", "z"]
    return (categorical(dict(zip(names, (10_000 * P_REFERENCE).astype(int), strict=True))),
            categorical(dict(zip(names, np.rint(400 * current).astype(int), strict=True))))


SHIFTED = {"numeric": shifted_numeric, "categorical": shifted_categorical}
EMPTY = {"numeric": NumericHistogram, "categorical": CategoricalHistogram}


def cases():
    return [pytest.param(s, kind, id=f"{s.name}-{kind}") for s in STATISTICS for kind in s.kinds]


def all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


def test_every_statistic_implementation_is_registered_once():
    registered = [type(s) for s in STATISTICS]
    concrete = {c for c in all_subclasses(Statistic) if not inspect.isabstract(c)
                and c.__module__.startswith("pipeline.scoring.drift")}
    assert concrete == set(registered)
    assert len({s.name for s in STATISTICS}) == len(STATISTICS)
    for kind in KINDS:
        assert [s for s in STATISTICS if kind in s.kinds] == list(statistics_for(kind))
    assert {s.name for s in statistics_for("numeric")} >= {
        "psi", "jensen_shannon", "hellinger", "wasserstein", "kolmogorov_smirnov"}
    assert {s.name for s in statistics_for("categorical")} >= {
        "psi", "jensen_shannon", "hellinger", "chi_square"}
    with pytest.raises(ValueError):
        statistics_for("text")  # type: ignore[arg-type]
    assert set(drift.__all__) >= {type(s).__name__ for s in STATISTICS}


@pytest.mark.parametrize("statistic", STATISTICS, ids=lambda s: s.name)
def test_declarations_and_docstring_example(statistic):
    assert statistic.kinds and set(statistic.kinds) <= set(KINDS)
    low, high = statistic.bounds
    assert low <= statistic.no_drift <= high
    doc = type(statistic).__doc__ or ""
    assert ">>>" in doc, "each statistic needs a runnable docstring example"


@pytest.mark.parametrize(("statistic", "kind"), cases())
def test_identical_distributions_give_the_no_drift_value(statistic, kind):
    reference, _ = SHIFTED[kind](0.0)
    assert statistic.compute(reference, reference.copy()) == pytest.approx(
        statistic.no_drift, abs=1e-12)


@pytest.mark.parametrize(("statistic", "kind"), cases())
def test_grows_monotonically_with_the_shift(statistic, kind):
    values = [statistic.compute(*SHIFTED[kind](shift)) for shift in SHIFTS]
    low, high = statistic.bounds
    assert all(v is not None and low <= v <= high for v in values), values
    if statistic.higher_is_drift:
        assert all(b > a for a, b in pairwise(values)), values
    else:  # p-values: fall with the shift
        assert all(b < a for a, b in pairwise(values)), values
        assert values[0] > 0.05 and values[-1] < 1e-6


@pytest.mark.parametrize(("statistic", "kind"), cases())
def test_too_little_data_gives_none(statistic, kind):
    reference, current = SHIFTED[kind](0.5)
    empty = EMPTY[kind]()
    assert statistic.compute(reference, empty) is None
    assert statistic.compute(empty, current) is None
    small = EMPTY[kind]()
    if kind == "numeric":
        small.add_many([100.0] * (statistic.min_count - 1))
    else:
        small.add_many(["w"] * (statistic.min_count - 1))
    if statistic.min_count > 1:
        assert statistic.compute(reference, small) is None
    small.add_many([100.0] if kind == "numeric" else ["w"])
    assert statistic.compute(reference, small) is not None


@pytest.mark.parametrize(("statistic", "kind"), cases())
def test_computed_from_merged_partials_equals_computed_from_the_whole(statistic, kind):
    reference, current = SHIFTED[kind](0.5)
    # split the current window's state into partials the way stage 1 would
    builtins = current.to_builtins()
    if kind == "numeric":
        values = np.random.default_rng(11).normal(105.0, 10.0, 2000)
        parts = [numeric(p) for p in np.array_split(values, 4)]
        current = numeric(values)
    else:
        values = [k for k, n in current.counts.items() for _ in range(n)]
        parts = []
        for chunk in np.array_split(np.array(values), 3):
            part = CategoricalHistogram()
            part.add_many(chunk.tolist())
            parts.append(part)
    merged = EMPTY[kind]()
    for part in parts:
        merged.merge(part)
    assert statistic.compute(reference, merged) == pytest.approx(
        statistic.compute(reference, current), rel=1e-12, abs=1e-300)
    assert builtins  # the fixture was not empty


@pytest.mark.parametrize(("statistic", "kind"), cases())
def test_inputs_are_not_mutated(statistic, kind):
    reference, current = SHIFTED[kind](1.0)
    before = reference.to_builtins(), current.to_builtins()
    first = statistic.compute(reference, current)
    assert (reference.to_builtins(), current.to_builtins()) == before
    assert statistic.compute(reference, current) == first


@pytest.mark.parametrize("statistic", STATISTICS, ids=lambda s: s.name)
def test_wrong_or_mixed_kinds_raise_type_error(statistic):
    num, cat = shifted_numeric(0.0)[0], shifted_categorical(0.0)[0]
    with pytest.raises(TypeError):
        statistic.compute(num, cat)
    with pytest.raises(TypeError):
        statistic.compute([1.0], [2.0])  # type: ignore[arg-type]
    for kind, histogram in (("numeric", num), ("categorical", cat)):
        if kind not in statistic.kinds:
            with pytest.raises(TypeError, match="does not apply"):
                statistic.compute(histogram, histogram)
