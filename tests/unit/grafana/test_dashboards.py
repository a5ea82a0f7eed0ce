"""The Grafana provisioning in deploy/grafana, checked for what Grafana would read.

Grafana is not run here. Instead: the data source YAML has what the ClickHouse plugin
needs; every dashboard refers to the provisioned data sources by uid; every ClickHouse
panel's SQL, with the template variables set from their own queries and the plugin's
macros expanded for a range covering a simulated run (:mod:`tests.unit.views.simulated_run`,
with its model quality from :mod:`tests.unit.grafana.quality_run`), runs read-only on the
embedded store and returns rows and the columns its panel type needs, and its overrides
and transformations name columns it returns; the quality dashboard's figures are those of
the windows and fates the quality path published; every PromQL expression passes
``promtool check rules`` and names metrics the workers export (deploy/prometheus/README.md).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from pipeline.config import TopicSettings
from pipeline.quality.records import Fate, OutcomeBatch
from pipeline.sinks.clickhouse.quality_rows import FATE_RANK
from pipeline.sinks.clickhouse.query import QueryResult, run_readonly
from pipeline.views.overview import overview_sql
from schemas.metrics import CONTRACT_HEADER
from schemas.quality import QUALITY_CONTRACT, QualityWindow
from tests.unit.grafana.macros import TimeRange, expand
from tests.unit.grafana.quality_run import EXTRA, quality_run
from tests.unit.views.simulated_run import simulated_run

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"
CH_UID, PROM_UID = "inferwatch-clickhouse", "inferwatch-prometheus"
BOARDS = {p.name: json.loads(p.read_text())
          for p in sorted((GRAFANA / "dashboards").glob("*.json"))}
NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal.*)\)?$")


def ch_panels() -> list[tuple[str, dict]]:
    return [(name, p) for name, b in BOARDS.items() for p in b["panels"]
            if p["datasource"]["uid"] == CH_UID]


def prom_panels() -> list[tuple[str, dict]]:
    return [(name, p) for name, b in BOARDS.items() for p in b["panels"]
            if p["datasource"]["uid"] == PROM_UID]


def time_range() -> TimeRange:
    run = simulated_run()
    return TimeRange(frm=run.start, to=run.end + 300, interval_s=60)


def test_the_six_dashboards_are_there() -> None:
    assert sorted(BOARDS) == ["alerts.json", "drift-anomaly.json", "overview.json",
                              "pipeline-health.json", "quality.json", "series.json"]
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids)


def test_the_data_sources_are_what_the_plugin_reads() -> None:
    config = yaml.safe_load((GRAFANA / "provisioning/datasources/inferwatch.yml").read_text())
    assert config["apiVersion"] == 1
    sources = {d["uid"]: d for d in config["datasources"]}
    ch = sources[CH_UID]
    assert ch["type"] == "grafana-clickhouse-datasource"
    data = ch["jsonData"]
    assert data["protocol"] == "http" and data["secure"] is False
    assert data["defaultDatabase"] == "inferwatch"
    assert data["host"] == "${INFERWATCH_CH_HOST}" and data["port"] == "${INFERWATCH_CH_PORT}"
    assert data["username"] == "${INFERWATCH_CH_USER}"
    assert data["compression"] in ("none", "gzip")  # the endpoint refuses lz4 and zstd
    assert ch["secureJsonData"]["password"] == "${INFERWATCH_CH_PASSWORD}"
    assert sources[PROM_UID]["type"] == "prometheus"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/inferwatch.yml").read_text())
    assert providers["providers"][0]["type"] == "file"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_uses_a_provisioned_data_source_by_uid(name: str) -> None:
    board = BOARDS[name]
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids) and board["panels"]
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] in (CH_UID, PROM_UID), panel["title"]
        assert panel["type"] in ("timeseries", "table", "stat"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert ("rawSql" in target) == (panel["datasource"]["uid"] == CH_UID)
    names = [v["name"] for v in board["templating"]["list"]]
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == CH_UID
    for panel in board["panels"]:
        if "repeat" in panel:  # one panel per value of a variable of this dashboard
            assert panel["repeat"] in names, panel["title"]
            assert panel["repeatDirection"] in ("h", "v"), panel["title"]


def variable_values(client: Any, board: dict, r: TimeRange) -> dict[str, list[str]]:
    """Each variable's values from its own query, in order (later ones read earlier ones);
    "All" for multi-value variables, the saved current value for single ones."""
    values: dict[str, list[str]] = {}
    for variable in board["templating"]["list"]:
        result = run_readonly(client, expand(variable["query"], r, values))
        options = [str(row[0]) for row in result.rows]
        assert options, f"variable {variable['name']} has no values"
        if variable["multi"]:
            values[variable["name"]] = options
        else:
            current = variable["current"]["value"]
            assert current in options
            values[variable["name"]] = [current]
    return values


def check_shape(panel: dict, result: QueryResult) -> None:
    title = panel["title"]
    assert result.rows, f"{title}: no rows"
    numeric = [i for i, t in enumerate(result.types) if NUMERIC.match(t)]
    if panel["type"] == "timeseries":
        times = [i for i, t in enumerate(result.types) if t.startswith("DateTime")]
        assert times and numeric, f"{title}: needs a time and a number, got {result.types}"
        stamps = [row[times[0]] for row in result.rows]
        assert stamps == sorted(stamps), f"{title}: not ordered by time"
        assert any(row[i] is not None for row in result.rows for i in numeric), title
    elif panel["type"] == "stat":
        assert numeric, f"{title}: a stat needs a number, got {result.types}"
        assert result.rows[0][numeric[0]] is not None, f"{title}: NULL"
    else:
        assert result.columns
    check_field_names(panel, result)


def check_field_names(panel: dict, result: QueryResult) -> None:
    """Overrides and transformations name columns the query returns (Grafana ignores a
    name that matches nothing, so a renamed column would silently lose its unit or band)."""
    title, columns = panel["title"], result.columns
    for override in panel["fieldConfig"]["overrides"]:
        matcher = override["matcher"]
        if matcher["id"] == "byName":
            assert matcher["options"] in columns, f"{title}: no column {matcher['options']}"
        elif matcher["id"] == "byRegexp":
            assert any(re.search(matcher["options"], c) for c in columns), title
        for prop in override["properties"]:
            if prop["id"] == "custom.fillBelowTo":
                assert prop["value"] in columns, f"{title}: no column {prop['value']}"
    for transformation in panel.get("transformations", []):
        options = transformation["options"]
        for key in ("columnField", "rowField", "valueField"):
            if key in options:
                assert options[key] in columns, f"{title}: no column {options[key]}"


@pytest.mark.parametrize(("name", "panel"), ch_panels(),
                         ids=[f"{n}:{p['title']}" for n, p in ch_panels()])
def test_every_clickhouse_panel_runs_and_returns_what_its_panel_needs(
        run_store, name: str, panel: dict) -> None:
    r = time_range()
    values = variable_values(run_store.client, BOARDS[name], r)
    [target] = panel["targets"]
    assert target["format"] == (0 if panel["type"] == "timeseries" else 1)
    sql = expand(target["rawSql"], r, values)
    check_shape(panel, run_readonly(run_store.client, sql))


def test_a_variable_narrows_the_panels(run_store) -> None:
    """The variables reach the SQL: one model selected, only its series come back."""
    r = time_range()
    board = BOARDS["overview.json"]
    values = variable_values(run_store.client, board, r)
    [panel] = [p for p in board["panels"] if p["title"].startswith("Series")]
    one = {**values, "model": ["embed-small"]}
    result = run_readonly(run_store.client, expand(panel["targets"][0]["rawSql"], r, one))
    models = {row[result.columns.index("model")] for row in result.rows}
    assert models == {"embed-small"}


def test_the_overview_table_is_the_shared_overview_sql() -> None:
    [panel] = [p for p in BOARDS["overview.json"]["panels"] if p["title"].startswith("Series")]
    assert panel["targets"][0]["rawSql"] == overview_sql(where=[
        "w.labels['model'] IN (${model:singlequote})",
        "w.labels['model_version'] IN (${model_version:singlequote})",
        "w.labels['operation'] IN (${operation:singlequote})"]).strip()


# ------------------------------------------------------------------ model quality
QUALITY = BOARDS["quality.json"]
TOPICS = TopicSettings()


def run_quality_panel(client: Any, title: str, **chosen: list[str]) -> QueryResult:
    """One panel of the quality dashboard, its variables at All unless ``chosen``."""
    r = time_range()
    values = {**variable_values(client, QUALITY, r), **chosen}
    [panel] = [p for p in QUALITY["panels"] if p["title"] == title]
    return run_readonly(client, expand(panel["targets"][0]["rawSql"], r, values))


def published_windows(basis: str) -> list[QualityWindow]:
    """The newest version of each window of ``basis`` the quality path published in the
    dashboards' range: what ``quality_windows FINAL`` holds."""
    r = time_range()
    newest: dict[tuple[str, float], QualityWindow] = {}
    for _, _, _, value, headers in quality_run().topics[TOPICS.metrics]:
        if dict(headers).get(CONTRACT_HEADER) != QUALITY_CONTRACT:
            continue
        w = msgspec.json.decode(value or b"", type=QualityWindow)
        key = (w.series_key, w.window_start)
        if w.basis == basis and r.frm <= w.window_start <= r.to and (
                key not in newest or w.version > newest[key].version):
            newest[key] = w
    return list(newest.values())


