"""SeriesMonitor: drift against the reference in force, change points, anomaly score,
exact resume from a checkpoint, and the WindowScores contract.

Windows are built as stage 1/2 build them: seeded InferenceEvents added to a
WindowProfile (add_events + add_drift), finalized into WindowMetrics, and the drift
histograms read with drift_profile(). Each window has its own seed, so scenarios share
their stable prefix (cached) and a change only alters the windows from where it starts.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache, lru_cache
from pathlib import Path

import msgspec
import numpy as np
import pytest

from pipeline.config import DriftSettings
from pipeline.scoring.anomaly import HalfSpaceTreesScorer, MedianMADScorer
from pipeline.scoring.detectors import ADWINDetector, PageHinkleyDetector
from pipeline.scoring.drift.reference import Reference
from pipeline.scoring.drift.thresholds import (
    ANOMALY_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    is_drift,
    threshold,
)
from pipeline.scoring.monitor import (
    CHANGE_METRICS,
    SHORT_NAMES,
    SeriesMonitor,
    monitor_spec,
    window_vector,
)
from pipeline.windows.drift_profile import DriftProfile
from pipeline.windows.profile import WindowProfile
from schemas.event import InferenceEvent
from schemas.metrics import WindowMetrics
from schemas.scores import DriftScore, WindowScores

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_700_000_000.0
LENGTH = 60.0  # one-minute windows
EVENTS = 300  # per window
SLO = 500.0
ACCURACY = 0.01
TIERS = ("free", "pro", "team")
MIX = (0.5, 0.3, 0.2)
SHIFTED_MIX = (0.3, 0.5, 0.2)  # 20 percentage points moved from "free" to "pro"
LABELS = {"model": "gpt-chat"}
KEY = "model=gpt-chat"
SETTINGS = DriftSettings(numeric_features=["x"], categorical_features=["tier"])
NAMES = {"feature.x": "numeric", "feature.tier": "categorical", "prediction": "categorical",
         "confidence": "numeric", "latency_ms": "numeric", "time_to_first_token_ms": "numeric",
         "input_tokens": "numeric", "output_tokens": "numeric", "cost_usd": "numeric"}
REGISTRY = {short: name for name, short in SHORT_NAMES.items()}
Window = tuple[WindowMetrics, DriftProfile]


# --------------------------------------------------------------------------- windows
def make_events(seed: int, i: int, *, x_shift: float = 0.0, mix: tuple[float, ...] = MIX,
                latency: float = 1.0, tail: float = 1.0, error_p: float = 0.01,
                n_errors: int | None = None) -> list[InferenceEvent]:
    """Window ``i`` of series ``seed``: x ~ N(50 + 10·x_shift, 10), tier ~ ``mix``,
    latency log-normal × ``latency`` (values above the window's 97th percentile also ×
    ``tail``: a tail spike), errors with probability ``error_p`` (exactly ``n_errors``)."""
    rng = np.random.default_rng([seed, i])
    n = EVENTS
    start = T0 + i * LENGTH
    x = rng.normal(50.0 + 10.0 * x_shift, 10.0, n)
    tier = rng.choice(TIERS, n, p=mix)
    positive = rng.random(n) < 0.6
    confidence = rng.beta(8, 2, n)
    lat = rng.lognormal(5.5, 0.4, n) * latency
    lat = np.where(lat > np.quantile(lat, 0.97), lat * tail, lat)
    ttft = rng.lognormal(4.0, 0.3, n) * latency  # a slower server is slower to start too
    tokens_in = rng.integers(50, 2000, n)
    tokens_out = rng.poisson(200, n) + 1
    failed = rng.random(n) < error_p
    if n_errors is not None:
        failed = np.arange(n) < n_errors
    return [InferenceEvent(
        event_id=f"{seed}-{i}-{j}", timestamp=start + j * LENGTH / n, model="gpt-chat",
        status="error" if failed[j] else "ok", latency_ms=float(lat[j]),
        time_to_first_token_ms=float(ttft[j]), input_tokens=int(tokens_in[j]),
        output_tokens=int(tokens_out[j]),
        cost_usd=float(tokens_in[j] * 1e-6 + tokens_out[j] * 4e-6),
        prediction="yes" if positive[j] else "no", confidence=float(confidence[j]),
        features={"x": float(x[j]), "tier": str(tier[j])},
    ) for j in range(n)]


@cache
def window(seed: int, i: int, **change) -> Window:
    """(metrics, drift profile) of window ``i``, built through WindowProfile."""
    events = make_events(seed, i, **change)
    profile = WindowProfile(ACCURACY)
    half = len(events) // 2
    for batch in (events[:half], events[half:]):  # stage 1 adds several batches
        profile.add_events(batch, SLO)
        profile.add_drift(batch, monitor_spec(SETTINGS, ACCURACY, operational=False))
    start = T0 + i * LENGTH
    metrics = profile.finalize(KEY, LABELS, start, start + LENGTH, version=1, slo_ms=SLO)
    return metrics, profile.drift_profile(operational=SETTINGS.operational)


def empty_window(i: int) -> Window:
    start = T0 + i * LENGTH
    profile = WindowProfile(ACCURACY)
    return (profile.finalize(KEY, LABELS, start, start + LENGTH, version=1, slo_ms=SLO),
            profile.drift_profile())


def run(monitor: SeriesMonitor, windows, pinned: Reference | None = None) -> list[WindowScores]:
    return [monitor.observe(m, p, pinned) for m, p in windows]


def stable(seed: int, n: int, start: int = 0) -> list[Window]:
    return [window(seed, i) for i in range(start, n)]


def changed(seed: int, n: int, at: int, **change) -> list[Window]:
    return [window(seed, i, **(change if i >= at else {})) for i in range(n)]


def pinned_reference(seed: int, windows: int, version: int, **change) -> Reference:
    merged = DriftProfile()
    for i in range(windows):
        merged.merge(window(seed, i, **change)[1])
    return Reference.pinned(merged, version=version, built_from=T0,
                            built_to=T0 + windows * LENGTH)


def by_name(scores: WindowScores, name: str) -> dict[str, DriftScore]:
    return {d.statistic: d for d in scores.drift if d.name == name}


# Scenario of the checkpoint test: stable, then a latency level shift at 50 and a shift of x
# at 60, so detectors fire and drift is reported after the split point.
def checkpoint_scenario(n: int = 80) -> list[Window]:
    out = []
    for i in range(n):
        change = {}
        if i >= 50:
            change["latency"] = 1.5
        if i >= 60:
            change["x_shift"] = 1.0
        out.append(window(11, i, **change))
    return out


@lru_cache(maxsize=1)
def uninterrupted() -> tuple[WindowScores, ...]:
    return tuple(run(SeriesMonitor(SETTINGS), checkpoint_scenario()))


# --------------------------------------------------------------------------- helpers
def test_monitor_spec_follows_settings():
    settings = DriftSettings(numeric_features=["x", "y"], categorical_features=["tier"],
                             prediction="numeric", confidence=False, operational=True)
    spec = monitor_spec(settings, 0.02)
    assert spec.numeric_features == ("x", "y") and spec.categorical_features == ("tier",)
    assert spec.prediction == "numeric" and spec.confidence is False
    assert spec.relative_accuracy == 0.02 and spec.operational is True
    assert monitor_spec(settings, 0.02, operational=False).operational is False
    assert monitor_spec(DriftSettings(operational=False), 0.01).operational is False
    assert list(monitor_spec(SETTINGS, ACCURACY).monitored()) == list(NAMES)


def test_window_vector_is_the_change_metrics_without_volume():
    metrics, profile = window(1, 0, error_p=0.05)
    vector = window_vector(metrics, profile)
    assert tuple(vector) == CHANGE_METRICS
    assert vector["latency_p99_ms"] == metrics.latency_p99_ms
    assert vector["error_rate"] == metrics.error_rate > 0
    assert vector["cost_per_request_usd"] == metrics.cost_per_request_usd
    assert vector["output_tokens_mean"] == pytest.approx(metrics.output_tokens_sum / EVENTS)
    events = make_events(1, 0, error_p=0.05)
    assert vector["confidence_mean"] == pytest.approx(np.mean([e.confidence for e in events]))
    assert vector["output_tokens_mean"] == pytest.approx(
        np.mean([e.output_tokens for e in events]))

    nothing = window_vector(*empty_window(0))
    assert nothing["error_rate"] is None and nothing["output_tokens_mean"] is None
    assert nothing["confidence_mean"] is None and nothing["latency_p99_ms"] is None


# --------------------------------------------------------------------------- stable series
def test_stable_series_reports_no_drift_against_the_trailing_reference_once_full():
    monitor = SeriesMonitor(SETTINGS)
    n_ref = SETTINGS.trailing_windows
    scores = run(monitor, stable(0, 60))
    for i, s in enumerate(scores):
        assert s.series_key == KEY and s.labels == LABELS and s.requests == EVENTS
        assert s.window_start == T0 + i * LENGTH and s.window_end == s.window_start + LENGTH
        assert s.drifted == [], (i, [d for d in s.drift if d.drifted])
        assert s.change_points == [], i
        if i < n_ref:  # fewer than trailing_windows held: no reference, no drift values
            assert (s.reference, s.reference_version, s.drift) == ("none", 0, []), i
            continue
        assert s.reference == "trailing" and s.reference_version == i, i
        assert {d.name for d in s.drift} == set(NAMES)
        for d in s.drift:
            assert d.kind == NAMES[d.name]
            assert d.value is not None
            counts = (d.current_count, d.reference_count)
            assert d.threshold == threshold(REGISTRY[d.statistic], *counts)
            assert d.drifted == is_drift(REGISTRY[d.statistic], d.value, current_count=counts[0],
                                         reference_count=counts[1])
            assert d.current_count == EVENTS and d.reference_count == n_ref * EVENTS
        assert set(by_name(s, "feature.x")) == {"psi", "js", "hellinger", "wasserstein", "ks"}
        assert set(by_name(s, "feature.tier")) == {"psi", "js", "hellinger", "chi2_p"}
    assert monitor.windows == 60


def test_stable_series_raises_no_anomaly_after_warm_up():
    monitor = SeriesMonitor(SETTINGS)
    scores = run(monitor, stable(0, 60))
    flagged = [(i, s.anomaly_score, s.anomaly_contributions) for i, s in enumerate(scores)
               if s.anomalous]
    assert flagged == []


# --------------------------------------------------------------------------- drift
@pytest.mark.parametrize(("name", "change"), [
    ("feature.x", {"x_shift": 1.0}),  # mean + 1 sigma
    ("feature.tier", {"mix": SHIFTED_MIX}),  # 20 percentage points of category mix
], ids=["mean_shift_1_sigma", "category_mix_20pp"])
def test_feature_shift_is_flagged_within_3_windows_on_that_feature_only(name, change):
    at = 30
    monitor = SeriesMonitor(SETTINGS)
    scores = run(monitor, changed(2, at + 3, at, **change))
    assert all(s.drifted == [] for s in scores[:at])
    after = scores[at:]
    assert all(s.drifted in ([], [name]) for s in after), [s.drifted for s in after]
    assert any(s.drifted == [name] for s in after)
    first = next(s for s in after if s.drifted)
    assert any(d.drifted for d in by_name(first, name).values())


def test_settings_thresholds_override_the_defaults():
    loose = {"psi": 99.0, "jensen_shannon": 1.0, "hellinger": 1.0, "wasserstein": 99.0,
             "kolmogorov_smirnov": 1.0, "chi_square": 0.0}
    windows = changed(3, 5, 3, x_shift=1.0)  # flagged from its second shifted window
    tight = SeriesMonitor(DriftSettings(numeric_features=["x"], categorical_features=["tier"],
                                        trailing_windows=3))
    assert run(tight, windows)[-1].drifted == ["feature.x"]
    relaxed = SeriesMonitor(DriftSettings(numeric_features=["x"], categorical_features=["tier"],
                                          trailing_windows=3, thresholds=loose))
    last = run(relaxed, windows)[-1]
    assert last.drifted == []
    ks = by_name(last, "feature.x")["ks"]  # the override holds at THRESHOLD_COUNT, scaled
    assert ks.threshold == threshold("kolmogorov_smirnov", ks.current_count, ks.reference_count,
                                     {**DEFAULT_THRESHOLDS, **loose})
    assert by_name(last, "feature.tier")["chi2_p"].threshold == 0.0


def test_threshold_overrides_take_short_or_registry_names_and_reject_unknown_ones():
    monitor = SeriesMonitor(DriftSettings(thresholds={"js": 0.1, "kolmogorov_smirnov": 0.2}))
    assert monitor.thresholds["jensen_shannon"] == 0.1
    assert monitor.thresholds["kolmogorov_smirnov"] == 0.2
    with pytest.raises(ValueError, match="unknown statistic 'jsd'"):
        SeriesMonitor(DriftSettings(thresholds={"jsd": 0.1}))


def test_empty_window_gets_no_drift_and_is_not_learned():
    monitor = SeriesMonitor(DriftSettings(numeric_features=["x"], categorical_features=["tier"],
                                          trailing_windows=3, warm_up_windows=3))
    run(monitor, stable(4, 5))
    learned = monitor.scorer.n_learned
    quiet = monitor.observe(*empty_window(5))
    assert quiet.requests == 0 and quiet.drift == [] and quiet.drifted == []
    assert quiet.change_points == [] and quiet.anomaly_score is None
    assert monitor.scorer.n_learned == learned
    assert len(monitor.trailing) == 3 and monitor.trailing.reference().version == 5
    after = monitor.observe(*window(4, 6))
    assert after.reference == "trailing" and after.reference_version == 5
    assert monitor.windows == 7


# --------------------------------------------------------------------------- reference
def test_pinned_reference_is_used_in_auto_mode_and_keeps_a_shift_flagged():
    pinned = pinned_reference(5, 6, version=7)
    monitor = SeriesMonitor(SETTINGS)  # reference = "auto"
    scores = run(monitor, changed(5, 16, 8, x_shift=1.0), pinned)
    for i, s in enumerate(scores):
        assert (s.reference, s.reference_version) == ("pinned", 7), i
        assert by_name(s, "feature.x")["ks"].reference_count == 6 * EVENTS
        # against a pinned baseline a sustained shift stays flagged (a trailing one absorbs
        # it), from its second window on
        assert s.drifted == ([] if i < 9 else ["feature.x"]), (i, s.drifted)
    assert len(monitor.trailing) == SETTINGS.trailing_windows  # still learned meanwhile


def test_pinned_mode_uses_only_the_pinned_reference():
    settings = DriftSettings(numeric_features=["x"], categorical_features=["tier"],
                             reference="pinned", trailing_windows=3)
    monitor = SeriesMonitor(settings)
    without = run(monitor, stable(6, 5))
    assert [(s.reference, s.reference_version, s.drift) for s in without] == [("none", 0, [])] * 5
    pinned = pinned_reference(6, 2, version=3, x_shift=1.0)  # a baseline of shifted x
    first = monitor.observe(*window(6, 5), pinned)
    with_pin = monitor.observe(*window(6, 6), pinned)
    assert (with_pin.reference, with_pin.reference_version) == ("pinned", 3)
    assert by_name(with_pin, "feature.x")["ks"].reference_count == 2 * EVENTS
    assert first.drifted == [] and with_pin.drifted == ["feature.x"]  # two windows running


def test_trailing_mode_ignores_the_pinned_reference():
    settings = DriftSettings(numeric_features=["x"], categorical_features=["tier"],
                             reference="trailing", trailing_windows=3)
    pinned = pinned_reference(6, 2, version=3, x_shift=1.0)
    scores = run(SeriesMonitor(settings), stable(6, 6), pinned)
    assert [s.reference for s in scores] == ["none"] * 3 + ["trailing"] * 3
    assert [s.reference_version for s in scores] == [0, 0, 0, 3, 4, 5]
    for s in scores[3:]:
        assert by_name(s, "feature.x")["ks"].reference_count == 3 * EVENTS
        assert s.drifted == []


# --------------------------------------------------------------------------- anomaly
def test_warm_up_then_latency_spike_scores_above_the_threshold():
    spike = 30
    windows = [*stable(7, spike), window(7, spike, latency=3.0)]
    monitor = SeriesMonitor(SETTINGS)
    assert monitor.anomaly_threshold == ANOMALY_THRESHOLDS["median_mad"]
    scores = run(monitor, windows)
    warm_up = SETTINGS.warm_up_windows
    for s in scores[:warm_up]:
        assert s.anomaly_score is None and s.anomaly_warm_up is True
        assert s.anomalous is False and s.anomaly_contributions == {}
    for s in scores[warm_up:]:
        assert s.anomaly_score is not None and 0.0 <= s.anomaly_score <= 1.0
        assert s.anomaly_warm_up is False
        assert s.anomaly_threshold == monitor.anomaly_threshold
        assert s.anomalous == (s.anomaly_score >= monitor.anomaly_threshold)
    p50s = [m.ttft_p50_ms for m, _ in windows[:spike]]
    assert windows[spike][0].ttft_p50_ms > 2.5 * float(np.median(p50s))  # x3
    hit = scores[spike]
    assert hit.anomaly_score >= monitor.anomaly_threshold and hit.anomalous
    assert max(hit.anomaly_contributions, key=hit.anomaly_contributions.get) == "log_ttft_p50_ms"
    assert hit.anomaly_contributions["log_ttft_p50_ms"] > 3.5


def test_anomaly_threshold_and_scorer_follow_settings():
    custom = SeriesMonitor(DriftSettings(anomaly_threshold=0.9))
    assert custom.anomaly_threshold == 0.9 and isinstance(custom.scorer, MedianMADScorer)
    trees = SeriesMonitor(DriftSettings(anomaly="half_space_trees"))
    assert isinstance(trees.scorer, HalfSpaceTreesScorer)
    assert trees.anomaly_threshold == ANOMALY_THRESHOLDS["half_space_trees"]
    assert trees.scorer.warm_up == SETTINGS.warm_up_windows


def test_half_space_trees_with_a_short_warm_up():
    monitor = SeriesMonitor(DriftSettings(anomaly="half_space_trees", warm_up_windows=10))
    assert monitor.scorer.warm_up == 10


def test_one_failed_request_is_not_an_error_rate_anomaly():
    windows = [window(8, i, error_p=0.0) for i in range(25)] + [window(8, 25, n_errors=1)]
    hit = run(SeriesMonitor(SETTINGS), windows)[-1]
    assert hit.anomaly_contributions["error_rate"] < 3.5


# --------------------------------------------------------------------------- change points
def test_sustained_latency_level_shift_is_a_change_point():
    at = 40
    scores = run(SeriesMonitor(SETTINGS), changed(9, at + 6, at, latency=1.5))
    assert all(s.change_points == [] for s in scores[:at])
    fired = [i for i, s in enumerate(scores) if "latency_p99_ms" in s.change_points]
    assert fired and at <= fired[0] < at + 6, fired
    assert scores[fired[0]].variables()["change_point.latency_p99_ms"] == 1.0


@pytest.mark.parametrize("detector", ["page_hinkley", "adwin"])
def test_detector_setting_picks_the_detector(detector):
    monitor = SeriesMonitor(DriftSettings(detector=detector))
    kind = ADWINDetector if detector == "adwin" else PageHinkleyDetector
    assert set(monitor.detectors) == set(CHANGE_METRICS)
    assert all(type(d) is kind for d in monitor.detectors.values())


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("split", [37, 9])
def test_checkpoint_restore_continue_equals_an_uninterrupted_run(split):
    windows = checkpoint_scenario()
    first = SeriesMonitor(SETTINGS)
    before = run(first, windows[:split])
    data = first.checkpoint()
    assert isinstance(data, bytes) and first.since_checkpoint == 0
    resumed = SeriesMonitor.restore(SETTINGS, data)
    assert resumed.windows == split and resumed.trailing == first.trailing
    after = run(resumed, windows[split:])
    expected = uninterrupted()
    assert before + after == list(expected)
    # the run is not trivial: the restored state was needed for these
    assert any(s.change_points for s in expected[split:])
    assert any(s.drifted for s in expected[split:])
    assert resumed.windows == len(windows)


def test_checkpoint_is_taken_without_changing_the_scores():
    windows = checkpoint_scenario(45)
    monitor = SeriesMonitor(SETTINGS)
    scores = []
    for i, (m, p) in enumerate(windows):
        scores.append(monitor.observe(m, p))
        assert monitor.since_checkpoint == (i % 6) + 1
        if i % 6 == 5:
            monitor.checkpoint()
    assert scores == list(uninterrupted()[:45])


def _checkpoint_after(n: int) -> bytes:
    monitor = SeriesMonitor(SETTINGS)
    run(monitor, stable(10, n))
    return monitor.checkpoint()


def test_restore_with_other_trailing_windows_starts_the_reference_afresh():
    data = _checkpoint_after(25)
    settings = DriftSettings(numeric_features=["x"], categorical_features=["tier"],
                             trailing_windows=6)
    monitor = SeriesMonitor.restore(settings, data)
    assert monitor.trailing.n_windows == 6 and len(monitor.trailing) == 0
    assert monitor.windows == 25
    assert monitor.scorer.n_learned == 25  # detectors and scorer are still this config's
    assert all(d.n == 25 for d in monitor.detectors.values())
    scores = run(monitor, stable(10, 32, start=25))
    assert [s.reference for s in scores] == ["none"] * 6 + ["trailing"]
    assert all(s.anomaly_score is not None for s in scores)


@pytest.mark.parametrize("change", [{"detector": "adwin"}, {"anomaly": "half_space_trees"},
                                    {"warm_up_windows": 5}], ids=str)
def test_restore_with_another_detector_or_scorer_does_not_crash(change):
    data = _checkpoint_after(25)
    settings = DriftSettings(numeric_features=["x"], categorical_features=["tier"], **change)
    monitor = SeriesMonitor.restore(settings, data)
    assert monitor.windows == 25 and len(monitor.trailing) == SETTINGS.trailing_windows
    kind = ADWINDetector if settings.detector == "adwin" else PageHinkleyDetector
    assert all(type(d) is kind for d in monitor.detectors.values())
    expected_scorer = (HalfSpaceTreesScorer if settings.anomaly == "half_space_trees"
                       else MedianMADScorer)
    assert type(monitor.scorer) is expected_scorer
    assert monitor.scorer.warm_up == settings.warm_up_windows
    scores = run(monitor, stable(10, 28, start=25))
    assert all(s.reference == "trailing" for s in scores)
    assert monitor.windows == 28


def test_restore_with_another_detector_keeps_the_anomaly_scorer():
    data = _checkpoint_after(25)
    settings = DriftSettings(numeric_features=["x"], categorical_features=["tier"],
                             detector="adwin")
    monitor = SeriesMonitor.restore(settings, data)
    assert monitor.scorer.n_learned == 25


def test_restore_rejects_an_unknown_format():
    with pytest.raises(ValueError, match="checkpoint"):
        SeriesMonitor.restore(SETTINGS, msgspec.msgpack.encode({"v": 99}))


# --------------------------------------------------------------------------- contract
def test_variables_names_and_values():
    scores = uninterrupted()
    hit = next(s for s in scores if s.change_points and s.drift and s.anomaly_score is not None)
    variables = hit.variables()
    assert variables["drift.js.feature.x"] == by_name(hit, "feature.x")["js"].value
    assert variables["drift.chi2_p.feature.tier"] == by_name(hit, "feature.tier")["chi2_p"].value
    assert variables["drift.ks.latency_ms"] == by_name(hit, "latency_ms")["ks"].value
    assert variables["anomaly_score"] == hit.anomaly_score
    for metric in hit.change_points:
        assert variables[f"change_point.{metric}"] == 1.0
    for metric, z in hit.anomaly_contributions.items():
        assert variables[f"anomaly.{metric}"] == z
    assert len(variables) == (len(hit.drift) + 1 + len(hit.anomaly_contributions)
                              + len(hit.change_points))
    assert not any(k.startswith("change_point.") for k in scores[0].variables())

    bare = WindowScores(series_key=KEY, window_start=T0, window_end=T0 + LENGTH, drift=[
        DriftScore(name="feature.tier", kind="categorical", statistic="chi2_p", value=None,
                   threshold=1e-4, drifted=False, reference_count=10, current_count=3),
        DriftScore(name="feature.x", kind="numeric", statistic="js", value=0.25,
                   threshold=0.3, drifted=False, reference_count=10, current_count=3),
    ])
    assert bare.variables() == {"drift.js.feature.x": 0.25}  # None = too little data: left out


def test_window_scores_round_trip_through_json():
    scores = uninterrupted()
    assert any(s.anomaly_score is None for s in scores) and any(s.drifted for s in scores)
    for s in scores:
        wire = msgspec.json.encode(s)
        assert msgspec.json.decode(wire, type=WindowScores) == s
    decoded = msgspec.json.decode(msgspec.json.encode(scores[-1]))
    assert decoded["series_key"] == KEY and decoded["schema_version"] == 1


def test_drift_monitor_imports_first_in_a_fresh_interpreter():
    done = subprocess.run([sys.executable, "-c", "import pipeline.scoring.monitor"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]


def test_a_distribution_missing_on_one_side_has_no_threshold_and_still_encodes():
    """A feature the reference never saw is reported (None values, no threshold), and the
    WindowScores stays valid JSON for the scores topic (no inf)."""
    metrics, profile = window(5, 0)
    seen = DriftProfile({n: h for n, h in profile.histograms.items() if n != "feature.x"})
    pinned = Reference.pinned(seen, version=3, built_from=0.0, built_to=1.0)
    scores = SeriesMonitor(SETTINGS).observe(*window(5, 1), pinned)
    missing = [d for d in scores.drift if d.name == "feature.x"]
    assert missing and all(d.threshold is None and d.value is None and not d.drifted
                           for d in missing)
    assert metrics.requests == missing[0].current_count and missing[0].reference_count == 0
    encoded = msgspec.json.encode(scores)
    assert msgspec.json.decode(encoded, type=WindowScores) == scores


def test_a_single_window_of_agreeing_statistics_is_not_yet_a_drift():
    """Two windows running: a shift is reported from its second window, a one-window
    blip never."""
    at = 30
    blip = [*stable(4, at), window(4, at, x_shift=2.0), *stable(4, at + 6, at + 1)]
    scores = run(SeriesMonitor(SETTINGS), blip)
    votes = {d.statistic for d in scores[at].drift if d.name == "feature.x" and d.drifted}
    assert len(votes) >= 2  # the statistics did agree on the blip window
    assert all(s.drifted == [] for s in scores)
    shifted = run(SeriesMonitor(SETTINGS), changed(4, at + 3, at, x_shift=2.0))
    assert shifted[at].drifted == [] and shifted[at + 1].drifted == ["feature.x"]
