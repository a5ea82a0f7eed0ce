"""Sketch: relative-error bound on heavy-tailed data, single and merged; ddsketch parity."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

from pipeline.windows.sketch import Sketch

QS = (0.5, 0.9, 0.95, 0.99, 0.999)
ALPHAS = (0.01, 0.02)
N = 60_000
PARTS = 6


def lognormal(rng: np.random.Generator) -> np.ndarray:
    return rng.lognormal(mean=5.0, sigma=1.2, size=N)  # latency-like, ms


def bimodal(rng: np.random.Generator) -> np.ndarray:
    # cache hits around 40 ms, misses around 1.5 s
    fast = rng.normal(40.0, 6.0, size=N * 7 // 10)
    slow = rng.lognormal(math.log(1500.0), 0.4, size=N - fast.size)
    return rng.permutation(np.clip(np.concatenate([fast, slow]), 0.5, None))


def pareto(rng: np.random.Generator) -> np.ndarray:
    return (rng.pareto(1.2, size=N) + 1.0) * 20.0  # heavy tail, infinite variance


DISTRIBUTIONS = {"lognormal": lognormal, "bimodal": bimodal, "pareto": pareto}


def exact(values: np.ndarray, q: float) -> float:
    """The order statistic DDSketch's rank convention targets (== numpy method='lower')."""
    return float(np.sort(values)[math.floor(q * (values.size - 1))])


def assert_within(sketch: Sketch, values: np.ndarray, alpha: float) -> None:
    for q in QS:
        truth = exact(values, q)
        assert truth == float(np.quantile(values, q, method="lower"))
        estimate = sketch.quantile(q)
        assert abs(estimate - truth) <= alpha * truth * (1 + 1e-12), (q, estimate, truth)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_single_sketch_within_relative_error(name, alpha):
    values = DISTRIBUTIONS[name](np.random.default_rng(7))
    sketch = Sketch(alpha)
    sketch.add_many(values)
    assert sketch.count == N
    assert_within(sketch, values, alpha)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_merged_partials_within_relative_error(name, alpha):
    values = DISTRIBUTIONS[name](np.random.default_rng(11))
    # uneven parts, like partitions with different traffic
    cuts = np.sort(np.random.default_rng(3).choice(np.arange(1, N), PARTS - 1, replace=False))
    parts = np.split(values, cuts)
    partials = []
    for part in parts:
        partial = Sketch(alpha)
        partial.add_many(part)
        partials.append(partial)
    merged = Sketch(alpha)
    for partial in partials:
        merged.merge(partial)
    assert merged.count == N
    assert merged.min == values.min() and merged.max == values.max()
    assert merged.sum == pytest.approx(values.sum(), rel=1e-12)
    assert_within(merged, values, alpha)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_agrees_with_ddsketch(alpha):
    rng = np.random.default_rng(5)
    values = np.concatenate([lognormal(rng)[:5000], pareto(rng)[:5000], np.zeros(100)])
    reference = DDSketch(alpha)
    for v in values:
        reference.add(float(v))
    ours = Sketch(alpha)
    ours.add_many(values)
    for q in (0.0, 0.001, 0.01, 0.1, 0.25, *QS, 1.0):
        assert ours.quantile(q) == pytest.approx(reference.get_quantile_value(q), rel=1e-12), q
    assert ours.count == reference.count
    assert ours.sum == pytest.approx(reference.sum, rel=1e-12)


def test_keys_are_ddsketch_keys_even_on_bucket_boundaries():
    mapping = LogarithmicMapping(0.01)
    boundaries = [mapping.gamma**k for k in range(-300, 600)]
    representatives = [mapping.value(k) for k in range(-300, 600)]
    rng = np.random.default_rng(0)
    values = np.array(boundaries + representatives + list(rng.lognormal(0, 8, 20_000)))
    keys = Sketch(0.01)._keys_of(values)
    expected = np.array([mapping.key(float(v)) for v in values])
    assert np.array_equal(keys, expected)


