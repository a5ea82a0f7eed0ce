"""The trailing reference's running merge (new window merged in, leaving one subtracted)
equals a fresh merge of the held windows, window after window: extremes, names that come
and go, negative values, empty histograms and categories past the cap included."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.scoring.drift.reference import TrailingReference
from pipeline.windows.drift_profile import DriftProfile
from pipeline.windows.histogram import CategoricalHistogram, NumericHistogram


def window(rng: np.random.Generator, i: int) -> DriftProfile:
    histograms = {}
    if rng.random() < 0.8:  # a feature that is sometimes absent
        h = NumericHistogram()
        h.add_many(rng.normal(0.0, 10.0, int(rng.integers(0, 6))))  # may be empty
        histograms["feature.x"] = h
    latency = NumericHistogram()
    latency.add_many(rng.lognormal(5.0, 1.0 + (i % 7 == 0) * 2, int(rng.integers(1, 40))))
    histograms["latency_ms"] = latency
    labels = CategoricalHistogram(max_categories=4)  # past the cap: counted as __other__
    labels.add_many([f"c{int(k)}" for k in rng.integers(0, 6, int(rng.integers(1, 10)))])
    histograms["prediction"] = labels
    outcome = CategoricalHistogram(max_categories=10)  # under the cap: subtracted exactly
    outcome.add_many([f"o{int(k)}" for k in rng.integers(0, 6, int(rng.integers(0, 10)))])
    histograms["outcome"] = outcome
    return DriftProfile(histograms)


@pytest.mark.parametrize("seed", range(4))
def test_running_merge_equals_a_fresh_merge(seed):
    rng = np.random.default_rng(seed)
    trailing = TrailingReference(n_windows=5)
    profiles: list[DriftProfile] = []
    for i in range(120):
        profile = window(rng, i)
        profiles.append(profile)
        trailing.add(profile, i * 10.0, i * 10.0 + 10.0)
        fresh = DriftProfile()
        for held in profiles[-5:]:
            fresh.merge(held)
        reference = trailing.reference()
        assert reference is not None
        assert DriftProfile(reference.histograms) == fresh, i
        for name, h in fresh.histograms.items():
            if isinstance(h, NumericHistogram) and h.count:
                assert (reference[name].min, reference[name].max) == (h.min, h.max)


def test_restored_reference_continues_like_the_original():
    rng = np.random.default_rng(9)
    a = TrailingReference(n_windows=4)
    for i in range(6):
        a.add(window(rng, i), i * 10.0, i * 10.0 + 10.0)
    a.reference()
    b = TrailingReference.from_builtins(a.to_builtins())
    assert b == a
    for i in range(6, 12):
        profile = window(rng, i)
        a.add(profile, i * 10.0, i * 10.0 + 10.0)
        b.add(profile, i * 10.0, i * 10.0 + 10.0)
        assert DriftProfile(a.reference().histograms) == DriftProfile(b.reference().histograms)
