"""A window from the future on the metrics topic (a bug, a hand-made record) must not move
a series' clock ahead: every later window would then be older than the clock, and the
series' alerts would never change again. Ingest lets events through at most
``limits.max_future_seconds`` ahead, so windows ending past that (plus a window) are
skipped with a warning."""

from __future__ import annotations

import logging

import msgspec
import pytest

from pipeline.alerting.rules import parse_rules
from pipeline.alerting.stage import AlertRuleStage
from pipeline.config import Settings
from pipeline.runtime.stage import Record
from schemas.alert import AlertEvent
from schemas.metrics import CONTRACT_HEADER, WindowMetrics
from schemas.quality import VERSION_CONTRACT
from tests.unit.quality.test_versions import CANARY, T0, summary

TOPIC = "inferwatch.metrics"
RULES = parse_rules("""
rules:
  - name: Slow
    condition: latency_p99_ms > 1000
    severity: warning
""", "slow.yml")


def window(end: float, p99: float) -> bytes:
    return msgspec.json.encode(WindowMetrics(
        series_key="model=m", labels={"model": "m"}, window_start=end - 10, window_end=end,
        requests=100, latency_p99_ms=p99))


def test_a_window_from_the_future_is_skipped_and_the_series_still_alerts(
        caplog: pytest.LogCaptureFixture) -> None:
    stage = AlertRuleStage(Settings(), RULES)
    stage.on_assign(TOPIC, 0, {})
    values = [window(T0, 100.0), window(T0 + 10 * 86400, 100.0), window(T0 + 10, 5000.0)]
    records = [Record(TOPIC, 0, i, b"m", v) for i, v in enumerate(values)]
    with caplog.at_level(logging.WARNING, logger="pipeline.alerting.stage"):
        step = stage.on_batch(TOPIC, 0, records, T0 + 12)
    events = [msgspec.json.decode(o.value, type=AlertEvent) for o in step.outputs]
    assert [(e.rule, e.state) for e in events] == [("Slow", "firing")]
    assert stage.from_the_future == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"{TOPIC}[0]@1 ends 863988 s from now, past what ingest accepts: skipped"]
    # a window as far ahead as ingest allows is still taken
    near = T0 + 12 + Settings().limits.max_future_seconds
    stage.on_batch(TOPIC, 0, [Record(TOPIC, 0, 3, b"m", window(near, 100.0))], T0 + 12)
    assert stage.from_the_future == 1


def test_a_version_summary_from_the_future_does_not_stop_comparisons() -> None:
    stage = AlertRuleStage(Settings(), CANARY)
    stage.on_assign(TOPIC, 0, {})
    headers = [(CONTRACT_HEADER, VERSION_CONTRACT)]
    values = [summary("v1", T0 + 1e7, inferences=4000, errors=4),  # hand-made, far ahead
              summary("v2", T0 + 1e7, inferences=4000, errors=4),
              summary("v1", T0, inferences=4000, errors=40),
              summary("v2", T0, inferences=4000, errors=400)]
    records = [Record(TOPIC, 0, i, b"clf", msgspec.json.encode(v), headers)
               for i, v in enumerate(values)]
    step = stage.on_batch(TOPIC, 0, records, T0 + 1)
    events = [msgspec.json.decode(o.value, type=AlertEvent) for o in step.outputs]
    assert [(e.rule, e.state, e.labels["model_version"]) for e in events] == [
        ("CanaryWorse", "firing", "v2")]
    assert stage.from_the_future == 2