def test_small_batches_bucket_like_one_large_batch():
    """Batches of up to 32 values are bucketed in plain Python: the same buckets, counts,
    extremes and sum as the numpy path, bucket boundaries included."""
    mapping = LogarithmicMapping(0.01)
    rng = np.random.default_rng(3)
    values = np.concatenate([[mapping.gamma**k for k in range(-50, 200)],
                             rng.lognormal(3, 2, 3000), np.zeros(7)])
    rng.shuffle(values)
    large, small = Sketch(0.01), Sketch(0.01)
    large.add_many(values)
    for i in range(0, values.size, 5):
        small.add_many(values[i:i + 5].tolist())
    assert small == large
    assert [a.tolist() for a in small.buckets()] == [a.tolist() for a in large.buckets()]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 31])
def test_quantiles_of_a_few_buckets_agree_with_ddsketch(n):
    """A sketch of a few buckets answers quantiles without numpy: same as ddsketch."""
    rng = np.random.default_rng(n)
    values = [0.0] * (n % 3) + list(rng.lognormal(4, 1.5, n))
    reference, ours = DDSketch(0.01), Sketch(0.01)
    for v in values:
        reference.add(float(v))
    ours.add_many(values)
    assert ours.bucket_count <= 32
    for q in np.linspace(0.0, 1.0, 41):
        assert ours.quantile(float(q)) == pytest.approx(
            reference.get_quantile_value(float(q)), rel=1e-12), q


def test_a_compacted_sketch_answers_and_changes_like_the_original():
    rng = np.random.default_rng(11)
    plain = Sketch(0.01)
    plain.add_many(rng.lognormal(4, 1.5, 500))
    compact = plain.copy()
    compact.compact()
    assert compact._bins is None and compact.bucket_count == plain.bucket_count > 32
    assert compact.quantiles(QS) == plain.quantiles(QS)
    assert compact.count_at_most(60.0) == plain.count_at_most(60.0)
    assert compact.to_builtins() == plain.to_builtins()
    more = Sketch(0.01)
    more.add_many([1.0, 55.0, 3000.0])
    for s in (plain, compact):  # a change brings the dict back
        s.merge(more)
        s.subtract(more)
        s.merge(more)
    assert compact == plain and compact.quantiles(QS) == plain.quantiles(QS)


def test_zero_nan_none_and_invalid_values():
    sketch = Sketch(0.01)
    sketch.add_many([0.0, None, float("nan"), 0.0, 5.0])
    assert sketch.count == 3
    assert sketch.min == 0.0 and sketch.max == 5.0
    assert sketch.quantile(0.0) == 0.0
    assert sketch.quantile(0.5) == 0.0  # rank 1 of [0, 0, 5]
    assert sketch.quantile(1.0) == pytest.approx(5.0, rel=0.01)
    sketch.add(None)
    assert sketch.count == 3
    with pytest.raises(ValueError, match="non-negative"):
        sketch.add_many([1.0, -0.5])
    with pytest.raises(ValueError, match="non-negative"):
        sketch.add(math.inf)
    assert sketch.count == 3  # rejected batches change nothing
    with pytest.raises(ValueError, match="quantile"):
        sketch.quantile(1.5)


def test_empty_sketch():
    sketch = Sketch(0.02)
    assert sketch.count == 0 and sketch.sum == 0.0
    assert sketch.min is None and sketch.max is None
    assert sketch.quantile(0.5) is None
    assert sketch.to_builtins() == {"a": 0.02}
    assert Sketch.from_builtins(sketch.to_builtins()) == sketch
    other = Sketch(0.02)
    other.add(3.0)
    sketch.merge(Sketch(0.02))
    assert sketch.count == 0
    sketch.merge(other)
    assert sketch == other


def batches(seed: int, count: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.lognormal(4.0, 2.0, size=int(rng.integers(1, 3000))) for _ in range(count)]


def test_merge_is_order_independent_and_equals_sketch_of_union():
    parts = batches(21)
    union = Sketch(0.01)
    union.add_many(np.concatenate(parts))
    sketches = []
    for part in parts:
        s = Sketch(0.01)
        s.add_many(part)
        sketches.append(s)
    results = []
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        merged = Sketch(0.01)
        for i in order:
            merged.merge(sketches[i])
        results.append(merged)
        assert merged == union
    # adding batch after batch into one sketch is the same as well
    incremental = Sketch(0.01)
    for part in parts:
        incremental.add_many(part)
    assert incremental == union
    assert all(r.quantiles(QS) == union.quantiles(QS) for r in results)
    # the partials themselves were not modified by merging
    assert [s.count for s in sketches] == [p.size for p in parts]


