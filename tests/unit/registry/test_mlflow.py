"""The MLflow link against a real local MLflow store (SQLite: MLflow 3 refuses the file
store by default, and SQLite holds the model registry without a server; no network).

One store per module: an experiment whose training run logged an evaluation dataset, a
training dataset (a Parquet file of events, ``mlflow.data.from_pandas``) and a JSON-lines
artifact; model ``fraud`` version 1 registered from that run (alias ``champion``).

Parquet is read by chDB's in-memory session, which cannot open while an embedded store
(the shared ``store`` fixture) is open in this process: the store tests come last.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.cli.baseline import _echo_reference
from pipeline.cli.registry import read_windows, summary_rows, windows_sql
from pipeline.registry.mlflow import RegistryError, parse_run_uri
from pipeline.registry.reference import baseline_from_mlflow, find_reference
from pipeline.registry.summary import Point, log_summary, version_tags, window_points
from pipeline.scoring.baselines import Baseline
from pipeline.sinks.clickhouse.query import QueryResult
from pipeline.windows.drift_profile import MonitorSpec
from schemas.event import InferenceEvent

# MLflow's own noise while the fixture logs datasets (SQLAlchemy, pandas 4, source lookup)
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The specified dataset source can be interpreted"),
    pytest.mark.filterwarnings("ignore:Starting with pandas version 4.0"),
]

LABELS = {"model": "fraud", "model_version": "1", "operation": "classify"}
KEY = "model=fraud|model_version=1|operation=classify"
SPEC = MonitorSpec(numeric_features=("x",), categorical_features=("lang",))


def _events(n: int, offset: float = 0.0) -> list[InferenceEvent]:
    return [
        InferenceEvent(event_id=f"e{i}", timestamp=1_750_000_000.0 + i, model="fraud",
                       latency_ms=10.0 + i, input_tokens=i, output_tokens=2 * i,
                       cost_usd=0.001 * i, prediction="yes" if i % 3 else "no",
                       confidence=0.5 + i / 200, features={"x": float(i) + offset,
                                                          "lang": "en" if i % 2 else "de"})
        for i in range(n)
    ]


TRAIN = _events(60)
HOLDOUT = _events(30, offset=100.0)  # the evaluation dataset and the artifact: other values


def _write_parquet(path: Path, events: list[InferenceEvent]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [msgspec.to_builtins(e) for e in events]
    columns = ("event_id", "timestamp", "model", "latency_ms", "input_tokens", "output_tokens",
               "cost_usd", "prediction", "confidence")
    table = pa.table({
        **{name: [r.get(name) for r in rows] for name in columns},
        "features": pa.array([r["features"] for r in rows],
                             type=pa.struct([("x", pa.float64()), ("lang", pa.string())])),
    })
    pq.write_table(table, path)


class Store(NamedTuple):
    uri: str
    run_id: str
    client: Any


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    import mlflow
    import pandas as pd

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    train, holdout, csv = root / "train.parquet", root / "holdout.parquet", root / "train.csv"
    _write_parquet(train, TRAIN)
    _write_parquet(holdout, HOLDOUT)
    jsonl = root / "reference.jsonl"
    jsonl.write_bytes(b"\n".join(msgspec.json.encode(e) for e in HOLDOUT) + b"\n")
    frame = pd.DataFrame({"x": [e.features["x"] for e in TRAIN]})
    frame.to_csv(csv, index=False)

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("fraud", artifact_location=str(root / "artifacts"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        with mlflow.start_run(experiment_id=experiment, run_name="train-fraud") as run:
            # logged before the training set: the resolver must still prefer "training"
            mlflow.log_input(mlflow.data.from_pandas(frame, source=str(holdout), name="holdout"),
                             context="evaluation")
            mlflow.log_input(mlflow.data.from_pandas(frame, source=str(train), name="train"),
                             context="training")
            mlflow.log_artifact(str(jsonl), artifact_path="reference")
            mlflow.set_tag("team", "risk")
        with mlflow.start_run(experiment_id=experiment, run_name="csv-only") as csv_run:
            mlflow.log_input(mlflow.data.from_pandas(frame, source=str(csv), name="csv"),
                             context="training")
    client.create_registered_model("fraud")
    client.create_model_version("fraud", source=f"runs:/{run.info.run_id}/model",
                                run_id=run.info.run_id, tags={"stage": "candidate"})
    client.set_registered_model_alias("fraud", "champion", "1")
    client.create_model_version("fraud", source=f"runs:/{csv_run.info.run_id}/model",
                                run_id=csv_run.info.run_id)  # version 2
    return Store(uri, run.info.run_id, client)


# --------------------------------------------------------------------------- naming a run
@pytest.mark.parametrize(("text", "fields"), [
    ("0a1b2c", {"run_id": "0a1b2c"}),
    ("runs:/0a1b2c", {"run_id": "0a1b2c", "artifact_path": None}),
    ("runs:/0a1b2c/data/x.parquet", {"run_id": "0a1b2c", "artifact_path": "data/x.parquet"}),
    ("models:/fraud/12", {"model_name": "fraud", "model_version": "12"}),
    ("models:/team.fraud@champion", {"model_name": "team.fraud", "alias": "champion"}),
    ("models:/m-7f00", {"logged_model": "m-7f00"}),
])
def test_parse_run_uri(text: str, fields: dict[str, str | None]) -> None:
    target = parse_run_uri(text)
    assert {k: getattr(target, k) for k in fields} == fields


@pytest.mark.parametrize(("text", "message"), [
    ("", "invalid MLflow run"),
    ("runs:/", "invalid MLflow run"),
    ("models:/fraud", "invalid MLflow run"),
    ("models:/fraud/latest", "version must be a number"),
    ("s3://bucket/run", "invalid MLflow run"),
])
def test_parse_run_uri_refuses_other_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_run_uri(text)


# --------------------------------------------------------------------------- the reference
def test_a_run_resolves_to_its_training_dataset_and_the_baseline_matches_the_data(
        mlflow_store: Store, tmp_path: Path) -> None:
    built, ref = baseline_from_mlflow(mlflow_store.run_id, SPEC, LABELS, dst_dir=tmp_path,
                                      tracking_uri=mlflow_store.uri)
    assert ref.path.name == "train.parquet" and ref.dataset is not None
    assert ref.dataset.startswith("train@") and ref.context == "training"
    assert (ref.run_name, ref.run_tags, ref.model_name) == ("train-fraud", {"team": "risk"}, None)
    expected = Baseline.of_events(_events(60), SPEC, LABELS, source="expected")
    assert built.events == 60
    assert built.to_reference().histograms == expected.to_reference().histograms
    assert built.source == f"mlflow:runs:/{mlflow_store.run_id} dataset={ref.dataset}"


def test_a_model_version_and_an_alias_resolve_to_the_source_run(
        mlflow_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for uri in ("models:/fraud/1", "models:/fraud@champion"):
        ref = find_reference(uri, dst_dir=tmp_path, tracking_uri=mlflow_store.uri)
        assert (ref.run_id, ref.model_name, ref.model_version) == (mlflow_store.run_id,
                                                                   "fraud", "1")
        assert ref.version_tags == {"stage": "candidate"}
        assert ref.source.startswith(f"mlflow:models:/fraud/1 run={mlflow_store.run_id} "
                                     "dataset=train@")
    _echo_reference(ref)  # what `baseline set` prints after the pin
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"  from MLflow: model fraud v1, run {mlflow_store.run_id} "
                               "(train-fraud, experiment ")
    assert lines[0].endswith(f"dataset {ref.dataset} (context training)")
    assert lines[1:] == ["  run tags: team=risk", "  version tags: stage=candidate"]


def test_an_artifact_is_downloaded_when_named(mlflow_store: Store, tmp_path: Path) -> None:
    expected = Baseline.of_events(_events(30, offset=100.0), SPEC, LABELS, source="expected")
    for uri, artifact in ((mlflow_store.run_id, "reference/reference.jsonl"),
                          (f"runs:/{mlflow_store.run_id}/reference/reference.jsonl", None),
                          ("models:/fraud/1", "reference")):  # a directory with one file
        built, ref = baseline_from_mlflow(uri, SPEC, LABELS, dst_dir=tmp_path / str(len(uri)),
                                          tracking_uri=mlflow_store.uri, artifact=artifact)
        assert ref.path.is_relative_to(tmp_path) and ref.path.name == "reference.jsonl"
        assert built.to_reference().histograms == expected.to_reference().histograms
        assert built.source.endswith(f"artifact={ref.artifact}")


def test_what_cannot_be_found_is_one_clear_error(mlflow_store: Store, tmp_path: Path) -> None:
    def error(uri: str, **kwargs: Any) -> str:
        with pytest.raises(RegistryError) as caught:
            find_reference(uri, dst_dir=tmp_path, **{"tracking_uri": mlflow_store.uri,
                                                     **kwargs})
        message = str(caught.value)
        assert "\n" not in message
        return message

    assert error("0123456789abcdef") == "run '0123456789abcdef' not found"
    assert error("models:/fraud/9") == "model 'fraud' version 9 not found in the registry"
    assert error("models:/nobody@x") == "model 'nobody' alias 'x' not found in the registry"
    assert "not JSON, JSON lines or Parquet" in error("models:/fraud/2")
    assert "Log the events as an artifact" in error("models:/fraud/2")
    missing = error(mlflow_store.run_id, artifact="reference/nope.parquet")
    assert "cannot download artifact 'reference/nope.parquet'" in missing
    assert "reference holds: reference/reference.jsonl" in missing
    nowhere = tmp_path / "none" / "mlflow.db"
    assert error("abc", tracking_uri=f"sqlite:///{nowhere}").startswith(
        f"no MLflow store at {nowhere}")
    assert not nowhere.exists()
    assert error("runs/abc").startswith("invalid MLflow run 'runs/abc'")


def test_a_missing_mlflow_names_the_install(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(RegistryError,
                       match=r"needs mlflow .*: pip install 'inferwatch\[registry\]'$"):
        find_reference("abc", dst_dir=tmp_path, tracking_uri="sqlite:///x.db")


def test_baseline_set_reads_mlflow_before_kafka(mlflow_store: Store) -> None:
    """No broker here: a bad reference fails before the pin; argument checks come first."""
    runner = CliRunner()
    base = ["baseline", "set", "--series", KEY]
    env = {"MLFLOW_TRACKING_URI": mlflow_store.uri}
    out = runner.invoke(cli, [*base, "--mlflow-run", "nope"], env=env)
    assert out.exit_code == 1 and "Error: run 'nope' not found" in out.output
    out = runner.invoke(cli, [*base, "--mlflow-run", "models:/fraud/2"], env=env)
    assert out.exit_code == 1 and "has no reference file" in out.output
    out = runner.invoke(cli, [*base, "--file", __file__, "--mlflow-run", "x"], env=env)
    assert out.exit_code == 2 and "--file and --mlflow-run are alternatives" in out.output
    out = runner.invoke(cli, [*base, "--mlflow-artifact", "a.jsonl", "--from", "1", "--to", "2"])
    assert out.exit_code == 2 and "give both" in out.output


# --------------------------------------------------------------------------- the summary
def test_window_rows_become_points_stepped_by_window_index() -> None:
    rows = [{"window_start_ms": 600_000, "window_end_ms": 660_000, "quality/accuracy": 0.5,
             "quality/ece": None, "serving/requests": 12, "serving/flag": True},
            {"window_start_ms": 660_000, "window_end_ms": 720_000, "quality/accuracy": 0.75}]
    assert window_points(rows) == [
        Point("quality/accuracy", 0.5, 660_000, 10), Point("serving/requests", 12.0, 660_000, 10),
        Point("quality/accuracy", 0.75, 720_000, 11)]
    tags = version_tags(window_points(rows), KEY)
    assert tags == {"inferwatch.accuracy": "0.75", "inferwatch.requests": "12",
                    "inferwatch.last_window": "1970-01-01T00:12:00Z", "inferwatch.series": KEY}


def test_query_rows_are_named_by_group() -> None:
    result = QueryResult(columns=["window_start_ms", "window_end_ms", "accuracy"],
                         types=["Int64", "Int64", "Nullable(Float64)"], rows=[[0, 10, 0.5]])
    assert summary_rows(result, "quality") == [
        {"window_start_ms": 0, "window_end_ms": 10, "quality/accuracy": 0.5}]
    sql = windows_sql("iw", "quality_windows", ["accuracy"], "a'b", 0, 10,
                      basis="inference_time")
    assert "series_key = 'a\\'b'" in sql and "basis = 'inference_time'" in sql


def _history(store: Store, run_id: str, key: str) -> list[tuple[int, int, float]]:
    return sorted((m.step, m.timestamp, m.value)
                  for m in store.client.get_metric_history(run_id, key))


def test_log_summary_writes_metrics_and_version_tags_once(mlflow_store: Store) -> None:
    rows = [{"window_start_ms": 60_000 * i, "window_end_ms": 60_000 * (i + 1),
             "quality/accuracy": (0.81, 0.82, 0.83)[i - 1], "serving/latency_p99_ms": 100.0 + i}
            for i in range(1, 4)]
    first = log_summary(mlflow_store.uri, "fraud", 1, rows, series_key=KEY)
    assert first.created and (first.logged, first.unchanged) == (6, 0)
    client = mlflow_store.client
    run = client.get_run(first.run_id)
    assert run.info.run_name == "inferwatch-monitoring"
    assert run.info.experiment_id == client.get_run(mlflow_store.run_id).info.experiment_id
    assert {k: v for k, v in run.data.tags.items() if k.startswith("inferwatch.")} == {
        "inferwatch.role": "monitoring", "inferwatch.model_name": "fraud",
        "inferwatch.model_version": "1", "inferwatch.series": KEY}
    assert _history(mlflow_store, first.run_id, "quality/accuracy") == [
        (1, 120_000, 0.81), (2, 180_000, 0.82), (3, 240_000, 0.83)]
    tags = client.get_model_version("fraud", "1").tags
    assert tags["inferwatch.accuracy"] == "0.83" and tags["inferwatch.latency_p99_ms"] == "103"
    assert tags["inferwatch.last_window"] == "1970-01-01T00:04:00Z"
    assert tags["inferwatch.monitoring_run"] == first.run_id and tags["stage"] == "candidate"

    # Again, with window 3's accuracy corrected and a new window 4: only those are logged.
    rows[2]["quality/accuracy"] = 0.9
    rows.append({"window_start_ms": 240_000, "window_end_ms": 300_000, "quality/accuracy": 0.7})
    again = log_summary(mlflow_store.uri, "fraud", "1", rows, series_key=KEY)
    assert (again.run_id, again.created, again.logged, again.unchanged) == (
        first.run_id, False, 2, 5)
    assert _history(mlflow_store, first.run_id, "quality/accuracy") == [
        (1, 120_000, 0.81), (2, 180_000, 0.82), (3, 240_000, 0.83), (3, 240_001, 0.9),
        (4, 300_000, 0.7)]
    assert client.get_model_version("fraud", "1").tags["inferwatch.accuracy"] == "0.7"


def test_log_summary_errors(mlflow_store: Store) -> None:
    row = {"window_start_ms": 0, "window_end_ms": 60_000, "quality/accuracy": 0.5}
    with pytest.raises(RegistryError, match="model 'fraud' version 7 not found"):
        log_summary(mlflow_store.uri, "fraud", 7, [row])
    with pytest.raises(RegistryError, match="nothing to log"):
        log_summary(mlflow_store.uri, "fraud", 1, [{**row, "quality/accuracy": None}])


# --------------------------------------------------------------------------- from the store
# Last in the module: the embedded store stays open until the module ends (see the top).
def test_log_summary_command_reads_the_newest_window_versions(store: Any,
                                                              mlflow_store: Store) -> None:
    db = store.settings.clickhouse.database
    store.client.command(f"""CREATE TABLE IF NOT EXISTS {db}.quality_windows (
        series_key String, labels Map(String, String), basis LowCardinality(String),
        window_start DateTime64(3, 'UTC'), window_end DateTime64(3, 'UTC'), version UInt32,
        inferences UInt64, feedback UInt64, labelled UInt64,
        label_coverage Nullable(Float64), accuracy Nullable(Float64),
        precision_macro Nullable(Float64), recall_macro Nullable(Float64),
        f1_macro Nullable(Float64), ece Nullable(Float64), mae Nullable(Float64),
        rmse Nullable(Float64), satisfaction_mean Nullable(Float64),
        thumbs_down_rate Nullable(Float64), business_value_per_request Nullable(Float64),
        estimated_accuracy Nullable(Float64))
        ENGINE = ReplacingMergeTree(version) ORDER BY (series_key, basis, window_start)""")
    start = (int(time.time()) // 60 - 120) * 60  # recent (the tables' TTL), a whole minute

    def at(seconds: int) -> str:
        return f"toDateTime64({seconds}, 3, 'UTC')"

    store.client.command(
        f"INSERT INTO {db}.quality_windows (series_key, basis, window_start, window_end, version,"
        " inferences, labelled, accuracy) VALUES "
        f"('{KEY}', 'inference_time', {at(start)}, {at(start + 60)}, 1, 10, 2, 0.5), "
        f"('{KEY}', 'inference_time', {at(start)}, {at(start + 60)}, 2, 10, 8, 0.875), "
        f"('{KEY}', 'feedback_time', {at(start)}, {at(start + 60)}, 1, 0, 3, 0.1), "
        f"('other', 'inference_time', {at(start)}, {at(start + 60)}, 1, 5, 5, 0.2)")
    store.client.command(
        f"INSERT INTO {db}.window_metrics (series_key, window_start, window_end, version, "
        "requests, error_rate, latency_p99_ms) VALUES "
        f"('{KEY}', {at(start)}, {at(start + 60)}, 1, 10, 0.0, 120.0), "
        f"('{KEY}', {at(start + 60)}, {at(start + 120)}, 1, 4, 0.25, NULL)")

    rows, warnings = read_windows(store.settings, KEY, start, start + 3600)
    assert warnings == []
    quality = [r for r in rows if "quality/accuracy" in r]
    assert len(quality) == 1 and quality[0]["quality/accuracy"] == 0.875
    assert quality[0]["quality/labelled"] == 8
    assert quality[0]["window_end_ms"] == (start + 60) * 1000
    assert [r["serving/requests"] for r in rows if "serving/requests" in r] == [10, 4]
    with pytest.raises(ValueError, match="more than 1 window_metrics windows"):
        read_windows(store.settings, KEY, start, start + 3600, max_windows=1)
    elsewhere = msgspec.structs.replace(
        store.settings, clickhouse=msgspec.structs.replace(store.settings.clickhouse,
                                                           database="nowhere"))
    assert read_windows(elsewhere, KEY, start, start + 3600) == ([], [
        "no quality_windows table in ClickHouse database 'nowhere': quality figures skipped",
        "no window_metrics table in ClickHouse database 'nowhere': serving figures skipped"])

    env = {"INFERWATCH_HOME": str(store.settings.home_path),
           "MLFLOW_TRACKING_URI": mlflow_store.uri}
    args = ["registry", "log-summary", "--model", "fraud", "--version", "2", "--series", KEY,
            "--since", str(start), "--until", str(start + 3600)]
    out = CliRunner().invoke(cli, args, env=env)
    assert out.exit_code == 0, out.output
    points = len(window_points(rows))  # non-Nullable columns (errors, cost_usd_sum ...) too
    assert f"logged {points} points (0 unchanged) of 2 windows of {KEY}" in out.output
    version = mlflow_store.client.get_model_version("fraud", "2")
    assert version.tags["inferwatch.accuracy"] == "0.875"
    assert version.tags["inferwatch.error_rate"] == "0.25"
    run_id = version.tags["inferwatch.monitoring_run"]
    assert _history(mlflow_store, run_id, "quality/accuracy") == [
        (start // 60, (start + 60) * 1000, 0.875)]
    out = CliRunner().invoke(cli, [*args[:-4], "--since", "1h"], env=env)
    assert out.exit_code == 1 and "no windows of series" in out.output
