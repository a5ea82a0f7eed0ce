"""A store with a few series' windows, scores and alerts for the dashboard's tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pipeline.sinks.clickhouse.rows import (
    ALERT_COLUMNS,
    ANOMALY_COLUMNS,
    DRIFT_COLUMNS,
    METRICS_COLUMNS,
    drift_columns,
    struct_columns,
)
from schemas.alert import AlertEvent
from schemas.metrics import WindowMetrics
from schemas.scores import DriftScore, WindowScores
from tests.unit.conftest import Store, _open

WINDOW = 10.0
WINDOWS = 6
NOW = time.time() // WINDOW * WINDOW  # windows end here, so "the last 15 minutes" holds them


def labels(i: int) -> dict[str, str]:
    return {"model": f"m{i}", "model_version": "v1", "operation": "chat"}


def key(i: int) -> str:
    return f"model=m{i}|model_version=v1|operation=chat"


def windows(series: int = 3) -> list[WindowMetrics]:
    """Series i, window w: 10·(i+1) + w requests, p99 = 100·(i+1) + w ms."""
    out = []
    for i in range(series):
        for w in range(WINDOWS):
            start = NOW - (WINDOWS - w) * WINDOW
            n = 10 * (i + 1) + w
            out.append(WindowMetrics(
                series_key=key(i), labels=labels(i), window_start=start,
                window_end=start + WINDOW, requests=n, request_rate_per_s=n / WINDOW,
                errors=w, errors_by_type={"timeout": w} if w else {}, error_rate=w / n,
                latency_p50_ms=50.0 + w, latency_p90_ms=80.0 + w,
                latency_p99_ms=100.0 * (i + 1) + w, cost_usd_sum=0.01 * n,
                output_tokens_sum=100 * n, output_tokens_per_s=10.0 * n,
                slo_compliance=0.9))
    return out


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Three series × six windows; series 1 drifted and anomalous in its last window, and
    a firing alert on series 2."""
    global NOW
    # the windows end at the fixture's now, not at import: in the full suite this module
    # runs many minutes after collection, and "the last 15 minutes" must still hold them
    NOW = time.time() // WINDOW * WINDOW
    for store in _open(tmp_path_factory.mktemp("ui")):
        client = store.client
        rows = windows()
        client.insert("window_metrics", struct_columns(rows, METRICS_COLUMNS),
                      column_names=METRICS_COLUMNS, column_oriented=True)
        last = NOW - WINDOW
        scores = [WindowScores(
            series_key=key(1), labels=labels(1), window_start=last, window_end=NOW,
            requests=16, reference="trailing", reference_version=2, anomaly_score=0.95,
            anomalous=True, anomaly_warm_up=False, anomaly_contributions={"latency_p99_ms": 4.2},
            change_points=["latency_p99_ms"], drifted=["latency_ms"],
            drift=[DriftScore(name="latency_ms", kind="numeric", statistic="ks", value=0.6,
                              threshold=0.2, drifted=True, reference_count=40,
                              current_count=16)])]
        client.insert("anomaly_scores", struct_columns(scores, ANOMALY_COLUMNS),
                      column_names=ANOMALY_COLUMNS, column_oriented=True)
        client.insert("drift_scores", drift_columns(scores), column_names=DRIFT_COLUMNS,
                      column_oriented=True)
        alert = AlertEvent(
            fingerprint="0123456789abcdef", rule="HighP99Latency", state="firing",
            severity="warning", series_key=key(2), series_labels=labels(2),
            labels={**labels(2), "alertname": "HighP99Latency", "severity": "warning"},
            annotations={"summary": "slow", "runbook_url": "https://runbooks.example/x"},
            value=305.0, threshold=200.0, window_start=last, window_end=NOW, starts_at=NOW)
        client.insert("alerts", struct_columns([alert], ALERT_COLUMNS),
                      column_names=ALERT_COLUMNS, column_oriented=True)
        yield store
