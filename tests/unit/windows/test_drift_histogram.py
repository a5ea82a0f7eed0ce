"""Drift histograms: merge equals the histogram of the union, negative values, accuracy of
quantiles and CDF, builtins round-trip, coarse bins."""

from __future__ import annotations

import math
from collections import Counter

import msgspec
import numpy as np
import pytest
from ddsketch.mapping import LogarithmicMapping

from pipeline.windows.histogram import (
    OTHER,
    CategoricalHistogram,
    NumericHistogram,
    coarsen,
)

ALPHA = 0.01


def mixed_values(seed: int, n: int = 20_000) -> np.ndarray:
    """Negative, zero and positive values over several magnitudes."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.concatenate([
        rng.normal(-40.0, 15.0, n // 4),
        np.zeros(n // 20),
        rng.lognormal(3.0, 1.5, n // 2),
        rng.normal(0.0, 1e-3, n - n // 4 - n // 20 - n // 2),
    ]))


def histogram_of(values, alpha: float = ALPHA) -> NumericHistogram:
    h = NumericHistogram(alpha)
    h.add_many(values)
    return h


def split(values: np.ndarray, parts: int, seed: int) -> list[np.ndarray]:
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, values.size), parts - 1,
                                                      replace=False))
    return np.split(values, cuts)


# ---------------------------------------------------------------------------- numeric
def test_numeric_merge_equals_histogram_of_union():
    values = mixed_values(1)
    whole = histogram_of(values)
    merged = NumericHistogram(ALPHA)
    for part in split(values, 7, seed=2):
        merged.merge(histogram_of(part))
    assert merged == whole
    assert merged.count == values.size
    assert merged.min == values.min() and merged.max == values.max()
    assert merged.sum == pytest.approx(values.sum(), rel=1e-9)
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert merged.quantile(q) == whole.quantile(q)
    # and the union's buckets are the sum of the parts' buckets
    a, b = histogram_of(values[:5000]), histogram_of(values[5000:])
    aligned = a.aligned(b)
    union_values, union_counts = whole.buckets()
    nonzero = (aligned.first + aligned.second) > 0
    assert np.array_equal(aligned.values[nonzero], union_values[union_counts > 0])
    assert np.array_equal((aligned.first + aligned.second)[nonzero], union_counts[union_counts > 0])


def test_merge_order_does_not_matter():
    parts = [histogram_of(p) for p in split(mixed_values(3), 5, seed=4)]
    forward, backward = NumericHistogram(ALPHA), NumericHistogram(ALPHA)
    for part in parts:
        forward.merge(part)
    for part in reversed(parts):
        backward.merge(part)
    assert forward == backward


@pytest.mark.parametrize("q", [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0])
def test_quantiles_within_relative_accuracy_for_negative_and_positive_values(q):
    values = mixed_values(5)
    h = histogram_of(values)
    exact = float(np.quantile(values, q, method="lower"))  # the rank convention used
    assert abs(h.quantile(q) - exact) <= ALPHA * abs(exact) * (1 + 1e-12) + 1e-300, (q, exact)


def test_all_negative_values():
    values = -np.random.default_rng(6).lognormal(4.0, 1.0, 5000)
    h = histogram_of(values)
    assert h.max == values.max() < 0
    for q in (0.01, 0.5, 0.99):
        exact = float(np.quantile(values, q, method="lower"))
        assert h.quantile(q) < 0
        assert abs(h.quantile(q) - exact) <= ALPHA * abs(exact) * (1 + 1e-12)


def test_cdf_is_exact_but_for_the_bucket_of_x():
    values = mixed_values(7)
    h = histogram_of(values)
    _, counts = h.buckets()
    largest_bucket = counts.max() / h.count
    for x in (-60.0, -1.0, -1e-4, 0.0, 1e-4, 3.0, 20.0, 500.0):
        exact = np.count_nonzero(values <= x) / values.size
        assert abs(h.cdf(x) - exact) <= largest_bucket, x
    assert h.cdf(values.min() - 1) == 0.0
    assert h.cdf(values.max()) == 1.0
    assert NumericHistogram().cdf(1.0) is None


def test_buckets_are_the_mapping_keys_even_on_bucket_boundaries():
    # The keys are computed by Sketch (see test_sketch.py); here, both signs of a histogram
    # must land in the mapping's buckets (representatives are one-to-one with keys).
    mapping = LogarithmicMapping(ALPHA)
    magnitudes = np.array(
        [mapping.gamma**k for k in range(-300, 600)]
        + [mapping.value(k) for k in range(-300, 600)]
        + list(np.random.default_rng(8).lognormal(0, 8, 5000))
    )
    h = NumericHistogram(ALPHA, max_buckets=100_000)
    h.add_many(np.concatenate([magnitudes, -magnitudes]))
    per_key = Counter(mapping.key(float(v)) for v in magnitudes)
    keys = sorted(per_key)
    values, counts = h.buckets()
    assert np.array_equal(values, [-mapping.value(k) for k in reversed(keys)]
                          + [0.0] + [mapping.value(k) for k in keys])
    assert np.array_equal(counts, [per_key[k] for k in reversed(keys)]
                          + [0] + [per_key[k] for k in keys])


def test_every_value_is_within_relative_accuracy_of_its_representative():
    values = mixed_values(9, n=4000)
    for v in values[:500]:
        h = histogram_of([v])
        representative = h.buckets()[0][h.buckets()[1] > 0][0]
        assert abs(representative - v) <= ALPHA * abs(v) + 1e-300


def test_zero_nan_none_and_infinite_values():
    h = NumericHistogram()
    h.add_many([0.0, None, float("nan"), -0.0, 5.0, -5.0])
    assert h.count == 4
    assert h.quantile(0.5) == 0.0  # sorted: -5, 0, 0, 5; rank floor(0.5 * 3) = 1
    h.add(None)
    assert h.count == 4
    with pytest.raises(ValueError, match="finite"):
        h.add_many([1.0, math.inf])
    with pytest.raises(ValueError, match="finite"):
        h.add(-math.inf)
    assert h.count == 4


def test_merging_incompatible_histograms_raises():
    with pytest.raises(ValueError, match="relative accuracy"):
        NumericHistogram(0.01).merge(NumericHistogram(0.02))
    with pytest.raises(TypeError):
        NumericHistogram().merge(CategoricalHistogram())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CategoricalHistogram().merge(NumericHistogram())  # type: ignore[arg-type]


def test_bucket_bound_folds_the_buckets_nearest_zero():
    h = NumericHistogram(ALPHA, max_buckets=50)
    values = np.geomspace(1e-6, 1e6, 2000)
    h.add_many(np.concatenate([values, -values]))
    bucket_values, counts = h.buckets()
    assert counts.sum() == h.count == 4000
    assert (bucket_values < 0).sum() <= 50 and (bucket_values > 0).sum() <= 50
    # the large magnitudes keep their accuracy
    assert abs(h.quantile(1.0) - 1e6) <= ALPHA * 1e6
    assert abs(h.quantile(0.0) + 1e6) <= ALPHA * 1e6


@pytest.mark.parametrize("values", [[], [0.0], [-3.5, 0.0, 2.0], list(mixed_values(10, 3000))])
def test_numeric_builtins_round_trip_through_msgpack_and_json(values):
    h = histogram_of(values)
    for codec in (msgspec.msgpack, msgspec.json):
        back = NumericHistogram.from_builtins(codec.decode(codec.encode(h.to_builtins())))
        assert back == h
        assert back.count == len(values)
        assert back.quantile(0.5) == h.quantile(0.5)


def test_non_default_max_buckets_survives_round_trip():
    h = NumericHistogram(0.02, max_buckets=64)
    h.add_many([1.0, -2.0])
    back = NumericHistogram.from_builtins(h.to_builtins())
    assert back.max_buckets == 64 and back.relative_accuracy == pytest.approx(0.02)
    assert back == h


def test_malformed_numeric_builtins_are_rejected():
    bounds = {"s": 1.0, "lo": 0.0, "hi": 1.0}
    with pytest.raises(ValueError, match="malformed"):
        NumericHistogram.from_builtins({"a": 0.01, "p": {"k": [5, 0], "c": [1, 1], **bounds}})
    with pytest.raises(ValueError, match="malformed"):
        NumericHistogram.from_builtins({"a": 0.01, "n": {"k": [5], "c": [0], **bounds}})
    with pytest.raises(ValueError, match="malformed"):
        NumericHistogram.from_builtins({"a": 0.01, "p": {"z": -1}})
    with pytest.raises(ValueError, match="malformed"):  # the flat layout of before
        NumericHistogram.from_builtins({"a": 0.01, "p": [5], "pc": [1], **bounds})


def test_copy_is_independent():
    h = histogram_of([1.0, 2.0])
    c = h.copy()
    c.add(-7.0)
    assert h.count == 2 and c.count == 3 and h != c


# ---------------------------------------------------------------------------- categorical
def test_categorical_merge_equals_histogram_of_union():
    rng = np.random.default_rng(11)
    values = list(rng.choice(["a", "b", "c", "d", "e"], size=5000, p=[.4, .3, .15, .1, .05]))
    whole = CategoricalHistogram()
    whole.add_many(values)
    merged = CategoricalHistogram()
    for part in np.array_split(np.array(values), 6):
        partial = CategoricalHistogram()
        partial.add_many(part.tolist())
        merged.merge(partial)
    assert merged == whole
    assert merged.count == 5000
    assert merged.counts == {k: values.count(k) for k in set(values)}


def test_categorical_cap_overflows_into_other():
    h = CategoricalHistogram(max_categories=3)
    h.add_many(["a", "b", "c", "d", "e", "a", "d"])
    assert h.counts == {"a": 2, "b": 1, "c": 1, OTHER: 3}
    assert h.count == 7
    other = CategoricalHistogram(max_categories=10)
    other.add_many(["z", "a"])
    h.merge(other)
    assert h.counts == {"a": 3, "b": 1, "c": 1, OTHER: 4}


def test_categorical_skips_none_and_stringifies_numbers():
    h = CategoricalHistogram()
    h.add_many([None, 1, 1.5, "1", True])
    assert h.counts == {"1": 2, "1.5": 1, "True": 1}


def test_categorical_builtins_round_trip_and_validation():
    h = CategoricalHistogram(max_categories=5)
    h.add_many(["x", "y", "y"])
    for codec in (msgspec.msgpack, msgspec.json):
        assert CategoricalHistogram.from_builtins(codec.decode(codec.encode(h.to_builtins()))) == h
    assert CategoricalHistogram.from_builtins(CategoricalHistogram().to_builtins()).count == 0
    with pytest.raises(ValueError, match="malformed"):
        CategoricalHistogram.from_builtins({"m": 5, "c": {"x": 0}})


# ---------------------------------------------------------------------------- coarsen
def test_coarse_bins_hold_equal_reference_mass_and_match_raw_binning():
    rng = np.random.default_rng(12)
    ref_values, cur_values = rng.normal(0.0, 1.0, 8000), rng.normal(0.7, 1.3, 3000)
    ref, cur = histogram_of(ref_values), histogram_of(cur_values)
    binned = coarsen(ref, cur, bins=10)
    assert binned.reference.size == binned.current.size == binned.edges.size + 1 == 10
    assert binned.reference.sum() == 8000 and binned.current.sum() == 3000
    largest_bucket = ref.buckets()[1].max()
    assert np.all(np.abs(binned.reference - 800) <= largest_bucket)
    # The bins are runs of whole buckets: binning the raw values at the returned edges gives
    # exactly the same counts (no raw value of continuous data falls on an edge).
    for raw, counts in ((ref_values, binned.reference), (cur_values, binned.current)):
        by_edges = np.bincount(np.searchsorted(binned.edges, raw, side="left"), minlength=10)
        assert np.array_equal(by_edges, counts)


def test_coarsen_with_ties_gives_fewer_bins():
    ref = histogram_of([0.0] * 700 + list(np.linspace(1, 100, 300)))
    cur = histogram_of([0.0] * 10 + [50.0] * 10)
    binned = coarsen(ref, cur, bins=10)
    assert binned.reference[0] == 700  # one bin for the zeros instead of seven
    assert 3 <= binned.reference.size < 10
    assert binned.reference.sum() == 1000 and binned.current.sum() == 20


def test_coarsen_puts_current_values_outside_the_reference_in_the_outer_bins():
    ref, cur = histogram_of(np.linspace(10, 20, 100)), histogram_of([-1000.0, 5.0, 1e6])
    binned = coarsen(ref, cur, bins=5)
    assert binned.current.tolist() == [2, 0, 0, 0, 1]


def test_coarsen_categorical_is_the_union_of_categories():
    ref, cur = CategoricalHistogram(), CategoricalHistogram()
    ref.add_many(["a", "b", "b"])
    cur.add_many(["c"])
    binned = coarsen(ref, cur)
    assert binned.edges.tolist() == ["a", "b", "c"]
    assert binned.reference.tolist() == [1, 2, 0] and binned.current.tolist() == [0, 0, 1]
    with pytest.raises(ValueError):
        coarsen(ref, cur, bins=0)
