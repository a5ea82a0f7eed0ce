"""Change detectors: detect seeded shifts quickly, stay quiet on stationary series, and resume
from a checkpoint with exactly the detections of an uninterrupted run. Every detector runs
the same contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.scoring.detectors import DETECTORS, ADWINDetector, ChangeDetector, PageHinkleyDetector

# max windows from a 4 σ level shift to its detection (see each detector's docstring)
MAX_DELAY = {"adwin": 15, "page_hinkley": 8}
ALL = sorted(DETECTORS)


def make(name: str, **params) -> ChangeDetector:
    return DETECTORS[name](**params)


def detections(detector: ChangeDetector, series) -> list[int]:
    return [i for i, x in enumerate(series) if detector.update(x)]


def p99_series(seed: int, n: int = 1000) -> np.ndarray:
    """A stationary per-window p99 latency series (ms), with the skew of a tail quantile."""
    return 400.0 * np.random.default_rng(seed).lognormal(0.0, 0.08, n)


def shifted_series(seed: int) -> np.ndarray:
    """Error-rate-like series with a level shift of 4 σ at 200 and back at 400."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.02, 0.004, 200), rng.normal(0.036, 0.004, 200),
                           rng.normal(0.02, 0.004, 200)])


def test_every_detector_is_registered():
    assert set(DETECTORS) == {c.name for c in ChangeDetector.__subclasses__()}
    assert {"adwin": ADWINDetector, "page_hinkley": PageHinkleyDetector} == DETECTORS


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_detects_a_seeded_mean_shift_within_a_few_points(name, seed):
    found = detections(make(name), shifted_series(seed))
    up = [i for i in found if i >= 200]
    assert up, found
    assert up[0] - 200 <= MAX_DELAY[name], found
    assert not [i for i in found if i < 200], found  # nothing before the change
    down = [i for i in found if i >= 400]
    assert down and down[0] - 400 <= MAX_DELAY[name] + 30, found  # 30: recalibration


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_no_detection_on_a_stationary_series_of_1000_points(name, seed):
    detector = make(name)
    assert detections(detector, p99_series(seed)) == []
    assert detector.detections == 0 and detector.n == 1000


@pytest.mark.parametrize("name", ALL)
def test_a_single_spike_is_not_a_change_point(name):
    series = p99_series(21, 300)
    series[150] = 50_000.0  # one broken window: the anomaly scorer's job
    assert detections(make(name), series) == []


@pytest.mark.parametrize("name", ALL)
def test_detections_do_not_depend_on_the_series_unit(name):
    series = shifted_series(4)
    in_percent = detections(make(name), series * 100.0 + 3.0)
    assert detections(make(name), series) == in_percent
    assert in_percent  # not vacuous


@pytest.mark.parametrize("name", ALL)
def test_calibration_then_detection_state(name):
    detector = make(name)
    assert not detector.calibrated
    for x in shifted_series(5)[:29]:
        assert detector.update(x) is False
    assert not detector.calibrated
    detector.update(0.02)
    assert detector.calibrated and detector.n == 30
    assert detector.drift_detected is False


@pytest.mark.parametrize("name", ALL)
def test_a_detection_starts_a_new_regime_calibrated_on_the_new_level(name):
    series = shifted_series(8)
    detector = make(name)
    first = next(i for i, x in enumerate(series) if detector.update(x))
    assert first >= 200 and not detector.calibrated and detector.detections == 1
    resume = first + 1 + detector.calibration
    for x in series[first + 1: resume]:
        assert detector.update(x) is False
    assert detector.calibrated
    # calibrated on the new level (0.036): it stays quiet there until the level falls back
    later = [resume + i for i, x in enumerate(series[resume:]) if detector.update(x)]
    assert later and all(i >= 400 for i in later), later


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("k", [0, 1, 29, 30, 31, 150, 203, 210, 399, 405, 599])
def test_checkpoint_restore_gives_the_same_detections_as_an_uninterrupted_run(name, k):
    series = shifted_series(6)
    uninterrupted = make(name)
    expected = detections(uninterrupted, series)
    assert len(expected) >= 2  # detections on both sides of most k: not vacuous

    first = make(name)
    before = detections(first, series[:k])
    data = first.checkpoint()
    assert isinstance(data, bytes)
    resumed = make(name)  # a fresh process
    resumed.restore(data)
    after = [k + i for i in detections(resumed, series[k:])]
    assert before + after == expected
    assert resumed.n == uninterrupted.n and resumed.detections == uninterrupted.detections
    assert resumed.checkpoint() == uninterrupted.checkpoint()


@pytest.mark.parametrize("name", ALL)
def test_restore_keeps_the_drift_flag_of_the_checkpointed_point(name):
    series = shifted_series(7)
    detector = make(name)
    at = detections(detector, series)[0]
    detector = make(name)
    detections(detector, series[: at + 1])
    assert detector.drift_detected
    restored = make(name)
    restored.restore(detector.checkpoint())
    assert restored.drift_detected


@pytest.mark.parametrize("name", ALL)
def test_restore_rejects_other_configurations_and_garbage(name):
    detector = make(name)
    detections(detector, p99_series(8, 50))
    data = detector.checkpoint()
    with pytest.raises(ValueError, match="cannot be restored"):
        make(name, calibration=40).restore(data)
    other = next(n for n in ALL if n != name)
    with pytest.raises(ValueError, match="cannot be restored"):
        make(other).restore(data)
    with pytest.raises(ValueError, match="checkpoint"):
        make(name).restore(b"\x93\x01\x02\x03")


@pytest.mark.parametrize("name", ALL)
def test_missing_values_are_skipped_and_infinities_rejected(name):
    series = list(shifted_series(9))
    with_gaps = []
    for i, x in enumerate(series):
        with_gaps.append(x)
        if i % 7 == 0:
            with_gaps.append(None if i % 2 else math.nan)
    detector = make(name)
    got = [i for i, x in enumerate(with_gaps) if detector.update(x)]
    assert [with_gaps[i] for i in got] == [series[i] for i in detections(make(name), series)]
    assert detector.n == len(series)
    with pytest.raises(ValueError, match="infinite"):
        detector.update(math.inf)


def test_constant_calibration_still_detects_a_jump():
    detector = PageHinkleyDetector()
    series = [0.0] * 60 + [0.05] * 20  # error rate 0 for an hour, then 5 %
    found = detections(detector, series)
    assert found and 60 <= found[0] <= 65


def test_invalid_parameters():
    with pytest.raises(ValueError):
        ADWINDetector(calibration=2)
    with pytest.raises(ValueError):
        PageHinkleyDetector(clip=0.0)
    with pytest.raises(ValueError):
        PageHinkleyDetector(mode="sideways")
