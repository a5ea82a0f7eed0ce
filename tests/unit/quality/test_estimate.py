"""The accuracy estimate from confidences (CBPE-style): coverage of its interval on a
calibrated model, a mis-calibrated model learned from labels, covariate shift, the
min_labels gate, decay towards a changed model, and the save/restore round trip."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from pipeline.quality.estimate import Calibration, Estimate
from pipeline.quality.records import confidence_bin

BINS = 10


def histogram(confidences: np.ndarray, bins: int = BINS) -> list[int]:
    """Inferences per bin, binned by the pipeline's own ``confidence_bin``."""
    counts = [0] * bins
    for c in confidences.tolist():
        counts[confidence_bin(c, bins)] += 1
    return counts


def learn(cal: Calibration, confidences: np.ndarray, correct: np.ndarray) -> None:
    """A window's labelled outcomes, learned at once."""
    counts, right = [0] * cal.bins, [0] * cal.bins
    for c, ok in zip(confidences.tolist(), correct.tolist(), strict=True):
        b = confidence_bin(c, cal.bins)
        counts[b] += 1
        right[b] += int(ok)
    cal.learn(counts, right)


def draw(rng: np.random.Generator, n: int, a: float, b: float,
         p_correct=lambda c: c) -> tuple[np.ndarray, np.ndarray]:
    """``n`` confidences ~ Beta(a, b) and whether each was right, P(right | c) = p_correct(c)."""
    confidences = rng.beta(a, b, n)
    return confidences, rng.random(n) < p_correct(confidences)


def test_calibrated_model_interval_covers_realised_accuracy() -> None:
    covered, widths = 0, []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        cal = Calibration(BINS)
        learn(cal, *draw(rng, 1000, 5, 2))
        confidences, correct = draw(rng, 300, 5, 2)
        est = cal.estimate(histogram(confidences))
        assert est is not None and est.inferences == 300 and est.labels_used == 1000
        covered += est.low <= correct.mean() <= est.high
        widths.append(est.high - est.low)
    # a 95 % interval: neither much too narrow nor uselessly wide
    assert 0.90 <= covered / 200 <= 0.99
    assert np.mean(widths) < 0.15


def test_overconfident_model_estimate_follows_labels_not_confidence() -> None:
    rng = np.random.default_rng(7)
    overconfident = lambda c: c**3  # noqa: E731 — says 0.9, is right 73 % of the time
    cal = Calibration(BINS)
    learn(cal, *draw(rng, 5000, 6, 2, overconfident))
    confidences, correct = draw(rng, 5000, 6, 2, overconfident)
    est = cal.estimate(histogram(confidences))
    assert est is not None
    realised, raw = correct.mean(), confidences.mean()
    assert raw - realised > 0.15  # the raw confidence would be far off
    assert abs(est.accuracy - realised) < 0.02
    assert est.low <= realised <= est.high
    assert not est.low <= raw <= est.high


def test_covariate_shift_lowers_the_estimate() -> None:
    rng = np.random.default_rng(11)
    cal = Calibration(BINS)
    learn(cal, *draw(rng, 5000, 8, 2))  # confident traffic while labels came in
    before_conf, before_ok = draw(rng, 4000, 8, 2)
    after_conf, after_ok = draw(rng, 4000, 3, 2)  # harder inputs, same model
    before = cal.estimate(histogram(before_conf))
    after = cal.estimate(histogram(after_conf))
    assert before is not None and after is not None
    assert before.accuracy - after.accuracy > 0.15
    assert abs((before.accuracy - after.accuracy) - (before_ok.mean() - after_ok.mean())) < 0.03
    assert after.low <= after_ok.mean() <= after.high
    # bins the labelled past barely reached are less certain: a wider interval
    assert after.stderr > before.stderr


def test_min_labels_gate_and_empty_window() -> None:
    cal = Calibration(BINS)
    window = [0] * 8 + [10, 10]
    for i in range(199):
        cal.learn_one(0.95, i % 10 != 0)
    assert cal.labelled == 199
    assert cal.estimate(window) is None
    cal.learn_one(0.95, True)
    est = cal.estimate(window)
    assert isinstance(est, Estimate) and est.labels_used == 200
    assert cal.estimate(window, min_labels=201) is None
    assert cal.estimate([0] * BINS) is None
    with pytest.raises(ValueError, match="bins"):
        cal.estimate([1, 2, 3])
    with pytest.raises(ValueError, match="negative"):
        cal.estimate([-1] + [0] * 9)
    with pytest.raises(ValueError, match="level"):
        cal.estimate(window, level=1.0)


