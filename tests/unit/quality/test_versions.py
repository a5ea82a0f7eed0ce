"""Version comparison: the sums each version adds up, the book that lines versions up,
the rule condition, and a rule firing in the alerting stage on a worse candidate."""

from __future__ import annotations

from typing import get_args

import msgspec
import pytest

from pipeline.alerting.conditions.version_comparison import (
    METRICS,
    VersionComparisonCondition,
)
from pipeline.alerting.rule_spec import ComparedMetric
from pipeline.alerting.rules import parse_rules
from pipeline.alerting.stage import AlertRuleStage
from pipeline.config import Settings
from pipeline.quality.records import Outcome
from pipeline.quality.versions import VersionBook, VersionStats
from pipeline.runtime.stage import Record
from schemas.alert import AlertEvent
from schemas.metrics import CONTRACT_HEADER
from schemas.quality import VERSION_CONTRACT, VersionSummary

T0 = 1_700_000_000.0
CANARY = parse_rules("""
rules:
  - name: CanaryWorse
    type: version_comparison
    severity: warning
    metrics: [error_rate, accuracy]
    min_samples: 100
    annotations:
      summary: "{{ labels.model_version }} vs {{ labels.baseline_version }}: {{ details.worse }}"
""", "canary.yml")


def summary(version: str, end: float, *, inferences: int = 1000, errors: int = 10,
            labelled: int = 0, correct: int = 0, model: str = "clf") -> VersionSummary:
    return VersionSummary(series_key=f"model={model}|model_version={version}",
                          labels={"model": model, "model_version": version},
                          period_start=end - 300, period_end=end, inferences=inferences,
                          errors=errors, latency_n=inferences,
                          latency_sum=100.0 * inferences,
                          latency_sumsq=(100.0**2 + 25.0) * inferences,
                          labelled=labelled, correct=correct)


def test_the_rule_type_and_the_condition_know_the_same_metrics() -> None:
    assert set(get_args(ComparedMetric)) == set(METRICS)


def test_stats_count_inferences_labels_and_satisfaction_and_merge_exactly() -> None:
    a, b = VersionStats(), VersionStats()
    a.add_inference(100.0, False)
    a.add(Outcome("f1", "label", T0, T0 + 1, prediction="cat", label="cat"))
    a.add(Outcome("f2", "label", T0, T0 + 1, prediction=0.5, label=0.7))  # regression
    b.add_inference(None, True)
    b.add(Outcome("f3", "satisfaction", T0, T0 + 1, satisfaction=0.2))
    a.merge(VersionStats.from_builtins(msgspec.msgpack.decode(
        msgspec.msgpack.encode(b.to_builtins()))))
    assert (a.inferences, a.errors, a.latency_n, a.labelled, a.correct) == (2, 1, 1, 1, 1)
    assert (a.satisfaction_n, a.thumbs_down) == (1, 1)
    assert isinstance(a.inferences, int) and isinstance(a.latency_sum, float)


def test_the_baseline_is_the_version_with_most_traffic_and_old_periods_leave() -> None:
    book = VersionBook(span=900)
    assert book.add(summary("v1", T0, inferences=5000)) == []  # one version: nothing
    (window,) = book.add(summary("v2", T0, inferences=300))
    assert window["labels"] == {"model": "clf", "model_version": "v2",
                                "baseline_version": "v1", "quality": "comparison"}
    assert window["sums"]["baseline.inferences"] == 5000
    assert window["sums"]["candidate.inferences"] == 300
    assert book.add(summary("v2", T0 + 1000)) == []  # v1's period is past the span


def test_the_book_survives_a_restart_from_its_checkpoint() -> None:
    book = VersionBook(span=900)
    book.add(summary("v1", T0))
    key = VersionBook.model_key({"model": "clf", "model_version": "v1"})
    again = VersionBook(span=900)
    again.restore(key, book.checkpoint(key))
    (window,) = again.add(summary("v2", T0 + 10, inferences=10))
    assert window["sums"]["baseline.inferences"] == 1000


def test_a_worse_candidate_holds_a_small_one_does_not() -> None:
    condition = VersionComparisonCondition(["error_rate", "latency_ms"], min_samples=100)
    book = VersionBook(span=900)
    book.add(summary("v1", T0, inferences=2000, errors=20))
    (worse,) = book.add(summary("v2", T0, inferences=1000, errors=50))
    outcome = condition.evaluate(worse["sums"], T0 - 900, T0)
    assert outcome.holds and outcome.details["worse"] == "error_rate"
    assert outcome.details["latency_ms_verdict"] == "no_difference"
    book = VersionBook(span=900)
    book.add(summary("v1", T0, inferences=2000, errors=20))
    (small,) = book.add(summary("v2", T0, inferences=20, errors=5))  # 25 % of 20
    assert condition.evaluate(small["sums"], T0 - 900, T0).holds is False
    assert condition.evaluate({"requests": 5.0}, T0, T0 + 10).holds is None


