"""Anomaly scorers: warm-up, scores in [0, 1], outliers above typical windows, exact resume
from a checkpoint — one contract for every scorer — plus the evaluation behind the default."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import rankdata

from pipeline.scoring.anomaly import SCORERS, AnomalyScorer, HalfSpaceTreesScorer, MedianMADScorer

ALL = sorted(SCORERS)
NAMES = ("latency_p99_ms", "error_rate", "confidence_mean", "output_tokens_p50", "cost_usd")
CENTER = np.array([300.0, 0.01, 0.85, 250.0, 0.002])
SPREAD = np.array([20.0, 0.002, 0.02, 20.0, 0.0002])


def windows(seed: int, n: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    rows = CENTER + SPREAD * rng.normal(size=(n, len(NAMES)))
    return [dict(zip(NAMES, map(float, row), strict=True)) for row in rows]


def outlier(sigmas: float = 10.0) -> dict[str, float]:
    return dict(zip(NAMES, map(float, CENTER + sigmas * SPREAD), strict=True))


def make(name: str, **params) -> AnomalyScorer:
    return SCORERS[name](**params)


def score_then_learn(scorer: AnomalyScorer, stream) -> list[float | None]:
    out = []
    for x in stream:
        out.append(scorer.score_one(x))
        scorer.learn_one(x)
    return out


def test_every_scorer_is_registered():
    assert set(SCORERS) == {c.name for c in AnomalyScorer.__subclasses__()}
    for cls in SCORERS.values():
        assert ">>>" in (cls.__doc__ or "")


@pytest.mark.parametrize("name", ALL)
def test_warm_up_returns_none(name):
    scorer = make(name, warm_up=25) if name == "median_mad" else make(name, warm_up=25,
                                                                       window_size=25)
    scores = score_then_learn(scorer, windows(1, 40))
    assert scores[:25] == [None] * 25
    assert all(isinstance(s, float) for s in scores[25:])
    assert scorer.ready and scorer.n_learned == 40


@pytest.mark.parametrize("name", ALL)
def test_a_clear_outlier_scores_higher_than_typical_windows(name):
    scorer = make(name)
    score_then_learn(scorer, windows(2, 200))
    typical = [scorer.score_one(x) for x in windows(3, 50)]
    high = scorer.score_one(outlier())
    assert high > max(typical), (high, max(typical))
    assert high >= 0.9
    assert np.median(typical) < 0.5


@pytest.mark.parametrize("name", ALL)
def test_scores_are_in_the_unit_interval(name):
    scorer = make(name)
    scores = score_then_learn(scorer, windows(4, 150))
    extremes = [outlier(s) for s in (-1e6, -50, -3, 0, 3, 50, 1e6)]
    scores += [scorer.score_one(x) for x in extremes]
    scores += [scorer.score_one({"latency_p99_ms": 1e12})]
    values = [s for s in scores if s is not None]
    assert len(values) == len(scores) - scorer.warm_up
    assert all(0.0 <= s <= 1.0 for s in values)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("k", [0, 1, 19, 20, 21, 57, 150])
def test_checkpoint_restore_gives_the_same_scores_as_an_uninterrupted_run(name, k):
    stream = windows(5, 200)
    stream[120] = outlier()
    uninterrupted = make(name)
    expected = score_then_learn(uninterrupted, stream)

    first = make(name)
    before = score_then_learn(first, stream[:k])
    data = first.checkpoint()
    assert isinstance(data, bytes)
    resumed = make(name)
    resumed.restore(data)
    assert before + score_then_learn(resumed, stream[k:]) == expected
    assert resumed.n_learned == uninterrupted.n_learned
    assert resumed.checkpoint() == uninterrupted.checkpoint()


@pytest.mark.parametrize("name", ALL)
def test_restore_rejects_other_configurations_and_garbage(name):
    scorer = make(name)
    score_then_learn(scorer, windows(6, 30))
    data = scorer.checkpoint()
    with pytest.raises(ValueError, match="cannot be restored"):
        make(name, warm_up=30, **({"window_size": 20} if name == "half_space_trees" else {})
             ).restore(data)
    other = next(n for n in ALL if n != name)
    with pytest.raises(ValueError, match="cannot be restored"):
        make(other).restore(data)
    with pytest.raises(ValueError, match="checkpoint"):
        make(name).restore(b"\x01")


@pytest.mark.parametrize("name", ALL)
def test_missing_values_are_ignored_and_infinities_rejected(name):
    scorer = make(name)
    score_then_learn(scorer, windows(7, 100))
    x = windows(8, 1)[0]
    with_gaps = {**x, "cost_usd": None, "ttft_p99_ms": math.nan}
    without = {k: v for k, v in x.items() if k != "cost_usd"}
    assert scorer.score_one(with_gaps) == scorer.score_one(without)
    n = scorer.n_learned
    scorer.learn_one({"latency_p99_ms": None})  # nothing usable: not a learned window
    assert scorer.n_learned == n
    with pytest.raises(ValueError, match="infinite"):
        scorer.score_one({"latency_p99_ms": math.inf})


# ---------------------------------------------------------------------------- median/MAD
def test_mad_zscores_match_a_direct_computation():
    scorer = MedianMADScorer(window=50)
    stream = windows(9, 80)
    for x in stream:
        scorer.learn_one(x)
    x = windows(10, 1)[0]
    z = scorer.zscores(x)
    for name in NAMES:
        history = np.array([w[name] for w in stream[-50:]])  # sliding window: last 50 only
        median = np.median(history)
        expected = abs(x[name] - median) / (1.4826 * np.median(np.abs(history - median)))
        assert z[name] == pytest.approx(expected, rel=1e-12)
    top = max(z.values())
    assert scorer.score_one(x) == pytest.approx(1 / (1 + math.exp(-(top - 3.5) / 0.5)))


def test_mad_score_is_one_half_at_the_threshold_and_monotone():
    scorer = MedianMADScorer(warm_up=5)
    for v in (-2.0, -1.0, 0.0, 1.0, 2.0):
        scorer.learn_one({"x": v})
    scale = 1.4826 * 1.0  # MAD of -2..2 is 1
    assert scorer.score_one({"x": 3.5 * scale}) == pytest.approx(0.5)
    scores = [scorer.score_one({"x": z * scale}) for z in (0, 1, 2, 3, 4, 5, 8)]
    assert scores == sorted(scores) and scores[0] < 0.01 and scores[-1] > 0.999


def test_mad_min_scale_tames_a_constant_feature():
    default = MedianMADScorer(warm_up=5)
    tamed = MedianMADScorer(warm_up=5, min_scale={"error_rate": 0.01})
    for scorer in (default, tamed):
        for _ in range(30):
            scorer.learn_one({"error_rate": 0.0})
    assert default.score_one({"error_rate": 0.001}) == 1.0
    assert tamed.score_one({"error_rate": 0.001}) < 0.01
    assert tamed.score_one({"error_rate": 0.2}) > 0.99


def test_mad_unknown_features_give_no_score():
    scorer = MedianMADScorer(warm_up=3)
    for x in windows(11, 5):
        scorer.learn_one(x)
    assert scorer.score_one({"something_else": 1.0}) is None


# ---------------------------------------------------------------------------- half-space trees
def test_half_space_trees_limits_come_from_the_warm_up_data():
    scorer = HalfSpaceTreesScorer(warm_up=20, margin=1.0)
    stream = windows(12, 20)
    for x in stream[:19]:
        scorer.learn_one(x)
    assert scorer.limits == {}
    scorer.learn_one(stream[19])
    for name in NAMES:
        values = [x[name] for x in stream]
        lo, hi = min(values), max(values)
        assert scorer.limits[name] == pytest.approx((lo - (hi - lo), hi + (hi - lo)))
    with pytest.raises(ValueError, match="window_size"):
        HalfSpaceTreesScorer(warm_up=10, window_size=20)


def test_half_space_trees_seed_makes_scores_reproducible():
    stream = windows(13, 120)
    a = score_then_learn(HalfSpaceTreesScorer(seed=3), stream)
    b = score_then_learn(HalfSpaceTreesScorer(seed=3), stream)
    c = score_then_learn(HalfSpaceTreesScorer(seed=4), stream)
    assert a == b and a != c


# ---------------------------------------------------------------------------- evaluation
def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = rankdata(scores)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_evaluation_median_mad_beats_half_space_trees_on_single_metric_anomalies():
    """The evaluation behind the default (see pipeline.scoring.anomaly): one metric off by 4–8 σ."""
    results = {name: [] for name in ALL}
    for seed in (21, 22):
        rng = np.random.default_rng(seed)
        stream = windows(seed, 600)
        labels = np.zeros(600, dtype=bool)
        for i in rng.choice(np.arange(40, 600), 15, replace=False):
            labels[i] = True
            name = NAMES[rng.integers(len(NAMES))]
            j = NAMES.index(name)
            stream[i] = {**stream[i], name: float(
                stream[i][name] + rng.choice([-1, 1]) * rng.uniform(4, 8) * SPREAD[j])}
        for name in ALL:
            scores = score_then_learn(make(name), stream)
            mask = np.array([s is not None for s in scores])
            values = np.array([s for s in scores if s is not None])
            results[name].append(auc(values, labels[mask]))
    mad, hst = np.mean(results["median_mad"]), np.mean(results["half_space_trees"])
    assert mad > 0.95
    assert mad > hst + 0.1, results
