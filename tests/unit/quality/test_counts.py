"""QualityCounts: scores against scikit-learn and hand-computed values, class folding,
merges equal to one pass, the save/restore round trip and the QualityWindow contract."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from pipeline.quality.counts import NONE, OTHER, QualityCounts
from pipeline.quality.records import Outcome
from schemas.quality import ClassScores, QualityWindow

METRIC_KEYS = {
    "inferences", "feedback", "labelled", "label_coverage", "label_delay_p50_s",
    "label_delay_p90_s", "label_delay_p99_s", "accuracy", "precision_macro", "recall_macro",
    "f1_macro", "classes", "confusion", "ece", "mae", "rmse", "satisfaction_mean",
    "satisfaction_count", "thumbs_down_rate", "business_value_sum", "business_value_count",
    "business_value_per_request",
}


def label(prediction, truth, confidence=None, delay=1.0) -> Outcome:
    return Outcome("f", "label", 100.0, 100.0 + delay, prediction=prediction,
                   confidence=confidence, label=truth)


def satisfaction(score: float) -> Outcome:
    return Outcome("f", "satisfaction", 0.0, 1.0, satisfaction=score)


def business(value: float) -> Outcome:
    return Outcome("f", "business", 0.0, 1.0, value=value)


def counted(outcomes, **kwargs) -> QualityCounts:
    q = QualityCounts(**kwargs)
    for o in outcomes:
        q.add(o)
    return q


def classification(rng: np.random.Generator, n: int, k: int) -> tuple[list[str], list[str]]:
    """Labels from classes 0..k-2, predictions from 1..k-1 (class 0 is only labelled, class
    k-1 only predicted), right about half the time."""
    truth = rng.integers(0, k - 1, n)
    guess = np.where(rng.random(n) < 0.5, truth, rng.integers(1, k, n))
    guess = np.where(guess == 0, 1, guess)
    return [f"c{t:02d}" for t in truth], [f"c{g:02d}" for g in guess]


# --------------------------------------------------------------------------- classification
def test_tiny_case_by_hand():
    q = counted(label(p, t) for p, t in (("a", "a"), ("b", "a"), ("b", "b"), ("a", "c")))
    m = q.metrics()
    assert m["accuracy"] == 0.5
    assert m["confusion"] == {"a": {"a": 1, "b": 1}, "b": {"b": 1}, "c": {"a": 1}}
    assert m["classes"] == {
        "a": ClassScores(precision=0.5, recall=0.5, f1=0.5, support=2),
        "b": ClassScores(precision=0.5, recall=1.0, f1=pytest.approx(2 / 3), support=1),
        "c": ClassScores(precision=0.0, recall=0.0, f1=0.0, support=1),
    }
    assert m["precision_macro"] == pytest.approx(1 / 3)
    assert m["recall_macro"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx(7 / 18)
    assert m["mae"] is None and m["ece"] is None


@pytest.mark.parametrize(("seed", "k", "n"), [(1, 2, 40), (2, 3, 200), (3, 7, 500),
                                             (4, 20, 1000)])
def test_classification_equals_sklearn(seed, k, n):
    truth, guess = classification(np.random.default_rng(seed), n, k)
    m = counted(label(p, t) for p, t in zip(guess, truth, strict=True)).metrics()
    labels = sorted(set(truth) | set(guess))
    assert labels[0] not in guess and labels[-1] not in truth  # one-sided classes present
    p, r, f, s = precision_recall_fscore_support(truth, guess, labels=labels, average=None,
                                                 zero_division=0)
    assert list(m["classes"]) == labels
    for i, name in enumerate(labels):
        c = m["classes"][name]
        assert (c.precision, c.recall, c.f1) == pytest.approx((p[i], r[i], f[i]), abs=1e-12)
        assert c.support == s[i]
    macro = precision_recall_fscore_support(truth, guess, labels=labels, average="macro",
                                            zero_division=0)
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx(
        macro[:3], abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, guess), abs=1e-12)
    matrix = confusion_matrix(truth, guess, labels=labels)
    assert {a: {p: int(matrix[i, j]) for j, p in enumerate(labels) if matrix[i, j]}
            for i, a in enumerate(labels) if matrix[i].any()} == m["confusion"]


def test_class_names_numbers_booleans_and_missing_predictions():
    q = counted([label(1, "1"), label(1.0, 1.0), label("1.0", 1), label(True, "true"),
                 label(False, 0), label(None, "x"), label(2.5, "2.5")])
    m = q.metrics()
    # 1 == "1" (1 vs 1.0 is a regression pair); the string "1.0" is not "1"; booleans
    # are classes, not numbers
    assert m["confusion"] == {"1": {"1": 1, "1.0": 1}, "true": {"true": 1},
                              "0": {"false": 1}, "x": {NONE: 1}, "2.5": {"2.5": 1}}
    assert m["accuracy"] == 0.5
    assert (m["labelled"], m["mae"]) == (7, 0.0)


def test_numbers_on_both_sides_are_regression_not_classes():
    q = counted([label(1, 1.0), label(2.0, 3)])
    m = q.metrics()
    assert m["accuracy"] is None and m["confusion"] == {} and m["classes"] == {}
    assert (m["mae"], m["rmse"]) == (0.5, pytest.approx(math.sqrt(0.5)))
    assert m["labelled"] == 2


def test_ece_by_hand():
    q = counted([label("a", "a", 0.95), label("a", "b", 0.95), label("a", "b", 0.15),
                 label("b", "b", 0.35), label("a", "a")])  # the last has no confidence
    # bin 9: n=2, acc 0.5, conf 0.95; bin 1: n=1, acc 0, conf 0.15; bin 3: n=1, acc 1, 0.35
    expected = 2 / 4 * 0.45 + 1 / 4 * 0.15 + 1 / 4 * 0.65
    assert q.metrics()["ece"] == pytest.approx(expected, abs=1e-12)
    count, correct = q.calibration
    assert count == [0, 1, 0, 1, 0, 0, 0, 0, 0, 2] and correct == [0, 0, 0, 1, 0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize("bins", [2, 10, 15])
def test_ece_equals_a_numpy_reference(bins):
    rng = np.random.default_rng(bins)
    conf = rng.random(300)
    right = rng.random(300) < conf
    conf[:3] = [0.0, 1.0, 0.5]
    q = counted((label("a", "a" if r else "b", float(c)) for c, r in zip(conf, right,
                                                                          strict=True)),
                bins=bins)
    index = np.minimum(bins - 1, (conf * bins).astype(int))
    ece = sum(abs(right[index == b].mean() - conf[index == b].mean()) * (index == b).sum()
              for b in range(bins) if (index == b).any()) / conf.size
    assert q.metrics()["ece"] == pytest.approx(ece, abs=1e-12)
    assert q.calibration == (np.bincount(index, minlength=bins).tolist(),
                             np.bincount(index, weights=right, minlength=bins).astype(int)
                             .tolist())


def test_regression_equals_sklearn():
    rng = np.random.default_rng(7)
    truth = rng.normal(10, 3, 400)
    guess = truth + rng.normal(0, 1, 400)
    ints = rng.integers(0, 20, 50)
    outcomes = [label(float(p), float(t)) for p, t in zip(guess, truth, strict=True)]
    outcomes += [label(int(i), float(i) + 0.5) for i in ints]
    m = counted(outcomes).metrics()
    y_true = [o.label for o in outcomes]
    y_pred = [o.prediction for o in outcomes]
    assert m["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred), rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y_true, y_pred)),
                                      rel=1e-12)
    assert m["accuracy"] is None and m["labelled"] == 450


# --------------------------------------------------------------------------- other feedback
def test_satisfaction_business_coverage_and_delays():
    q = QualityCounts(thumbs_down_below=0.5)
    q.add_inference(0.9, n=8)
    q.add_inference(None, n=2)
    for s in (0.0, 0.4, 0.5, 1.0):
        q.add(satisfaction(s))
    for v in (3.0, -1.0, 2.5):
        q.add(business(v))
    delays = [1.0, 2.0, 3.0, 100.0]
    for d in delays:
        q.add(label("a", "a", delay=d))
    m = q.metrics()
    assert (m["inferences"], m["feedback"], m["labelled"]) == (10, 11, 4)
    assert m["label_coverage"] == 0.4
    assert (m["satisfaction_mean"], m["satisfaction_count"], m["thumbs_down_rate"]) == (
        pytest.approx(0.475), 4, 0.5)
    assert (m["business_value_sum"], m["business_value_count"]) == (4.5, 3)
    assert m["business_value_per_request"] == pytest.approx(0.45)
    assert q.confidence_histogram == [0] * 9 + [8]
    # lower-rank convention: the value at rank floor(q * (n - 1)), within 1 %
    for key, expected in (("label_delay_p50_s", 2.0), ("label_delay_p90_s", 3.0),
                          ("label_delay_p99_s", 3.0)):
        assert m[key] == pytest.approx(expected, rel=0.01)


def test_undefined_metrics_are_none():
    m = QualityCounts().metrics()
    assert set(m) == METRIC_KEYS
    assert {k for k, v in m.items() if v is None} == METRIC_KEYS - {
        "inferences", "feedback", "labelled", "classes", "confusion", "satisfaction_count",
        "business_value_sum", "business_value_count"}
    q = counted([business(5.0), label("a", "a"), label("a", "b")])
    m = q.metrics()
    assert m["label_coverage"] is None and m["business_value_per_request"] is None
    q.add_inference(None)
    assert q.metrics()["label_coverage"] == 1.0  # 2 labels for 1 inference: clamped


def test_odd_values_are_skipped_not_raised():
    nan, inf = math.nan, math.inf
    q = QualityCounts()
    q.add_inference(nan)
    q.add_inference(inf)
    q.add_inference(1e308)
    q.add_inference(-3.0)
    for o in (label("a", "a", confidence=nan), label("a", "a", confidence=7.0, delay=inf),
              label(1e308, -1e308), label(10**400, "1"), label(10**400, 1), label(nan, 1.0),
              label("x", None),
              satisfaction(nan), business(inf), business(None),
              Outcome("f", "rating", 0.0, 1.0)):
        q.add(o)
    m = q.metrics()
    assert (m["inferences"], m["feedback"], m["labelled"]) == (4, 11, 7)
    assert q.confidence_histogram == [1] + [0] * 8 + [1]  # NaN and inf skipped, clamped
    assert q.calibration == ([0] * 9 + [1], [0] * 9 + [1])  # 7.0 clamped to 1.0
    assert m["ece"] == 0.0
    assert m["mae"] is None and m["satisfaction_count"] == 0 and m["business_value_count"] == 0
    assert m["confusion"] == {"a": {"a": 2}, NONE: {"x": 1}, "1": {str(10**400): 1}}
    msgspec.json.encode(window(m))


# --------------------------------------------------------------------------- class folding
def reference_scores(truth, guess, kept):
    """Scores by brute force, classes outside ``kept`` folded, hits only on equal names."""
    fold = [(t if t in kept else OTHER, p if p in kept else OTHER, t == p)
            for t, p in zip(truth, guess, strict=True)]
    names = sorted({t for t, _, _ in fold} | {p for _, p, _ in fold})
    out = {}
    for c in names:
        hits = sum(1 for t, _, hit in fold if t == c and hit)
        support = sum(1 for t, _, _ in fold if t == c)
        predicted = sum(1 for _, p, _ in fold if p == c)
        out[c] = (hits / predicted if predicted else 0.0, hits / support if support else 0.0,
                  2 * hits / (support + predicted), support)
    return out


def test_classes_beyond_the_cap_fold_into_other():
    rng = np.random.default_rng(11)
    truth, guess = classification(rng, 600, 12)
    q = counted((label(p, t) for p, t in zip(guess, truth, strict=True)), max_classes=4)
    m = q.metrics()
    kept = set(sorted(set(truth) | set(guess))[:4])  # the smallest names, whatever came first
    assert set(m["classes"]) == kept | {OTHER}
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, guess))  # folds are not hits
    for name, (p, r, f, s) in reference_scores(truth, guess, kept).items():
        c = m["classes"][name]
        assert (c.precision, c.recall, c.f1, c.support) == pytest.approx((p, r, f, s))
    assert m["classes"][OTHER].precision < 1.0  # OTHER -> OTHER holds misses too
    assert sum(map(sum, (row.values() for row in m["confusion"].values()))) == 600


def test_a_flood_of_classes_keeps_memory_bounded():
    q = QualityCounts(max_classes=5)
    for i in range(5000):
        q.add(label(f"p{i}", f"t{i}"))
        q.add(label(f"s{i}", f"s{i}"))
    m = q.metrics()
    assert len(m["confusion"]) <= 6 and all(len(row) <= 6 for row in m["confusion"].values())
    assert m["accuracy"] == 0.5
    assert set(m["classes"]) == {OTHER, "p0", "p1", "p10", "p100", "p1000"}


# --------------------------------------------------------------------------- merging
def mixed_outcomes(seed: int, n: int) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    truth, guess = classification(rng, n, 9)
    conf = rng.random(n)
    delays = rng.exponential(300.0, n)
    out: list[Outcome] = []
    for i in range(n):
        out.append(label(guess[i], truth[i], float(conf[i]) if i % 3 else None,
                         float(delays[i])))
        if i % 4 == 0:
            out.append(label(float(rng.normal()), float(rng.normal()), delay=float(delays[i])))
        if i % 5 == 0:
            out.append(satisfaction(float(rng.random())))
        if i % 7 == 0:
            out.append(business(float(rng.normal(2.0))))
    return out


def assert_same_metrics(a: dict, b: dict) -> None:
    assert set(a) == set(b) == METRIC_KEYS
    assert a["confusion"] == b["confusion"]
    for key in METRIC_KEYS - {"classes", "confusion"}:
        assert a[key] == pytest.approx(b[key], rel=1e-12), key
    assert list(a["classes"]) == list(b["classes"])
    for name, scores in a["classes"].items():
        assert msgspec.structs.astuple(scores) == pytest.approx(
            msgspec.structs.astuple(b["classes"][name]), rel=1e-12)


@pytest.mark.parametrize("max_classes", [50, 3])
def test_merge_equals_one_pass(max_classes):
    outcomes = mixed_outcomes(5, 900)
    confidences = np.random.default_rng(6).random(1200)
    whole = QualityCounts(max_classes=max_classes)
    parts = [QualityCounts(max_classes=max_classes) for _ in range(4)]
    rng = np.random.default_rng(8)
    for o, part in zip(outcomes, rng.integers(0, 4, len(outcomes)), strict=True):
        whole.add(o)
        parts[part].add(o)
    for c, part in zip(confidences, rng.integers(0, 4, confidences.size), strict=True):
        whole.add_inference(float(c))
        parts[part].add_inference(float(c))
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        merged = QualityCounts(max_classes=max_classes)
        for i in order:
            merged.merge(parts[i])
        assert_same_metrics(merged.metrics(), whole.metrics())
        assert merged.confidence_histogram == whole.confidence_histogram
        assert merged.calibration == whole.calibration
    if max_classes == 3:
        assert OTHER in whole.metrics()["classes"]
    # the merged delay quantiles are the one pass's, within 1 % of the exact order statistic
    delays = sorted(o.delay_seconds for o in outcomes if o.kind == "label")
    m = merged.metrics()
    for q, key in ((0.5, "label_delay_p50_s"), (0.9, "label_delay_p90_s"),
                   (0.99, "label_delay_p99_s")):
        exact = delays[math.floor(q * (len(delays) - 1))]
        assert abs(m[key] - exact) <= 0.01 * exact


def test_merge_refuses_other_bins_and_itself():
    q = QualityCounts(bins=10)
    with pytest.raises(ValueError, match="bins"):
        q.merge(QualityCounts(bins=5))
    with pytest.raises(ValueError, match="themselves"):
        q.merge(q)


# --------------------------------------------------------------------------- save / restore
@pytest.mark.parametrize("max_classes", [50, 3])
def test_round_trip_through_msgpack_and_json(max_classes):
    q = counted(mixed_outcomes(9, 300), max_classes=max_classes)
    q.add_inference(0.3, n=500)
    for codec in (msgspec.msgpack, msgspec.json):
        data = codec.decode(codec.encode(q.to_builtins()))
        back = QualityCounts.from_builtins(data, max_classes=max_classes)
        assert back.to_builtins() == q.to_builtins()
        assert_same_metrics(back.metrics(), q.metrics())
        assert back.inferences == q.inferences
        assert back.confidence_histogram == q.confidence_histogram


def test_empty_counts_save_as_nothing_and_restore_empty():
    q = QualityCounts()
    assert q.empty() and q.to_builtins() == {}
    assert QualityCounts.from_builtins({}).empty()
    q.add_inference(None)
    assert not q.empty()
    q = QualityCounts()
    q.add(business(1.0))
    assert not q.empty()
    assert not QualityCounts.from_builtins(q.to_builtins()).empty()


def test_restoring_with_a_lower_cap_folds():
    q = counted(label(p, t) for p, t in (("a", "a"), ("b", "b"), ("c", "c"), ("d", "a")))
    back = QualityCounts.from_builtins(q.to_builtins(), max_classes=2)
    m = back.metrics()
    assert m["confusion"] == {"a": {"a": 1, OTHER: 1}, "b": {"b": 1}, OTHER: {OTHER: 1}}
    # c -> c stays a hit once folded; d was predicted for a: OTHER's precision is 1 / 2
    assert m["accuracy"] == 0.75
    assert m["classes"][OTHER] == ClassScores(precision=0.5, recall=1.0, f1=2 / 3, support=1)


@pytest.mark.parametrize("data", [
    {"i": -1}, {"i": "3"}, {"l": True}, {"h": [1, 2]}, {"h": "abc"},
    {"c": [[0] * 10, [0] * 10]}, {"c": [[0] * 10, [0] * 10, ["x"] * 10]},
    {"r": [1, 2.0]}, {"s": [1, math.nan, 0]}, {"b": [1, "2"]},
    {"m": {"a": {"b": -2}}}, {"m": ["a"]}, {"m": {"a": 3}}, {"d": {"k": [1], "c": []}},
    {"o": 1.5},
])
def test_malformed_data_is_refused(data):
    with pytest.raises(ValueError, match="malformed"):
        QualityCounts.from_builtins(data)


# --------------------------------------------------------------------------- the contract
def window(metrics: dict) -> QualityWindow:
    """The metrics as a QualityWindow, validated as a decoder would."""
    built = QualityWindow(**metrics, series_key="model=m", basis="inference_time",
                          window_start=0.0, window_end=60.0)
    return msgspec.json.decode(msgspec.json.encode(built), type=QualityWindow)


def test_metrics_make_a_valid_quality_window():
    q = counted(mixed_outcomes(3, 200), max_classes=4)
    q.add_inference(0.5, n=300)
    m = q.metrics()
    assert set(m) == METRIC_KEYS
    assert set(QualityWindow.__struct_fields__) >= METRIC_KEYS
    w = window(m)
    assert (w.accuracy, w.classes, w.confusion, w.labelled) == (
        m["accuracy"], m["classes"], m["confusion"], m["labelled"])
    assert w.mae == m["mae"] and w.label_delay_p99_s == m["label_delay_p99_s"]
    assert window(QualityCounts().metrics()).accuracy is None


def test_merging_builtins_equals_merging_the_counts_they_stand_for() -> None:
    """The join's per-record tallies are folded in without building counts: same result
    as the full path, for a tally and for counts with labels; malformed changes nothing."""
    from pipeline.quality.counts import Tally

    tally = Tally(10)
    for c in (0.05, 0.5, 0.95, None, 0.95):
        tally.add_inference(c)
    labelled = counted([label("cat", "cat", 0.9), label("cat", "dog", 0.6)])
    for data in (tally.to_builtins(), labelled.to_builtins(), {}):
        fast, full = counted([label("a", "a", 0.7)]), counted([label("a", "a", 0.7)])
        fast.merge_builtins(data)
        full.merge(QualityCounts.from_builtins(data))
        assert fast.to_builtins() == full.to_builtins()
    q = counted([label("a", "a", 0.7)])
    before = q.to_builtins()
    for bad in ({"i": -1}, {"i": 3, "h": [1, 2]}, {"i": True}, {"i": 2, "h": [0] * 9 + [-1]}):
        with pytest.raises(ValueError, match="malformed quality counts"):
            q.merge_builtins(bad)
        assert q.to_builtins() == before