def test_a_version_comparison_rule_fires_in_the_alerting_stage() -> None:
    stage = AlertRuleStage(Settings(), CANARY)
    stage.on_assign("inferwatch.metrics", 0, {})
    headers = [("content-type", b"application/json"), (CONTRACT_HEADER, VERSION_CONTRACT)]
    records = [Record("inferwatch.metrics", 0, i, b"clf", msgspec.json.encode(s), headers)
               for i, s in enumerate([
                   summary("v1", T0, inferences=4000, errors=40, labelled=500, correct=450),
                   summary("v2", T0, inferences=800, errors=8, labelled=400, correct=300)])]
    step = stage.on_batch("inferwatch.metrics", 0, records, T0 + 1)
    events = [msgspec.json.decode(o.value, type=AlertEvent) for o in step.outputs]
    (firing,) = [e for e in events if e.state == "firing"]
    assert firing.labels["model_version"] == "v2"
    assert firing.labels["baseline_version"] == "v1"
    assert firing.annotations["summary"] == "v2 vs v1: accuracy"
    assert any(k.startswith("versions|") for k in step.changes[0])
    # after a restart, the book is back: v2 alone still compares with v1
    state = {k: v for k, v in step.changes[0].items() if v is not None}
    again = AlertRuleStage(Settings(), CANARY)
    again.on_assign("inferwatch.metrics", 0, state)
    assert again.versions.add(summary("v2", T0 + 300)) == []  # v1 has not sent that period
    assert len(again.versions.add(summary("v1", T0 + 300))) == 1


def test_versions_are_compared_over_the_same_periods_once_each() -> None:
    """A version whose newest period is not in yet holds the comparison back: comparing
    one side's newest period with the other side's older ones made a latency spike in one
    period look like a worse canary (found in the demo)."""
    book = VersionBook(span=900)
    book.add(summary("v1", T0, inferences=1000, errors=10))
    (first,) = book.add(summary("v2", T0, inferences=1000, errors=10))
    assert first["window_end"] == T0
    # v2's next period, with a burst of errors: not compared until v1's same period is in
    assert book.add(summary("v2", T0 + 300, inferences=1000, errors=200)) == []
    (aligned,) = book.add(summary("v1", T0 + 300, inferences=1000, errors=190))
    assert aligned["window_end"] == T0 + 300
    assert aligned["sums"]["baseline.errors"] == 200 and aligned["sums"]["candidate.errors"] == 210
    assert book.add(summary("v1", T0 + 300, inferences=5)) == []  # that end was compared


def test_a_quiet_version_does_not_hold_the_others_back_for_long() -> None:
    book = VersionBook(span=3000)
    book.add(summary("v1", T0))
    book.add(summary("v2", T0))
    book.add(summary("v3", T0))
    for k in (1, 2, 3):  # v3 goes quiet; after two periods it is compared as it stands
        book.add(summary("v1", T0 + 300 * k))
        out = book.add(summary("v2", T0 + 300 * k))
    assert [w["window_end"] for w in out] == [T0 + 900, T0 + 900]


def test_adding_sums_as_builtins_equals_merging_them_and_a_bad_one_changes_nothing() -> None:
    part = VersionStats()
    part.add_inference(120.0, True)
    part.add_inference(80.0, False)
    fast, full = VersionStats(), VersionStats()
    fast.add_inference(10.0, False)
    full.add_inference(10.0, False)
    fast.merge_builtins(part.to_builtins())
    full.merge(VersionStats.from_builtins(part.to_builtins()))
    assert fast.to_builtins() == full.to_builtins()
    before = fast.to_builtins()
    with pytest.raises(ValueError, match="malformed version sums"):
        fast.merge_builtins({"inferences": 3, "latency_sum": float("nan")})
    assert fast.to_builtins() == before


def test_version_sums_are_keyed_by_the_whole_model_key() -> None:
    """Every version of a model meets at one alerting worker: the Kafka key is the series'
    labels without the version, all of them (the outbox name cannot be split for it)."""
    from pipeline.quality.records import OutcomeBatch
    from pipeline.quality.stage import QualityStage

    settings = Settings()
    stage = QualityStage(settings)
    stage.on_assign(settings.topics.outcomes, 0, {})
    serving = VersionStats()
    serving.add_inference(100.0, False)
    keys = []
    for version in ("v1", "v2"):
        series = f"model=clf|model_version={version}|operation=classify"
        batch = OutcomeBatch(0, 1, series, [], [], [], serving.to_builtins())
        record = Record(settings.topics.outcomes, 0, 0, series.encode(),
                        msgspec.msgpack.encode(batch))
        stage.on_batch(settings.topics.outcomes, 0, [record], T0)
        step = stage.on_tick(T0 + 2 * settings.quality.window_seconds, lambda t, p: True)
        keys += [o.key for o in step.outputs
                 if (CONTRACT_HEADER, VERSION_CONTRACT) in list(o.headers)]
    assert keys == [b"model=clf|operation=classify"] * 2