def published_fates() -> tuple[dict[str, Fate], Counter[str]]:
    """The best fate of each feedback id (what ``feedback FINAL`` holds), and how many
    fates of each status were published."""
    best: dict[str, Fate] = {}
    published: Counter[str] = Counter()
    for _, _, _, value, _ in quality_run().topics[TOPICS.outcomes]:
        for fate in msgspec.msgpack.decode(value or b"", type=OutcomeBatch).fates:
            published[fate.status] += 1
            fid = fate.feedback.feedback_id
            if fid not in best or FATE_RANK[fate.status] > FATE_RANK[best[fid].status]:
                best[fid] = fate
    return best, published


def test_quality_figures_are_those_of_the_newest_published_windows(run_store) -> None:
    windows = published_windows("inference_time")
    assert any(w.version > 1 for w in windows)  # windows filled in: FINAL has to choose
    scored = [w for w in windows if w.accuracy is not None]
    labels = sum(w.labelled for w in scored)
    [[realised]] = run_quality_panel(run_store.client, "Realised accuracy").rows
    assert realised == pytest.approx(sum(w.accuracy * w.labelled for w in scored) / labels)
    estimated = [w for w in windows if w.estimated_accuracy is not None]
    assert estimated
    [[estimate]] = run_quality_panel(run_store.client, "Estimated accuracy").rows
    assert estimate == pytest.approx(sum(w.estimated_accuracy * w.inferences for w in estimated)
                                     / sum(w.inferences for w in estimated))
    cells: Counter[tuple[str, str]] = Counter()
    for w in windows:
        for actual, row in w.confusion.items():
            for predicted, n in row.items():
                cells[f"{w.labels['model']} {w.labels['model_version']}: {actual}", predicted] += n
    matrix = run_quality_panel(run_store.client,
                               "Confusion matrix (rows: actual, columns: predicted)")
    assert {(a, p): n for a, p, n in matrix.rows} == cells
    assert sum(cells.values()) == labels  # every classification label in one cell


