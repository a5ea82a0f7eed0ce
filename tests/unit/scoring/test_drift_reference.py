"""Monitored distributions from events, pinned and trailing references, evaluation."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from pipeline.scoring.drift import (
    DriftProfile,
    MonitorSpec,
    NumericHistogram,
    Reference,
    TrailingReference,
    evaluate,
    statistics_for,
)
from schemas.event import InferenceEvent

SPEC = MonitorSpec(numeric_features=("age",), categorical_features=("country",))


def events(seed: int, n: int, shift: float = 0.0) -> list[InferenceEvent]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(InferenceEvent(
            event_id=f"{seed}-{i}", timestamp=1_700_000_000.0 + i, model="m",
            latency_ms=float(rng.lognormal(5 + shift, 0.5)),
            time_to_first_token_ms=float(rng.lognormal(4, 0.3)) if i % 3 else None,
            input_tokens=int(rng.integers(10, 500)), output_tokens=int(rng.integers(1, 300)),
            cost_usd=float(rng.uniform(0, 0.01)), confidence=float(rng.uniform(0.5, 1.0)),
            prediction=str(rng.choice(["spam", "ham"])),
            features={"age": float(rng.normal(40 + 10 * shift, 10)),
                      "country": str(rng.choice(["de", "fr", "us"]))},
        ))
    return out


def profile_of(batch: list[InferenceEvent], spec: MonitorSpec = SPEC) -> DriftProfile:
    p = DriftProfile()
    p.add_events(batch, spec)
    return p


def test_monitored_names_and_kinds():
    assert SPEC.monitored() == {
        "feature.age": "numeric", "feature.country": "categorical",
        "prediction": "categorical", "confidence": "numeric", "latency_ms": "numeric",
        "time_to_first_token_ms": "numeric", "input_tokens": "numeric",
        "output_tokens": "numeric", "cost_usd": "numeric",
    }
    bare = MonitorSpec(prediction="numeric", confidence=False, operational=False)
    assert bare.monitored() == {"prediction": "numeric"}


def test_spec_is_validated_on_decode():
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"numeric_features": ["a"], "categorical_features": ["a"]}',
                            type=MonitorSpec)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"bins": 10}', type=MonitorSpec)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"relative_accuracy": 2.0}', type=MonitorSpec)


def test_profile_counts_each_monitored_value():
    batch = events(1, 300)
    p = profile_of(batch)
    assert p["latency_ms"].count == 300
    assert p["time_to_first_token_ms"].count == 200  # None skipped
    assert p["feature.age"].count == 300
    assert sum(p["feature.country"].counts.values()) == 300
    assert set(p["prediction"].counts) == {"spam", "ham"}
    assert p["cost_usd"].max == max(e.cost_usd for e in batch)
    assert p.type_mismatches == 0


def test_profile_merge_equals_profile_of_union_and_round_trips():
    batch = events(2, 500)
    merged = DriftProfile()
    for part in (batch[:120], batch[120:121], batch[121:]):
        merged.merge(profile_of(part))
    assert merged == profile_of(batch)
    data = msgspec.msgpack.decode(msgspec.msgpack.encode(merged.to_builtins()))
    assert DriftProfile.from_builtins(data) == merged
    with pytest.raises(ValueError, match="format"):
        DriftProfile.from_builtins({"v": 99})


def test_wrong_typed_values_are_counted_not_guessed():
    spec = MonitorSpec(numeric_features=("x",), categorical_features=("c",),
                       prediction="none", confidence=False, operational=False)
    batch = [InferenceEvent(event_id=str(i), timestamp=1.0, model="m", latency_ms=1.0,
                            features={"x": "high" if i % 2 else 1.0, "c": 3.0})
             for i in range(6)]
    p = profile_of(batch, spec)
    assert p["feature.x"].count == 3
    assert p.type_mismatches == 3
    assert p["feature.c"].counts == {"3.0": 6}


def test_pinned_reference_is_a_copy_and_round_trips():
    profile = profile_of(events(3, 200))
    ref = Reference.pinned(profile, version=7, built_from=10.0, built_to=20.0)
    profile["latency_ms"].add_many([1e6] * 50)
    assert ref["latency_ms"].count == 200
    assert (ref.source, ref.version, ref.windows) == ("pinned", 7, 0)
    data = msgspec.json.decode(msgspec.json.encode(ref.to_builtins()))
    assert Reference.from_builtins(data) == ref
    with pytest.raises(ValueError):
        Reference({}, version=1, source="rolling", built_from=0, built_to=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Reference({}, version=1, source="pinned", built_from=2, built_to=1)


def test_trailing_reference_is_the_merge_of_the_last_n_windows():
    windows = [profile_of(events(10 + i, 50 + i)) for i in range(6)]
    trailing = TrailingReference(n_windows=3)
    assert trailing.reference() is None
    versions = []
    for i, window in enumerate(windows):
        trailing.add(window, 60.0 * i, 60.0 * (i + 1))
        versions.append(trailing.reference().version)
    expected = DriftProfile()
    for window in windows[-3:]:
        expected.merge(window)
    ref = trailing.reference()
    assert DriftProfile(ref.histograms) == DriftProfile(expected.histograms)
    assert ref["latency_ms"].count == sum(50 + i for i in (3, 4, 5))
    assert (ref.source, ref.windows, ref.built_from, ref.built_to) == ("trailing", 3, 180.0, 360.0)
    assert versions == [1, 2, 3, 4, 5, 6] and trailing.full and len(trailing) == 3
    # the held windows are copies: the caller may reuse its profile
    windows[-1]["latency_ms"].add_many([1.0] * 1000)
    assert trailing.reference()["latency_ms"].count == ref["latency_ms"].count
    back = TrailingReference.from_builtins(
        msgspec.msgpack.decode(msgspec.msgpack.encode(trailing.to_builtins())))
    assert back == trailing and back.reference().version == 6
    with pytest.raises(ValueError, match="order"):
        trailing.add(windows[0], 0.0, 60.0)


def test_a_window_compared_with_its_trailing_reference_before_being_added():
    trailing = TrailingReference(n_windows=5)
    for i in range(5):
        trailing.add(profile_of(events(20 + i, 200)), 60.0 * i, 60.0 * (i + 1))
    same, shifted = profile_of(events(30, 200)), profile_of(events(31, 200, shift=1.0))
    ref = trailing.reference()
    psi = statistics_for("numeric")[0]
    assert psi.compute(ref["latency_ms"], same["latency_ms"]) < 0.1
    assert psi.compute(ref["latency_ms"], shifted["latency_ms"]) > 1.0
    assert psi.compute(ref["feature.age"], shifted["feature.age"]) > 0.5


def test_evaluate_reports_every_statistic_and_names_missing_on_one_side():
    ref = Reference.pinned(profile_of(events(40, 400)), version=1, built_from=0, built_to=1)
    current = profile_of(events(41, 300, shift=1.0))
    extra = NumericHistogram()
    extra.add_many([1.0, 2.0])
    current.histograms["feature.new"] = extra
    del current.histograms["feature.country"]
    values = evaluate(ref, current)
    by_key = {(v.name, v.statistic): v for v in values}
    assert len(by_key) == len(values)
    names = {v.name for v in values}
    assert names == set(SPEC.monitored()) | {"feature.new"}
    for name, kind in SPEC.monitored().items():
        assert {v.statistic for v in values if v.name == name} == {
            s.name for s in statistics_for(kind)}
    assert by_key[("latency_ms", "psi")].value > 1.0
    assert by_key[("latency_ms", "psi")].current_count == 300
    missing = by_key[("feature.country", "chi_square")]
    assert missing.value is None and missing.current_count == 0 and missing.reference_count == 400
    new = by_key[("feature.new", "wasserstein")]
    assert new.value is None and new.reference_count == 0
