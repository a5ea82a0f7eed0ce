"""The dashboard's SQL against the real engine (embedded chDB): values, paging, sorting,
filters, the window/roll-up switch, and that browser input cannot change a statement."""

from __future__ import annotations

import pytest

from pipeline.sinks.clickhouse.query import QueryError, run_readonly
from pipeline.ui import queries
from tests.unit.conftest import Store
from tests.unit.ui import conftest as ui
from tests.unit.ui.conftest import WINDOW, WINDOWS, key, labels


def rows(store: Store, sql: str) -> list[dict]:
    result = run_readonly(store.client, sql)
    return [dict(zip(result.columns, r, strict=True)) for r in result.rows]


def test_overview_rows_are_each_series_latest_window(ui_store: Store) -> None:
    got = rows(ui_store, queries.overview(900, sort="p99_ms"))
    assert [r["series_key"] for r in got] == [key(2), key(1), key(0)]
    last = WINDOWS - 1
    for r, i in zip(got, (2, 1, 0), strict=True):
        n = 10 * (i + 1) + last
        assert r["p99_ms"] == 100.0 * (i + 1) + last
        assert r["requests_per_s"] == pytest.approx(n / WINDOW)
        assert r["error_rate"] == pytest.approx(last / n)
        assert r["total"] == 3
    assert got[1]["drifted"] == ["latency_ms"] and got[1]["anomalous"]
    assert got[1]["change_points"] == ["latency_p99_ms"]
    assert got[0]["firing"] == ["HighP99Latency"] and got[2]["firing"] == []


def test_overview_pages_and_sorts_in_sql(ui_store: Store) -> None:
    page = rows(ui_store, queries.overview(900, sort="p99_ms", descending=False, size=2, page=1))
    assert [r["series_key"] for r in page] == [key(2)]
    assert page[0]["total"] == 3  # the total counts every matching series, not the page


@pytest.mark.parametrize(("text", "expected"), [
    ("model=m1", [1]),
    ("model!=m1", [0, 2]),
    ("model=~m[02]", [0, 2]),
    ("M2", [2]),
    ("model=m1 operation=chat", [1]),
    ("model=nothing", []),
])
def test_overview_filters(ui_store: Store, text: str, expected: list[int]) -> None:
    got = rows(ui_store, queries.overview(900, sort="series_key", descending=False,
                                          label_filter=text))
    assert [r["series_key"] for r in got] == [key(i) for i in expected]


def test_filter_text_cannot_escape_its_literal(ui_store: Store) -> None:
    hostile = "model=x'||1=1-- m1' OR 1=1 --"
    assert rows(ui_store, queries.overview(900, label_filter=hostile)) == []
    assert rows(ui_store, queries.alert_timeline(900, hostile)) == []


def test_unknown_sort_and_range_are_refused() -> None:
    with pytest.raises(ValueError):
        queries.overview(900, sort="1; DROP TABLE events")
    with pytest.raises(ValueError):
        queries.parse_range("2h")


def test_sparklines_hold_the_last_windows_in_order(ui_store: Store) -> None:
    got = {r["series_key"]: r["spark"] for r in rows(ui_store, queries.sparklines(
        [key(0), key(2)], 900))}
    assert got == {key(0): [100.0 + w for w in range(WINDOWS)],
                   key(2): [300.0 + w for w in range(WINDOWS)]}


def test_series_metrics_from_windows(ui_store: Store) -> None:
    got = rows(ui_store, queries.series_metrics(key(1), labels(1), 3600))
    assert [r["t"] for r in got] == [ui.NOW - (WINDOWS - w) * WINDOW for w in range(WINDOWS)]
    assert [r["latency_p99_ms"] for r in got] == [200.0 + w for w in range(WINDOWS)]
    assert got[-1]["errors_by_type"] == {"timeout": WINDOWS - 1}
    assert got[-1]["cost_per_hour"] == pytest.approx(0.01 * (20 + WINDOWS - 1) / WINDOW * 3600)


def test_long_ranges_read_the_rollups_with_the_same_columns(ui_store: Store) -> None:
    assert "FROM window_metrics" in queries.series_metrics(key(1), labels(1), 21600)
    assert "FROM rollup_1m" in queries.series_metrics(key(1), labels(1), 86400)
    assert "FROM rollup_1h" in queries.series_metrics(key(1), labels(1), 30 * 86400)
    short = run_readonly(ui_store.client, queries.series_metrics(key(1), labels(1), 3600))
    for seconds in (86400, 30 * 86400):
        long = run_readonly(ui_store.client, queries.series_metrics(key(1), labels(1), seconds))
        assert long.rows == []  # no raw events here, so the roll-ups are empty; the SQL runs
    # the same columns either way (checked on the statement: an empty result names none)
    for column in short.columns:
        assert f" AS {column}" in queries.series_metrics(key(1), labels(1), 86400), column


def test_drift_anomaly_resources_and_alerts(ui_store: Store) -> None:
    drift = rows(ui_store, queries.series_drift(key(1), 900))
    assert [(d["name"], d["statistic"], d["value"], d["drifted"], d["reference"],
             d["reference_version"]) for d in drift] == [
        ("latency_ms", "ks", 0.6, True, "trailing", 2)]
    anomaly = rows(ui_store, queries.series_anomaly(key(1), 900))
    assert anomaly[0]["anomaly_contributions"] == {"latency_p99_ms": 4.2}
    assert rows(ui_store, queries.series_resources(labels(1), 900)) == []
    alerts = rows(ui_store, queries.alert_timeline(900, "severity=warning"))
    assert [(a["rule"], a["state"], a["series_key"]) for a in alerts] == [
        ("HighP99Latency", "firing", key(2))]
    assert alerts[0]["annotations"]["runbook_url"] == "https://runbooks.example/x"
    assert rows(ui_store, queries.alert_timeline(900, "severity=critical")) == []


def test_statements_are_read_only_and_bounded() -> None:
    for sql in (queries.overview(900), queries.series_metrics(key(0), labels(0), 3600),
                queries.series_drift(key(0), 900), queries.alert_timeline(900)):
        assert sql.lstrip().upper().startswith("SELECT") and "LIMIT" in sql


def test_a_malformed_statement_is_the_engines_error(ui_store: Store) -> None:
    with pytest.raises(QueryError):
        run_readonly(ui_store.client, queries.series_labels(key(0)) + " GROUP BY nonsense(")
