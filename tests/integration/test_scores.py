"""Drift and anomaly scores on real Kafka and the real ClickHouse engine.

Simulated traffic of five series, with a prompt-length drift injected into one model
and a latency spike into another: the drifted feature and the anomaly are flagged for
the affected series within 3 windows of the injection, nothing is flagged for the
untouched series, and the scores reach the scores topic, ClickHouse and the alert rules.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pipeline.dev.publish import publish
from pipeline.dev.simulate import Incident, TrafficModel
from pipeline.scoring.baseline_topic import publish_baseline
from pipeline.scoring.baselines import Baseline
from pipeline.scoring.monitor import monitor_spec
from schemas.event import InferenceEvent
from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

WINDOW = 5.0
DURATION, INJECT_AT, INJECT_FOR = 200.0, 100.0, 60.0
DRIFTED, SPIKED = "code-complete", "embed-small"
RULES = """
rules:
  - name: PromptLengthDrift
    condition: drift.psi.feature.prompt_length > 0.5
    severity: warning
  - name: WindowAnomaly
    condition: anomaly_score >= 0.96
    severity: warning
"""
ENV = {
    "INFERWATCH_METRICS__WINDOW_SECONDS": str(WINDOW),
    "INFERWATCH_METRICS__LATENESS_SECONDS": "1",
    "INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS": "3",
    "INFERWATCH_DRIFT__NUMERIC_FEATURES": "prompt_length",
    "INFERWATCH_DRIFT__CATEGORICAL_FEATURES": "language,client",
    "INFERWATCH_DRIFT__TRAILING_WINDOWS": "6",
    "INFERWATCH_DRIFT__WARM_UP_WINDOWS": "8",
}


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    pipeline = Pipeline(kafka_bootstrap, tmp_path, INFERWATCH_ALERTS__RULES=str(rules), **ENV)
    yield pipeline
    pipeline.close()


def pin_baseline(pipe: Pipeline, model: str) -> Baseline:
    """Version 1 of a pinned baseline for ``model``: a minute of its normal traffic."""
    traffic = TrafficModel(seed=99, id_prefix="baseline-99")
    events = [r for _, r in traffic.stream(300, 60, time.time() - 3600, resources=False)
              if isinstance(r, InferenceEvent) and r.model == model]
    labels = {"model": model, "model_version": events[0].model_version,
              "operation": events[0].operation}
    spec = monitor_spec(pipe.settings.drift, pipe.settings.metrics.relative_accuracy)
    baseline = Baseline.of_events(events, spec, labels, source="test:normal traffic")
    return asyncio.run(publish_baseline(pipe.settings, baseline))


def test_injected_drift_and_spike_are_scored_for_the_affected_series_only(pipe: Pipeline):
    # the drifted model is measured against a pinned baseline, the others against their
    # trailing windows
    assert pin_baseline(pipe, DRIFTED).version == 1
    start = time.time() - DURATION - 30
    traffic = TrafficModel(seed=41, id_prefix="scores-41", incidents=[
        Incident("feature_drift", INJECT_AT, INJECT_FOR, model=DRIFTED),
        Incident("latency_spike", INJECT_AT, INJECT_FOR, model=SPIKED),
    ])
    records = traffic.stream(600, DURATION, start, resources=False)
    produced = asyncio.run(publish(pipe.settings, records, speed=0, batch_size=200)).events
    worker = pipe.start_worker()
    pipe.wait_sink_ready(worker)
    assert pipe.wait_count(produced) == produced
    series = pipe.scalar("SELECT count(DISTINCT model, model_version, operation) FROM events")
    windows = int(DURATION // WINDOW)
    assert series == 5
    scored = pipe.wait_count(series * (windows - 1), timeout=240,
                             sql="SELECT count() FROM anomaly_scores FINAL")
    assert scored >= series * (windows - 1), pipe.log(worker)

    injected = start + INJECT_AT
    rows = pipe.query(
        "SELECT labels['model'] AS model, series_key, "
        "toUnixTimestamp64Milli(window_start) / 1000 AS ws, anomaly_score, anomalous, "
        "anomaly_warm_up, drifted, reference, reference_version "
        "FROM anomaly_scores FINAL ORDER BY series_key, ws")
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    assert set(by_model) == {"gpt-chat", DRIFTED, SPIKED, "intent-clf"}

    def flagged(model: str, test) -> list[float]:
        return [r["ws"] for r in by_model[model] if test(r)]

    def drifted(r: dict) -> bool:
        return "feature.prompt_length" in r["drifted"]

    def anomalous(r: dict) -> bool:
        return bool(r["anomalous"])

    deadline = injected + 3 * WINDOW
    # the affected series: flagged within 3 windows of the injection, never before it
    drift_at = flagged(DRIFTED, drifted)
    assert drift_at and injected - WINDOW < drift_at[0] <= deadline, (drift_at, injected)
    spike_at = flagged(SPIKED, anomalous)
    assert spike_at and injected - WINDOW < spike_at[0] <= deadline, (spike_at, injected)
    # the untouched series: nothing at all, over the whole run
    for model in ("gpt-chat", "intent-clf"):
        assert flagged(model, lambda r: r["drifted"]) == [], model
        assert flagged(model, anomalous) == [], model
    # the pinned baseline is in force for the drifted model (the worker follows the
    # baselines topic from its start), trailing references elsewhere
    pinned = {(r["reference"], r["reference_version"]) for r in by_model[DRIFTED]
              if r["ws"] >= injected - WINDOW}
    assert pinned == {("pinned", 1)}, pinned
    # a warm-up with no anomaly verdict, then trailing references
    first = by_model[SPIKED][:8]
    assert all(r["anomaly_warm_up"] and r["anomaly_score"] is None for r in first)
    assert {r["reference"] for r in by_model[SPIKED][7:]} == {"trailing"}

    # every statistic of the drifted feature is in drift_scores with its threshold
    stats = pipe.query(
        "SELECT statistic, max(value) AS top, any(threshold) AS threshold, "
        "countIf(drifted) AS n FROM drift_scores FINAL "
        f"WHERE labels['model'] = '{DRIFTED}' AND name = 'feature.prompt_length' "
        "GROUP BY statistic ORDER BY statistic")
    assert {s["statistic"] for s in stats} == {"hellinger", "js", "ks", "psi", "wasserstein"}
    assert any(s["n"] > 0 for s in stats)

    # the alert rules read the same scores: drift fires for the drifted model only
    fired = pipe.wait_count(1, timeout=60, sql=(
        "SELECT count() FROM alerts FINAL WHERE rule = 'PromptLengthDrift' "
        "AND state = 'firing'"))
    assert fired >= 1
    alerted = pipe.query("SELECT rule, groupUniqArray(series_labels['model']) AS models "
                         "FROM alerts FINAL WHERE state = 'firing' GROUP BY rule")
    models = {a["rule"]: set(a["models"]) for a in alerted}
    assert models["PromptLengthDrift"] == {DRIFTED}
    assert models.get("WindowAnomaly", set()) <= {DRIFTED, SPIKED}
    assert SPIKED in models.get("WindowAnomaly", set())