def test_equality_sees_differences():
    a, b = Sketch(0.01), Sketch(0.01)
    a.add_many([1.0, 2.0, 3.0])
    b.add_many([1.0, 2.0, 3.0])
    assert a == b
    b.add(3.0)
    assert a != b
    c = Sketch(0.01)
    c.add_many([1.0, 2.0, 3.0001])  # same buckets, other max and sum
    assert a != c


def test_round_trip_through_msgpack_and_json():
    sketch = Sketch(0.02)
    sketch.add_many(np.concatenate([np.zeros(7), *batches(4)]))
    data = sketch.to_builtins()
    for codec in (msgspec.msgpack, msgspec.json):
        back = Sketch.from_builtins(codec.decode(codec.encode(data)))
        assert back == sketch
        assert back.sum == sketch.sum and back.relative_accuracy == 0.02
        assert back.quantiles(QS) == sketch.quantiles(QS)
    assert all(isinstance(d, int) for d in data["k"])
    # keys are delta-encoded: after the first, mostly tiny ints
    assert max(data["k"][1:]) < 100
    # a round-tripped sketch still merges and adds
    back.add_many([1.0, 2.0])
    assert back.count == sketch.count + 2


def test_from_builtins_rejects_malformed():
    with pytest.raises(ValueError):
        Sketch.from_builtins({"a": 0.01, "k": [5, 0], "c": [1, 1], "s": 1.0, "lo": 1, "hi": 1})
    with pytest.raises(ValueError):
        Sketch.from_builtins({"a": 0.01, "k": [5], "c": [0], "s": 1.0, "lo": 1, "hi": 1})
    with pytest.raises(ValueError):
        Sketch.from_builtins({"a": 0.01, "k": [5, 1], "c": [1], "s": 1.0, "lo": 1, "hi": 1})


def test_merging_different_alpha_raises():
    a, b = Sketch(0.01), Sketch(0.02)
    b.add(1.0)
    with pytest.raises(ValueError, match="relative accuracy"):
        a.merge(b)
    assert a.count == 0


def test_bucket_bound_collapses_lowest_and_keeps_high_quantiles():
    values = np.geomspace(1e-6, 1e9, 50_000)
    bounded = Sketch(0.01, max_buckets=200)
    for chunk in np.array_split(values, 7):
        bounded.add_many(chunk)
    assert bounded.bucket_count == 200
    assert bounded.count == values.size
    for q in (0.9, 0.99, 0.999):
        truth = exact(values, q)
        assert abs(bounded.quantile(q) - truth) <= 0.01 * truth * (1 + 1e-12)
    # collapsed low quantiles are over-estimated, never lost from the count
    assert bounded.quantile(0.0) > values[0] * 1.01
    assert Sketch.from_builtins(bounded.to_builtins()) == bounded
    unbounded = Sketch(0.01)
    unbounded.add_many(values)
    assert unbounded.bucket_count > 200


def test_count_at_most():
    sketch = Sketch(0.01)
    sketch.add_many([0.0, 10.0, 100.0, 1000.0, 1000.0, 5000.0])
    assert sketch.count_at_most(-1.0) == 0
    assert sketch.count_at_most(0.0) == 1
    assert sketch.count_at_most(500.0) == 3
    assert sketch.count_at_most(1000.0) == 5
    assert sketch.count_at_most(math.inf) == 6


def test_add_accepts_numpy_lists_and_iterators_alike():
    values = [3.0, 1.0, 2.0, 250.0]
    a, b, c = Sketch(), Sketch(), Sketch()
    a.add_many(np.array(values))
    b.add_many(values)
    c.add_many(v for v in values)
    d = Sketch()
    for v in values:
        d.add(v)
    assert a == b == c == d


@pytest.mark.parametrize("data", [
    {"a": 0.01, "k": [5, 1], "c": [1]},  # a key without a count
    {"a": 0.01, "k": [5], "c": [1, 2]},  # a count without a key
    {"a": 0.01, "k": [5, 0], "c": [1, 1], "s": 2.0, "lo": 1.0, "hi": 1.0},  # keys repeat
    {"a": 0.01, "k": [5, 2], "c": [1, 0], "s": 2.0, "lo": 1.0, "hi": 1.0},  # empty bucket
    {"a": 0.01, "z": -1},  # negative zero count
])
def test_malformed_builtins_are_refused(data):
    with pytest.raises(ValueError, match="malformed sketch"):
        Sketch.from_builtins(data)
