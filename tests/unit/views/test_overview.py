"""The Overview SQL against a store after a simulated run, checked against what the
stages published (decoded from the run's topics, newest version per window)."""

from __future__ import annotations

from collections import defaultdict

import msgspec
import pytest

from pipeline.sinks.clickhouse.query import run_readonly
from pipeline.views.overview import OVERVIEW_COLUMNS, overview_sql
from schemas.alert import AlertEvent
from schemas.metrics import CONTRACT_HEADER, WindowMetrics
from schemas.scores import WindowScores
from tests.unit.views.simulated_run import simulated_run

LOOKBACK = 300


def published() -> tuple[dict[str, WindowMetrics], dict[str, list[WindowScores]],
                         dict[str, list[str]]]:
    """Latest window per series, scores in the lookback, firing (unmuted) rules per series."""
    run = simulated_run()
    topics = run.topics
    newest: dict[tuple[str, float], WindowMetrics] = {}
    for _, _, _, value, headers in topics["inferwatch.metrics"]:
        if dict(headers).get(CONTRACT_HEADER) == b"ResourceMetrics":
            continue
        m = msgspec.json.decode(value, type=WindowMetrics)
        key = (m.series_key, m.window_start)
        if key not in newest or m.version > newest[key].version:
            newest[key] = m
    since = max(m.window_end for m in newest.values()) - LOOKBACK
    latest: dict[str, WindowMetrics] = {}
    for m in newest.values():
        if m.window_end >= since and (m.series_key not in latest
                                      or m.window_start > latest[m.series_key].window_start):
            latest[m.series_key] = m
    scores: dict[str, list[WindowScores]] = defaultdict(list)
    for _, _, _, value, _ in topics["inferwatch.scores"]:
        s = msgspec.json.decode(value, type=WindowScores)
        if s.window_end >= since:
            scores[s.series_key].append(s)
    last: dict[str, AlertEvent] = {}
    for _, _, _, value, _ in topics["inferwatch.alerts"]:
        e = msgspec.json.decode(value, type=AlertEvent)
        if e.fingerprint not in last or (e.window_end, e.state == "resolved") >= (
                last[e.fingerprint].window_end, last[e.fingerprint].state == "resolved"):
            last[e.fingerprint] = e
    firing: dict[str, list[str]] = defaultdict(list)
    for e in last.values():
        if e.state == "firing" and not (e.silenced or e.inhibited):
            firing[e.series_key].append(e.rule)
    return latest, scores, firing


def rows(client, sql: str) -> list[dict]:
    result = run_readonly(client, sql)
    if result.rows:  # an empty result comes back without column names from chDB
        assert result.columns == [c.name for c in OVERVIEW_COLUMNS]
    return [dict(zip(result.columns, r, strict=True)) for r in result.rows]


def test_every_recent_series_once_with_its_latest_window_figures(run_store) -> None:
    latest, scores, firing = published()
    got = {r["series_key"]: r for r in rows(run_store.client, overview_sql())}
    assert len(latest) >= 5 and set(got) == set(latest)
    for key, m in latest.items():
        r = got[key]
        seconds = m.window_end - m.window_start
        assert (r["model"], r["model_version"], r["operation"]) == (
            m.labels["model"], m.labels["model_version"], m.labels["operation"])
        assert r["requests_per_s"] == pytest.approx(m.request_rate_per_s)
        assert r["p50_ms"] == pytest.approx(m.latency_p50_ms)
        assert r["p99_ms"] == pytest.approx(m.latency_p99_ms)
        assert r["ttft_p99_ms"] == (None if m.ttft_p99_ms is None
                                    else pytest.approx(m.ttft_p99_ms))
        assert r["error_rate"] == pytest.approx(m.error_rate)
        assert r["tokens_per_s"] == pytest.approx(
            (m.input_tokens_sum + m.output_tokens_sum) / seconds)
        assert r["cost_per_hour_usd"] == pytest.approx(m.cost_usd_sum / seconds * 3600)
        assert r["slo_compliance"] == pytest.approx(m.slo_compliance)
        mine = scores.get(key, [])
        assert r["drifted"] == sorted({n for s in mine for n in s.drifted})
        assert r["change_points"] == sorted({n for s in mine for n in s.change_points})
        assert r["anomalous"] == any(s.anomalous for s in mine)
        values = [s.anomaly_score for s in mine if s.anomaly_score is not None]
        assert r["anomaly"] == (pytest.approx(max(values)) if values else None)
        assert r["firing"] == sorted(firing.get(key, []))


def test_the_run_gives_the_flags_something_to_show(run_store) -> None:
    """Otherwise the comparison above would pass on empty lists alone."""
    got = rows(run_store.client, overview_sql(lookback_seconds=3600))
    assert any(r["firing"] for r in got)
    assert any(r["drifted"] for r in got)
    assert any(r["anomalous"] for r in got)
    assert any(r["change_points"] for r in got)


def test_filter_sort_and_limit(run_store) -> None:
    client = run_store.client
    chat = rows(client, overview_sql(filters={"model": "gpt-chat"}))
    assert chat and {r["model"] for r in chat} == {"gpt-chat"}
    two = rows(client, overview_sql(filters={"model": "gpt-chat", "model_version": "2024-06"}))
    assert [r["model_version"] for r in two] == ["2024-06"]
    by_p99 = rows(client, overview_sql(sort="p99_ms"))
    p99 = [r["p99_ms"] for r in by_p99]
    assert p99 == sorted(p99, reverse=True) and len(set(p99)) > 1
    by_name = rows(client, overview_sql(sort="model", limit=2))
    everything = sorted((r["model"], r["series_key"]) for r in rows(client, overview_sql()))
    assert [(r["model"], r["series_key"]) for r in by_name] == everything[:2]


def test_a_hostile_filter_value_matches_nothing_instead_of_changing_the_sql(run_store) -> None:
    assert rows(run_store.client, overview_sql(filters={"model": "x' OR 1=1 --"})) == []
    with pytest.raises(ValueError, match="label name"):
        overview_sql(filters={"model'] = '' OR 1=1 --": "x"})
