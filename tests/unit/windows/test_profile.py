"""WindowProfile / ResourceProfile: exact counts, merge == union, finalize, msgpack round-trip."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from pipeline.windows import ResourceProfile, Sketch, WindowProfile, series_key, series_labels
from pipeline.windows import profile as profile_module
from pipeline.windows.drift_profile import MonitorSpec
from pipeline.windows.histogram import NumericHistogram
from schemas import InferenceEvent, ResourceMetrics, ResourceSample, WindowMetrics
from schemas.export import CONTRACTS, json_schema

USAGE = ("app_feature",)
SLO = 500.0
START, END = 1_700_000_000.0, 1_700_000_010.0


def event(i: int, **fields) -> InferenceEvent:
    base = {"event_id": f"e{i}", "timestamp": START + 1, "model": "gpt-chat",
            "latency_ms": 100.0}
    base.update(fields)
    return InferenceEvent(**base)


def hand_batch() -> list[InferenceEvent]:
    return [
        event(0, latency_ms=100.0, time_to_first_token_ms=20.0, input_tokens=10,
              output_tokens=5, cache_hit=True, cost_usd=0.01, feedback_score=1.0,
              attributes={"app_feature": "summarize"}),
        event(1, latency_ms=200.0, time_to_first_token_ms=40.0, input_tokens=20,
              output_tokens=15, cache_hit=False, cost_usd=0.03,
              attributes={"app_feature": "summarize", "other": "x"}),
        event(2, latency_ms=500.0, status="error", error_type="timeout", input_tokens=30,
              attributes={"app_feature": "translate"}),
        event(3, latency_ms=900.0, status="error", error_type="timeout", feedback_score=0.0),
        event(4, latency_ms=1200.0, status="error", http_status=503, cache_hit=True),
        event(5, latency_ms=50.0, status="error"),
    ]


def finalize(profile: WindowProfile, slo_ms: float = SLO) -> WindowMetrics:
    labels = {"model": "gpt-chat"}
    return profile.finalize(series_key(labels), labels, START, END, version=1, slo_ms=slo_ms)


def assert_metrics_equal(a: msgspec.Struct, b: msgspec.Struct) -> None:
    """Field by field; floats up to rounding (summation order differs between merges)."""
    da, db = msgspec.structs.asdict(a), msgspec.structs.asdict(b)
    assert da.keys() == db.keys()
    for key, value in da.items():
        if isinstance(value, float) and isinstance(db[key], float):
            assert math.isclose(value, db[key], rel_tol=1e-9, abs_tol=1e-15), key
        else:
            assert value == db[key], key


def random_events(seed: int, n: int) -> list[InferenceEvent]:
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        r = rng.random()
        events.append(event(
            seed * 1_000_000 + i,
            latency_ms=float(rng.lognormal(5.5, 1.0)),
            time_to_first_token_ms=float(rng.lognormal(3, 1)) if r < 0.8 else None,
            queue_wait_ms=float(rng.exponential(5)) if r < 0.5 else None,
            time_per_output_token_ms=float(rng.lognormal(3, 0.3)) if r < 0.7 else None,
            input_tokens=int(rng.integers(0, 8000)),
            output_tokens=int(rng.integers(0, 2000)) if r < 0.9 else None,
            cache_hit=bool(rng.random() < 0.3) if r < 0.6 else None,
            cost_usd=float(rng.random() / 100) if r < 0.75 else None,
            feedback_score=float(rng.random()) if r < 0.1 else None,
            status="error" if rng.random() < 0.05 else "ok",
            error_type=str(rng.choice(["timeout", "rate_limit", "oom"])) if r < 0.03 else None,
            attributes={"app_feature": f"f{int(rng.integers(0, 4))}"} if r < 0.5 else {},
        ))
    return events


# --------------------------------------------------------------------------- series
def test_series_key_is_sorted_stable_and_injective():
    key = series_key({"operation": "chat", "model_version": "2024-06", "model": "gpt-chat"})
    assert key == "model=gpt-chat|model_version=2024-06|operation=chat"
    assert key == series_key({"model": "gpt-chat", "operation": "chat",
                              "model_version": "2024-06"})
    assert series_key({"a": "1|b=2"}) != series_key({"a": "1", "b": "2"})
    assert series_key({}) == ""


def test_series_labels_from_fields_and_attributes():
    e = event(1, model_version="2024-06", operation="", attributes={"app_feature": "x"})
    names = ["model", "model_version", "operation", "app_feature", "absent", "http_status"]
    assert series_labels(e, names) == {
        "model": "gpt-chat", "model_version": "2024-06", "operation": "",
        "app_feature": "x", "absent": "", "http_status": "",
    }


# --------------------------------------------------------------------------- exact counts
def test_hand_built_batch_counts_and_sums_are_exact():
    profile = WindowProfile(0.01)
    profile.add_events(hand_batch(), SLO, USAGE)
    profile.late_events += 2
    m = finalize(profile)
    assert profile.count == 6
    assert m.requests == 6
    assert m.request_rate_per_s == pytest.approx(0.6)
    assert m.errors == 4
    assert m.errors_by_type == {"timeout": 2, "503": 1, "_OTHER": 1}
    assert m.error_rate == pytest.approx(4 / 6)
    assert m.slo_latency_ms == SLO
    assert m.slo_compliance == pytest.approx(4 / 6)  # 100, 200, 500 (<=), 50
    assert m.cache_hit_rate == pytest.approx(2 / 3)
    assert m.cost_usd_sum == pytest.approx(0.04)
    assert m.cost_per_request_usd == pytest.approx(0.02)
    assert m.feedback_mean == pytest.approx(0.5)
    assert m.feedback_count == 2
    assert m.feature_usage == {"app_feature": {"summarize": 2, "translate": 1}}
    assert m.input_tokens_sum == 60 and isinstance(m.input_tokens_sum, int)
    assert m.output_tokens_sum == 20
    assert m.output_tokens_per_s == pytest.approx(2.0)
    assert m.latency_max_ms == 1200.0
    assert m.latency_p50_ms == pytest.approx(200.0, rel=0.01)  # rank floor(0.5 * 5) = 2
    assert m.latency_p99_ms == pytest.approx(900.0, rel=0.01)  # rank floor(0.99 * 5) = 4
    assert m.ttft_p50_ms == pytest.approx(20.0, rel=0.01)
    assert m.ttft_p99_ms <= 40.0  # clamped to the exact max
    assert m.late_events == 2
    assert m.sketch_relative_accuracy == 0.01
    assert m.window_start == START and m.window_end == END and m.version == 1


def test_empty_fields_are_none_not_zero():
    profile = WindowProfile()
    profile.add_events([event(i, latency_ms=10.0 * (i + 1)) for i in range(3)], SLO, USAGE)
    m = finalize(profile)
    for name in ("ttft_p50_ms", "ttft_p99_ms", "queue_wait_p50_ms", "tpot_p99_ms",
                 "input_tokens_p50", "output_tokens_p99", "cache_hit_rate",
                 "cost_per_request_usd", "feedback_mean"):
        assert getattr(m, name) is None, name
    assert m.latency_p50_ms is not None
    assert m.input_tokens_sum == 0 and m.cost_usd_sum == 0.0 and m.feedback_count == 0
    assert m.feature_usage == {} and m.errors_by_type == {} and m.error_rate == 0.0

    nothing = finalize(WindowProfile())
    assert nothing.requests == 0 and nothing.request_rate_per_s == 0.0
    assert nothing.latency_p50_ms is None and nothing.latency_max_ms is None
    assert nothing.slo_compliance is None


def test_finalize_rates_use_window_length():
    profile = WindowProfile()
    profile.add_events([event(i, output_tokens=100) for i in range(30)], SLO, USAGE)
    m = profile.finalize("k", {}, 100.0, 160.0, version=3, slo_ms=SLO)
    assert m.request_rate_per_s == pytest.approx(0.5)
    assert m.output_tokens_per_s == pytest.approx(50.0)
    assert m.version == 3
    with pytest.raises(ValueError, match="window_end"):
        profile.finalize("k", {}, 160.0, 160.0, version=1, slo_ms=SLO)


def test_slo_threshold_sticks_and_other_thresholds_use_the_sketch():
    batch = [event(i, latency_ms=lat) for i, lat in enumerate([100.0, 300.0, 600.0, 900.0])]
    profile = WindowProfile()
    profile.add_events(batch[:2], 500.0, USAGE)
    profile.add_events(batch[2:], 800.0, USAGE)  # same profile: the first threshold sticks
    assert profile.slo_ms == 500.0 and profile.slo_met == 2
    assert finalize(profile, 500.0).slo_compliance == 0.5
    assert finalize(profile, 700.0).slo_compliance == 0.75  # estimated from the sketch
    # a partial counted against another threshold is re-counted on merge
    other = WindowProfile()
    other.add_events([event(9, latency_ms=650.0)], 1000.0, USAGE)
    profile.merge(other)
    assert profile.slo_met == 2


def test_add_events_is_vectorised_not_per_event(monkeypatch):
    def boom(self, value):
        raise AssertionError("Sketch.add called per event")

    monkeypatch.setattr(Sketch, "add", boom)
    calls = []
    original = Sketch.add_many
    monkeypatch.setattr(Sketch, "add_many",
                        lambda self, values: calls.append(len(values)) or original(self, values))
    WindowProfile().add_events(random_events(1, 500), SLO, USAGE)
    assert calls == [500] * 7  # one batch call per sketch


def test_small_batches_in_python_equal_one_numpy_batch():
    """At high cardinality a series gets a few events per message: those are added without
    numpy; the profile is the same as the vectorised one."""
    events = random_events(5, 240)
    whole, few = WindowProfile(), WindowProfile()
    whole.add_events(events, SLO, USAGE)
    for i in range(0, len(events), 3):
        few.add_events(events[i:i + 3], SLO, USAGE)
    assert few == whole
    assert_metrics_equal(finalize(few), finalize(whole))


# --------------------------------------------------------------------------- merge
def test_merge_of_partials_equals_profile_of_union():
    parts = [random_events(seed, n) for seed, n in ((1, 700), (2, 1), (3, 2500), (4, 40))]
    union = WindowProfile(0.02)
    union.add_events([e for part in parts for e in part], SLO, USAGE)

    partials = []
    for part in parts:
        p = WindowProfile(0.02)
        for chunk in (part[: len(part) // 2], part[len(part) // 2:]):  # several batches
            p.add_events(chunk, SLO, USAGE)
        partials.append(p)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):
        merged = WindowProfile(0.02)
        for i in order:
            merged.merge(partials[i])
        assert merged == union
        assert_metrics_equal(finalize(merged), finalize(union))
    assert finalize(union).requests == sum(len(p) for p in parts)


def test_merged_percentiles_within_relative_error():
    events = random_events(8, 6000)
    latencies = np.sort([e.latency_ms for e in events])
    merged = WindowProfile(0.01)
    for i in range(6):
        p = WindowProfile(0.01)
        p.add_events(events[i::6], SLO, USAGE)
        merged.merge(p)
    m = finalize(merged)
    for q, value in ((0.5, m.latency_p50_ms), (0.9, m.latency_p90_ms),
                     (0.95, m.latency_p95_ms), (0.99, m.latency_p99_ms)):
        truth = latencies[math.floor(q * (latencies.size - 1))]
        assert abs(value - truth) <= 0.01 * truth * (1 + 1e-12), q
    assert m.latency_max_ms == latencies[-1]


def test_merge_rejects_different_accuracy():
    a, b = WindowProfile(0.01), WindowProfile(0.02)
    b.add_events(hand_batch(), SLO, USAGE)
    with pytest.raises(ValueError, match="relative accuracy"):
        a.merge(b)
    assert a.count == 0


def test_distinct_values_are_bounded(monkeypatch):
    monkeypatch.setattr(profile_module, "MAX_DISTINCT_VALUES", 3)
    batch = [event(i, attributes={"app_feature": f"f{i}"}) for i in range(5)]
    profile = WindowProfile()
    profile.add_events(batch, SLO, USAGE)
    assert profile.feature_usage["app_feature"] == {"f0": 1, "f1": 1, "f2": 1, "_OTHER": 2}


# --------------------------------------------------------------------------- serialization
def test_profile_round_trips_through_msgpack():
    profile = WindowProfile(0.02)
    profile.add_events(random_events(5, 800) + hand_batch(), SLO, USAGE)
    profile.late_events = 4
    wire = msgspec.msgpack.encode(profile.to_builtins())
    back = WindowProfile.from_builtins(msgspec.msgpack.decode(wire))
    assert back == profile
    assert_metrics_equal(finalize(back), finalize(profile))
    # a restored profile keeps accepting events and merging
    back.add_events(hand_batch(), SLO, USAGE)
    assert back.count == profile.count + 6

    empty = WindowProfile()
    assert WindowProfile.from_builtins(msgspec.msgpack.decode(
        msgspec.msgpack.encode(empty.to_builtins()))) == empty
    with pytest.raises(ValueError, match="format"):
        WindowProfile.from_builtins({"v": 99, "a": 0.01})


def test_window_metrics_contract_round_trips_and_exports():
    profile = WindowProfile()
    profile.add_events(hand_batch(), SLO, USAGE)
    m = finalize(profile)
    for codec in (msgspec.json, msgspec.msgpack):
        assert codec.decode(codec.encode(m), type=WindowMetrics) == m
    assert CONTRACTS["WindowMetrics"] is WindowMetrics
    assert CONTRACTS["ResourceMetrics"] is ResourceMetrics
    body = json_schema(WindowMetrics)["$defs"]["WindowMetrics"]
    assert set(body["required"]) == {"series_key", "window_start", "window_end"}


# --------------------------------------------------------------------------- resources
def samples(seed: int, n: int) -> list[ResourceSample]:
    rng = np.random.default_rng(seed)
    return [ResourceSample(
        timestamp=START + i, host="h1", server="vllm", model="gpt-chat",
        cpu_util=float(rng.random()), memory_util=float(rng.random()),
        gpu_util=float(rng.random()) if i % 2 else None,
        queue_length=int(rng.integers(0, 50)),
    ) for i in range(n)]


def test_resource_profile_means_maxes_merge_and_round_trip():
    batch = [ResourceSample(timestamp=START, host="h1", cpu_util=0.2, queue_length=4),
             ResourceSample(timestamp=START + 1, host="h1", cpu_util=0.6, gpu_util=0.9),
             ResourceSample(timestamp=START + 2, host="h1", queue_length=10)]
    profile = ResourceProfile()
    profile.add_samples(batch)
    r = profile.finalize("h1", "vllm", "gpt-chat", START, END, version=1)
    assert r.samples == 3
    assert r.cpu_util_mean == pytest.approx(0.4) and r.cpu_util_max == 0.6
    assert r.gpu_util_mean == 0.9 and r.gpu_util_max == 0.9
    assert r.queue_length_mean == 7.0 and r.queue_length_max == 10.0
    assert r.memory_util_mean is None and r.kv_cache_util_max is None

    parts = [samples(1, 30), samples(2, 7), samples(3, 1)]
    union = ResourceProfile()
    union.add_samples([s for part in parts for s in part])
    merged = ResourceProfile()
    for part in reversed(parts):
        p = ResourceProfile()
        p.add_samples(part)
        merged.merge(p)
    assert merged == union
    fin = lambda p: p.finalize("h1", "vllm", "gpt-chat", START, END, version=2)  # noqa: E731
    assert_metrics_equal(fin(merged), fin(union))

    back = ResourceProfile.from_builtins(
        msgspec.msgpack.decode(msgspec.msgpack.encode(union.to_builtins())))
    assert back == union
    assert_metrics_equal(fin(back), fin(union))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(fin(back)), type=ResourceMetrics) \
        == fin(back)
    empty = ResourceProfile().finalize("h", "", "", START, END, version=1)
    assert empty.samples == 0 and empty.cpu_util_mean is None


# --------------------------------------------------------------------------- drift histograms
DRIFT_SPEC = MonitorSpec(numeric_features=("x",), categorical_features=("tier",),
                         operational=False)
OPERATIONAL_SKETCHES = {"latency_ms": "latency_ms", "time_to_first_token_ms": "ttft_ms",
                        "input_tokens": "input_tokens", "output_tokens": "output_tokens",
                        "cost_usd": "cost_usd"}


def drift_events(seed: int, n: int) -> list[InferenceEvent]:
    """random_events with the monitored features, prediction and confidence; one in ~50
    carries a string for the numeric feature (a type mismatch)."""
    rng = np.random.default_rng(seed + 100)
    out = []
    for e in random_events(seed, n):
        x = "n/a" if rng.random() < 0.02 else float(rng.normal(50, 10))
        out.append(msgspec.structs.replace(
            e, prediction=str(rng.choice(["yes", "no"])), confidence=float(rng.beta(8, 2)),
            features={"x": x, "tier": str(rng.choice(["free", "pro", "team"]))}))
    return out


def drift_window(events: list[InferenceEvent]) -> WindowProfile:
    profile = WindowProfile(0.02)
    for chunk in (events[: len(events) // 3], events[len(events) // 3:]):
        profile.add_events(chunk, SLO, USAGE)
        profile.add_drift(chunk, DRIFT_SPEC)
    return profile


def test_merge_of_partials_with_drift_equals_profile_of_union():
    parts = [drift_events(seed, n) for seed, n in ((1, 600), (2, 1), (3, 1500), (4, 40))]
    union = drift_window([e for part in parts for e in part])
    assert union.drift is not None
    assert union.drift.names == ["confidence", "feature.tier", "feature.x", "prediction"]
    assert union.drift["feature.x"].count + union.drift.type_mismatches == 2141
    assert union.drift.type_mismatches > 0
    partials = [drift_window(part) for part in parts]
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        merged = WindowProfile(0.02)  # starts without drift histograms
        for i in order:
            merged.merge(partials[i])
        merged.merge(WindowProfile(0.02))  # a partial without drift changes nothing
        assert merged.drift is not None and merged.drift == union.drift
        assert merged == union
        assert merged.drift_profile() == union.drift_profile()
    # WindowProfile equality sees the drift histograms
    other = drift_window(parts[0])
    other.drift.merge(drift_window(parts[3]).drift)
    same_requests = drift_window(parts[0])
    assert other != same_requests


def test_profile_with_drift_round_trips_through_msgpack():
    profile = drift_window(drift_events(5, 800))
    wire = msgspec.msgpack.encode(profile.to_builtins())
    back = WindowProfile.from_builtins(msgspec.msgpack.decode(wire))
    assert back.drift is not None and back.drift == profile.drift
    assert back.drift.type_mismatches == profile.drift.type_mismatches > 0
    assert back == profile
    assert back.drift_profile() == profile.drift_profile()
    # a restored profile keeps adding drift batches like the original
    more = drift_events(6, 50)
    back.add_drift(more, DRIFT_SPEC)
    profile.add_drift(more, DRIFT_SPEC)
    assert back.drift == profile.drift

    plain = WindowProfile()
    plain.add_events(hand_batch(), SLO, USAGE)
    assert "d" not in plain.to_builtins()
    assert WindowProfile.from_builtins(plain.to_builtins()).drift is None


def test_drift_profile_adds_the_operational_histograms_from_the_sketches():
    profile = drift_window(drift_events(7, 900))
    m = finalize(profile)
    drift = profile.drift_profile()
    assert set(drift.names) == {*profile.drift.names, *OPERATIONAL_SKETCHES}
    for name, attribute in OPERATIONAL_SKETCHES.items():
        sketch: Sketch = getattr(profile, attribute)
        histogram = drift[name]
        assert isinstance(histogram, NumericHistogram)
        assert histogram.count == sketch.count > 0, name
        assert histogram.relative_accuracy == pytest.approx(sketch.relative_accuracy)
        assert (histogram.min, histogram.max) == (sketch.min, sketch.max)
        assert histogram.sum == pytest.approx(sketch.sum, rel=1e-12)
        for q in (0.0, 0.1, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
            assert histogram.quantile(q) == profile_module._clamped(sketch, q), (name, q)
    assert drift["latency_ms"].quantile(0.5) == m.latency_p50_ms
    assert drift["latency_ms"].quantile(0.99) == m.latency_p99_ms
    assert drift["time_to_first_token_ms"].quantile(0.99) == m.ttft_p99_ms
    assert drift["output_tokens"].quantile(0.5) == m.output_tokens_p50
    assert drift["input_tokens"].count == 900  # every event reported input tokens
    assert drift["time_to_first_token_ms"].count < 900  # not every event reported a TTFT
    for name in profile.drift.names:
        assert drift[name] == profile.drift[name]

    without = profile.drift_profile(operational=False)
    assert without == profile.drift and not set(OPERATIONAL_SKETCHES) & set(without.names)
    # a copy: changing the returned profile leaves the window's histograms alone
    drift["feature.x"].add_many([1e6])
    without["prediction"].add("maybe")
    assert profile.drift["feature.x"].max < 1e6
    assert "maybe" not in profile.drift["prediction"].counts

    no_drift = WindowProfile()
    no_drift.add_events([event(i, latency_ms=10.0 * (i + 1)) for i in range(3)], SLO, USAGE)
    assert no_drift.drift_profile().names == ["latency_ms"]  # empty sketches are left out
    assert no_drift.drift_profile(operational=False).names == []


def test_numeric_histogram_from_sketch_copies():
    sketch = Sketch(0.01)
    sketch.add_many(np.array([0.0, 1.0, 2.5, 40.0, 1000.0]))
    histogram = NumericHistogram.from_sketch(sketch)
    before = (histogram.count, histogram.sum, histogram.max,
              [histogram.quantile(q) for q in (0.0, 0.5, 1.0)], histogram.to_builtins())
    assert before[:3] == (5, 1043.5, 1000.0)
    assert histogram.min == 0.0 and histogram.cdf(0.0) == pytest.approx(0.2)

    sketch.add_many(np.array([5000.0, 7.0]))
    other = Sketch(0.01)
    other.add_many(np.array([1.0] * 50))
    sketch.merge(other)
    after = (histogram.count, histogram.sum, histogram.max,
             [histogram.quantile(q) for q in (0.0, 0.5, 1.0)], histogram.to_builtins())
    assert after == before

    histogram.add_many([-3.0, 9.0])  # and the other way round
    assert sketch.count == 57 and sketch.min == 0.0
    assert histogram.count == 7 and histogram.min == -3.0