def test_every_feedback_is_in_the_fates_table_once_with_its_best_fate(run_store) -> None:
    best, published = published_fates()
    assert published["duplicate"] == EXTRA["duplicate"]
    result = run_quality_panel(run_store.client, "Feedback fates by kind and status")
    table = {(kind, status): n for kind, status, n, _ in result.rows}
    assert table == Counter((f.feedback.kind, f.status) for f in best.values())
    assert table["label", "repeat"] == EXTRA["repeat"]
    assert table["label", "unmatched"] == EXTRA["unmatched"]
    assert "duplicate" not in {status for _, status in table}  # the join's fate stands
    for kind in {kind for kind, _ in table}:
        shares = [share for k, _, _, share in result.rows if k == kind]
        assert sum(shares) == pytest.approx(1.0, abs=1e-3)


def test_the_quality_filters_narrow_the_panels_and_keep_unmatched_feedback(run_store) -> None:
    one = {"model": ["intent-clf"]}
    matrix = run_quality_panel(run_store.client,
                               "Confusion matrix (rows: actual, columns: predicted)", **one)
    assert matrix.rows and all(a.startswith("intent-clf 2.1: ") for a, _, _ in matrix.rows)
    assert not run_quality_panel(run_store.client, "MAE / RMSE (numeric labels)", **one).rows
    keys = {w.series_key for w in published_windows("inference_time")
            if w.labels["model"] == "intent-clf"}
    best, _ = published_fates()
    result = run_quality_panel(run_store.client, "Feedback fates by kind and status", **one)
    assert {(kind, status): n for kind, status, n, _ in result.rows} == Counter(
        (f.feedback.kind, f.status) for f in best.values()
        if f.series_key in keys or f.series_key == "")


# ------------------------------------------------------------------ Prometheus panels
def exported_metrics() -> set[str]:
    readme = (ROOT / "deploy/prometheus/README.md").read_text()
    return set(re.findall(r"^\| `(inferwatch_[a-z_]+)` \|", readme, re.M))


def promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    rules = {"groups": [{"name": "grafana_panels", "rules": [
        {"record": f"inferwatch:grafana_panel_{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def promtool() -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus)")


def test_every_promql_expression_passes_promtool(promtool, tmp_path: Path) -> None:
    exprs = [t["expr"] for _, p in prom_panels() for t in p["targets"]]
    assert len(exprs) >= 10
    done = promtool_check(exprs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(exprs)} rules found" in done.stdout
    broken = promtool_check(["sum by (stage) (rate(inferwatch_sink_rows_total[5m])"], tmp_path)
    assert broken.returncode != 0  # the check can fail


def test_every_promql_metric_is_one_the_workers_export() -> None:
    known = exported_metrics()
    assert len(known) >= 10
    for _, panel in prom_panels():
        for target in panel["targets"]:
            for metric in re.findall(r"\b(inferwatch_[a-z_]+)", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", metric)
                assert base in known, f"{panel['title']}: {metric} is not exported"