def test_sparse_bins_fall_back_to_raw_confidence() -> None:
    cal = Calibration(BINS)
    cal.learn([0] * 9 + [500], [0] * 9 + [300])  # only the top bin has labels
    p = cal.probabilities()
    assert p[:9] == pytest.approx([(b + 0.5) / BINS for b in range(9)])
    assert p[9] == pytest.approx((300 + 2 * 0.95) / 502)
    # a window in an unlabelled bin: the midpoint, with the prior's wide uncertainty
    est = cal.estimate([0, 0, 0, 0, 0, 0, 100, 0, 0, 0])
    assert est is not None and est.accuracy == pytest.approx(0.65)
    assert est.stderr == pytest.approx(math.sqrt(0.65 * 0.35 * (1 / 100 + 1 / 3)))


def test_learn_one_and_learn_agree() -> None:
    rng = np.random.default_rng(3)
    confidences, correct = draw(rng, 800, 2, 2)
    one, batch = Calibration(BINS), Calibration(BINS)
    for c, ok in zip(confidences.tolist(), correct.tolist(), strict=True):
        one.learn_one(c, ok)
    learn(batch, confidences, correct)
    assert one.probabilities() == pytest.approx(batch.probabilities())
    assert one.labelled == batch.labelled == 800


def test_invalid_learning_is_refused() -> None:
    cal = Calibration(BINS)
    with pytest.raises(ValueError, match="correct <= counts"):
        cal.learn([1] * BINS, [2] + [0] * 9)
    with pytest.raises(ValueError, match="bins"):
        cal.learn([1, 1], [0, 0])
    with pytest.raises(ValueError, match="finite"):
        cal.learn_one(math.nan, True)
    assert cal.labelled == 0
    with pytest.raises(ValueError):
        Calibration(bins=0)
    with pytest.raises(ValueError):
        Calibration(memory=0)


def test_decay_follows_a_changed_model() -> None:
    rng = np.random.default_rng(5)
    broken = lambda c: np.full_like(c, 0.5)  # noqa: E731 — a bad release: a coin flip
    forgetful, hoarder = Calibration(BINS, memory=1000), Calibration(BINS, memory=10**9)
    for cal in (forgetful, hoarder):
        learn(cal, *draw(np.random.default_rng(1), 5000, 8, 2))
    assert forgetful.labelled == pytest.approx(1000)
    assert forgetful.probabilities()[9] > 0.9
    for _ in range(10):  # ten windows of 500 labels from the changed model
        conf, ok = draw(rng, 500, 8, 2, broken)
        learn(forgetful, conf, ok)
        learn(hoarder, conf, ok)
    assert forgetful.labelled == pytest.approx(1000)
    window = histogram(draw(rng, 1000, 8, 2)[0])
    est, stale = forgetful.estimate(window), hoarder.estimate(window)
    assert est is not None and stale is not None
    assert abs(est.accuracy - 0.5) < 0.04  # old evidence weighs (2/3)^10 < 2 %
    assert stale.accuracy > 0.6  # without decay half the evidence is the old model's


def test_merge_adds_evidence() -> None:
    a, b = Calibration(BINS), Calibration(BINS)
    a.learn([0] * 9 + [100], [0] * 9 + [90])
    b.learn([0] * 9 + [100], [0] * 9 + [70])
    a.merge(b)
    assert a.labelled == 200
    assert a.probabilities()[9] == pytest.approx((160 + 1.9) / 202)
    with pytest.raises(ValueError):
        a.merge(Calibration(bins=5))


def test_round_trip_through_msgpack() -> None:
    rng = np.random.default_rng(9)
    cal = Calibration(BINS, memory=700)
    learn(cal, *draw(rng, 1000, 5, 2))
    data = msgspec.msgpack.decode(msgspec.msgpack.encode(cal.to_builtins()))
    back = Calibration.from_builtins(data, bins=BINS, memory=700)
    assert back.probabilities() == cal.probabilities()
    assert back.labelled == pytest.approx(cal.labelled)
    window = histogram(draw(rng, 200, 5, 2)[0])
    assert back.estimate(window) == cal.estimate(window)
    est = cal.estimate(window)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(est), type=Estimate) == est
    # a smaller memory applies on restore
    assert Calibration.from_builtins(data, bins=BINS, memory=100).labelled == pytest.approx(100)


@pytest.mark.parametrize("data", [
    {}, {"format": 2, "n": [0.0] * BINS, "k": [0.0] * BINS},
    {"format": 1, "n": [0.0] * 5, "k": [0.0] * 5},  # another number of bins
    {"format": 1, "n": [1.0] * BINS, "k": [2.0] * BINS},
    {"format": 1, "n": [1.0] * BINS, "k": [0.0] * (BINS - 1)},
    {"format": 1, "n": ["x"] * BINS, "k": [0.0] * BINS},
    {"format": 1, "n": [math.inf] * BINS, "k": [0.0] * BINS},
    [],
])
def test_garbage_is_refused(data: object) -> None:
    with pytest.raises(ValueError):
        Calibration.from_builtins(data, bins=BINS)  # type: ignore[arg-type]
