"""MLflow as the model registry: a training reference in, a monitoring summary out.

**In** (``inferwatch baseline set --mlflow-run``). :func:`parse_run_uri` reads what names a
trained model: ``RUN_ID``, ``runs:/RUN_ID[/PATH]``, ``models:/NAME/VERSION``,
``models:/NAME@ALIAS`` or an MLflow 3 logged model ``models:/m-…``. :func:`find_reference`
resolves it to the run that trained the model (a model version's ``run_id``, or its logged
model's ``source_run_id``) and to a local file of ``InferenceEvent`` records that
:func:`pipeline.scoring.baselines.build_from_file` reads (JSON, JSON lines, Parquet):

1. an artifact of that run, when named (``artifact``, or the PATH of a ``runs:/`` URI that
   ends in ``.json``/``.jsonl``/``.ndjson``/``.parquet``/``.pq``), downloaded with
   ``mlflow.artifacts.download_artifacts``;
2. else the run's logged dataset inputs (``mlflow.log_input``: ``run.inputs.dataset_inputs``),
   context ``training`` first, then the others in logged order; the first whose source is a
   file (``mlflow.data`` filesystem sources: a local path, or an artifact-store URI such as
   ``s3://``, downloaded with the source's own ``load``) in one of those formats. Other
   sources (HTTP, Delta, Hugging Face, Spark, CSV files) are skipped, and the error says why.

The baseline records where it came from in its ``source`` (:attr:`ReferenceData.source`:
``mlflow:models:/NAME/V run=… dataset=NAME@DIGEST``); the run's and version's tags have no
field on the baseline, so the command prints them and this module logs them.

**Out** (``inferwatch registry log-summary``). :func:`log_summary` writes one point per window
and figure as metrics of a run linked to the registered model version, which is what MLflow
3's API supports cleanly for a time series (a model version has tags, not metric
histories): the run is named ``inferwatch-monitoring``, lives in the experiment of the
version's source run (else of its logged model, else an experiment ``inferwatch-monitoring``),
and carries tags ``inferwatch.role=monitoring``, ``inferwatch.model_name``,
``inferwatch.model_version`` and ``inferwatch.series``; when the version has an MLflow 3 logged
model, the run lists it as a model input. Each point's ``step`` is the window index (window
start / window length, so equal windows line up across runs and re-runs) and its
``timestamp`` the window end in milliseconds. Re-logging is idempotent: a point whose step
already holds the same value is skipped; a changed value (a window corrected later, as
quality fills in when labels arrive) is logged again at the same step, 1 ms after the point
it corrects, so it is the one MLflow shows as latest. The version itself gets tags with the
newest value of the headline figures (``inferwatch.accuracy``, ``inferwatch.error_rate``, …),
``inferwatch.last_window``, ``inferwatch.series`` and ``inferwatch.monitoring_run``.

``mlflow`` is imported inside the functions that talk to it: the workers never need it, and
a missing install is one :class:`RegistryError` naming ``pip install 'inferwatch[registry]'``
(or ``pip install mlflow``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.scoring.baselines import format_time

__all__ = [
    "MONITORING_RUN",
    "Point",
    "ReferenceData",
    "RegistryError",
    "RunTarget",
    "SummaryLog",
    "baseline_from_mlflow",
    "find_reference",
    "log_summary",
    "parse_run_uri",
    "version_tags",
    "window_points",
]

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".pq")  # what build_from_file reads
TRAINING = "training"  # the mlflow.data.context of a training dataset input
MONITORING_RUN = "inferwatch-monitoring"  # run name, and the fallback experiment's name
ROLE_TAG, MODEL_TAG, VERSION_TAG, SERIES_TAG = (
    "inferwatch.role", "inferwatch.model_name", "inferwatch.model_version", "inferwatch.series")
# Figures whose newest value is also set as a model version tag ``inferwatch.<name>``.
HEADLINE = frozenset({
    "accuracy", "precision_macro", "recall_macro", "f1_macro", "ece", "label_coverage",
    "estimated_accuracy", "mae", "rmse", "satisfaction_mean", "thumbs_down_rate",
    "business_value_per_request", "requests", "error_rate", "latency_p99_ms",
    "cost_per_request_usd", "slo_compliance",
})
_BATCH = 1000  # metrics per log_batch request (MLflow's limit)


class RegistryError(RuntimeError):
    """The registry cannot give or take what was asked; the message is one line saying why."""


# --------------------------------------------------------------------------- naming a run
class RunTarget(NamedTuple):
    """What ``--mlflow-run`` named, parsed; exactly one of run_id, model_name, logged_model."""

    uri: str
    run_id: str | None = None
    artifact_path: str | None = None  # the PATH of runs:/RUN_ID/PATH
    model_name: str | None = None
    model_version: str | None = None
    alias: str | None = None
    logged_model: str | None = None


def parse_run_uri(text: str) -> RunTarget:
    """Parse a run id, ``runs:/`` or ``models:/`` URI. Pure; ``ValueError`` says what is accepted.

    >>> parse_run_uri("runs:/abc123/data/train.parquet")[1:3]
    ('abc123', 'data/train.parquet')
    >>> t = parse_run_uri("models:/fraud/3"); (t.model_name, t.model_version)
    ('fraud', '3')
    >>> parse_run_uri("models:/fraud@champion").alias, parse_run_uri("abc123").run_id
    ('champion', 'abc123')
    >>> parse_run_uri("models:/m-0a1b").logged_model
    'm-0a1b'
    """
    uri = text.strip()
    accepted = ("RUN_ID, runs:/RUN_ID[/PATH], models:/NAME/VERSION, models:/NAME@ALIAS "
                "or models:/MODEL_ID")
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").strip("/").partition("/")
        if run_id:
            return RunTarget(uri, run_id=run_id, artifact_path=path or None)
    elif uri.startswith("models:/"):
        rest = uri.removeprefix("models:/").strip("/")
        name, at, alias = rest.rpartition("@")
        if at and name and alias and "/" not in alias:
            return RunTarget(uri, model_name=name, alias=alias)
        name, slash, version = rest.rpartition("/")
        if slash and name and version.isdigit():
            return RunTarget(uri, model_name=name, model_version=version)
        if rest.startswith("m-") and "/" not in rest:
            return RunTarget(uri, logged_model=rest)
        if slash and name and version:
            raise ValueError(f"invalid model URI {text!r}: the version must be a number "
                             f"(or use models:/{name}@ALIAS)")
    elif uri and ":" not in uri and "/" not in uri:
        return RunTarget(uri, run_id=uri)
    raise ValueError(f"invalid MLflow run {text!r}: use {accepted}")


# --------------------------------------------------------------------------- the client
def _mlflow() -> Any:
    try:
        import mlflow
        import mlflow.artifacts
        import mlflow.data
    except ImportError as exc:
        raise RegistryError(f"the MLflow link needs mlflow (no module named {exc.name!r}): "
                            "pip install 'inferwatch[registry]'") from None
    return mlflow


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _client(tracking_uri: str | None) -> tuple[Any, str]:
    """(MlflowClient, its tracking URI). A ``sqlite:`` store that does not exist is an error
    here: MLflow would create an empty one and then find nothing in it."""
    mlflow = _mlflow()
    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        db = urllib.parse.unquote(uri.removeprefix("sqlite:///").split("?", 1)[0])
        if db and db != ":memory:" and not Path(db).is_file():
            default = "" if tracking_uri else " (MLflow's default; set MLFLOW_TRACKING_URI)"
            raise RegistryError(f"no MLflow store at {db}: tracking URI {uri}{default}")
    try:
        return mlflow.MlflowClient(tracking_uri=uri), uri
    except Exception as exc:  # an unknown scheme, a file store refused in MLflow 3 ...
        raise RegistryError(f"MLflow ({uri}): {_first_line(exc)}") from exc


@contextlib.contextmanager
def _errors(uri: str) -> Iterator[None]:
    """MLflow's and the network's exceptions as one-line :class:`RegistryError`s."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError:
        raise
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"MLflow ({uri}): {_first_line(exc)}") from exc


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


# --------------------------------------------------------------------------- in: the reference
@dataclass(frozen=True)
class ReferenceData:
    """A local file of reference events and the registry's metadata about it."""

    path: Path
    run_id: str
    run_name: str
    experiment_id: str
    model_name: str | None = None
    model_version: str | None = None
    dataset: str | None = None  # "NAME@DIGEST" of the dataset input used
    context: str | None = None  # its mlflow.data.context ("none" when it has none)
    artifact: str | None = None
    run_tags: dict[str, str] = field(default_factory=dict)  # user tags (no mlflow.*)
    version_tags: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The baseline's ``source``: what it was built from, in one line.

        >>> ReferenceData(Path("t.jsonl"), "r1", "train", "0", "fraud", "3",
        ...               dataset="train@d1", context="training").source
        'mlflow:models:/fraud/3 run=r1 dataset=train@d1'
        """
        head = (f"mlflow:models:/{self.model_name}/{self.model_version} run={self.run_id}"
                if self.model_name else f"mlflow:runs:/{self.run_id}")
        if self.artifact is not None:
            return f"{head} artifact={self.artifact}"
        return f"{head} dataset={self.dataset}"


def _resolve(client: Any, target: RunTarget) -> tuple[Any, Any | None]:
    """(the run, the model version or None) that ``target`` names."""
    from mlflow.exceptions import MlflowException

    version = None
    run_id = target.run_id
    if target.model_name is not None:
        name = target.model_name
        what = (f"model {name!r} alias {target.alias!r}" if target.alias
                else f"model {name!r} version {target.model_version}")
        try:
            version = (client.get_model_version_by_alias(name, target.alias) if target.alias
                       else client.get_model_version(name, target.model_version))
        except MlflowException as exc:
            if _not_found(exc):
                raise RegistryError(f"{what} not found in the registry") from None
            raise
        run_id = version.run_id or None
        model_id = getattr(version, "model_id", None)
        if not run_id and model_id:
            run_id = client.get_logged_model(model_id).source_run_id or None
        if not run_id:
            raise RegistryError(f"{what} has no source run (source {version.source}): "
                                "name its training run instead (RUN_ID or runs:/RUN_ID)")
    elif target.logged_model is not None:
        try:
            run_id = client.get_logged_model(target.logged_model).source_run_id or None
        except MlflowException as exc:
            if _not_found(exc):
                raise RegistryError(f"logged model {target.logged_model!r} not found") from None
            raise
        if not run_id:
            raise RegistryError(f"logged model {target.logged_model!r} has no source run")
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if _not_found(exc):
            via = "" if target.run_id else f" (the source run of {target.uri})"
            raise RegistryError(f"run {run_id!r} not found{via}") from None
        raise
    return run, version


def _is_data_file(name: str) -> bool:
    return urllib.parse.urlparse(name).path.lower().endswith(DATA_SUFFIXES)


def _local_path(uri: str) -> Path | None:
    """The local path of a ``file:`` URI or a plain path; None for other schemes."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] in (":\\", ":/")):
        return Path(uri)  # a path (or a Windows drive path)
    return None


def _one_file(local: Path, what: str) -> Path:
    """``local`` if a file; the only data file of a directory; else an error naming them."""
    if local.is_file():
        return local
    found = sorted(p for p in local.rglob("*") if p.is_file() and _is_data_file(p.name))
    if len(found) == 1:
        return found[0]
    names = ", ".join(str(p.relative_to(local)) for p in found[:5]) or "none"
    raise RegistryError(f"{what} is a directory with {len(found)} JSON/Parquet files "
                        f"({names}): name one file")


def _download_artifact(client: Any, uri: str, run_id: str, artifact: str,
                       dst_dir: Path) -> Path:
    from mlflow.exceptions import MlflowException

    mlflow = _mlflow()
    try:
        if "://" in artifact:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=artifact, dst_path=str(dst_dir), tracking_uri=uri)
        else:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact.strip("/"), dst_path=str(dst_dir),
                tracking_uri=uri)
    except (MlflowException, OSError) as exc:
        parent = artifact.strip("/").rpartition("/")[0] or None
        try:
            listing = [f.path for f in client.list_artifacts(run_id, parent)][:10]
        except (MlflowException, OSError):
            listing = []
        there = f"; {parent or 'its root'} holds: {', '.join(listing)}" if listing else ""
        raise RegistryError(f"cannot download artifact {artifact!r} of run {run_id}: "
                            f"{_first_line(exc)}{there}") from exc
    return _one_file(Path(local), f"artifact {artifact!r}")


def _context(dataset_input: Any) -> str:
    return next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), "")


def _dataset_file(run: Any, dst_dir: Path) -> tuple[Path, str, str]:
    """(local file, "NAME@DIGEST", context) of the run's first usable dataset input."""
    from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource

    mlflow = _mlflow()
    inputs = list(run.inputs.dataset_inputs) if run.inputs is not None else []
    skipped: list[str] = []
    for item in sorted(inputs, key=lambda i: _context(i) != TRAINING):  # stable: logged order
        dataset, context = item.dataset, _context(item) or "none"
        label = f"dataset {dataset.name!r} (context {context}, {dataset.source_type} source)"
        try:
            source = mlflow.data.get_source(item)
        except Exception as exc:  # a source type this install cannot parse
            skipped.append(f"{label}: {_first_line(exc)}")
            continue
        if not isinstance(source, FileSystemDatasetSource):
            skipped.append(f"{label}: not a file")
            continue
        if not _is_data_file(source.uri):
            skipped.append(f"{label}: {source.uri} is not JSON, JSON lines or Parquet")
            continue
        local = _local_path(source.uri)
        if local is not None:
            if not local.is_file():
                skipped.append(f"{label}: {local} is not a file on this machine")
                continue
        else:
            try:
                local = _one_file(Path(source.load(dst_path=str(dst_dir / "dataset"))), label)
            except Exception as exc:  # the store's client: credentials, network, missing
                skipped.append(f"{label}: cannot download {source.uri}: {_first_line(exc)}")
                continue
        return local, f"{dataset.name}@{dataset.digest}", context
    why = "; ".join(skipped) if skipped else "it logged no dataset inputs"
    raise RegistryError(f"run {run.info.run_id} has no reference file: {why}. Log the events "
                        "as an artifact (JSON lines or Parquet) and name it")


def find_reference(
    run_uri: str,
    *,
    dst_dir: str | Path,
    tracking_uri: str | None = None,
    artifact: str | None = None,
) -> ReferenceData:
    """The reference events of the model ``run_uri`` names, as a local file, with metadata.

    Downloads go under ``dst_dir`` (the caller's temporary directory); a dataset whose
    source is a local file is used where it is. Raises :class:`RegistryError`.
    """
    try:
        target = parse_run_uri(run_uri)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    client, uri = _client(tracking_uri)
    with _errors(uri):
        run, version = _resolve(client, target)
        run_id = run.info.run_id
        if artifact is None and target.artifact_path and _is_data_file(target.artifact_path):
            artifact = target.artifact_path
        if run.info.lifecycle_stage == "deleted":
            raise RegistryError(f"run {run_id} is deleted")
        dataset = context = None
        if artifact is not None:
            path = _download_artifact(client, uri, run_id, artifact, Path(dst_dir))
        else:
            path, dataset, context = _dataset_file(run, Path(dst_dir))
        reference = ReferenceData(
            path=path, run_id=run_id, run_name=run.info.run_name or "",
            experiment_id=run.info.experiment_id,
            model_name=version.name if version is not None else None,
            model_version=str(version.version) if version is not None else None,
            dataset=dataset, context=context, artifact=artifact,
            run_tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            version_tags=dict(version.tags) if version is not None else {},
        )
    log.info("MLflow reference %s (%s): run tags %s, version tags %s", reference.source,
             reference.path, reference.run_tags, reference.version_tags)
    return reference


def baseline_from_mlflow(
    run_uri: str,
    spec: Any,
    series: str | Mapping[str, str],
    *,
    dst_dir: str | Path,
    tracking_uri: str | None = None,
    artifact: str | None = None,
    start: float | None = None,
    end: float | None = None,
    created_by: str = "",
    prices: Any = None,
) -> tuple[Any, ReferenceData]:
    """(unstored :class:`~pipeline.scoring.baselines.Baseline`, its reference) of a model in
    MLflow: :func:`find_reference`, then ``build_from_file`` with ``source`` set to
    :attr:`ReferenceData.source`. ``spec`` is a ``MonitorSpec``, ``prices`` the price table.
    Raises :class:`RegistryError` and ``BaselineError``."""
    import msgspec

    from pipeline.scoring.baselines import build_from_file

    reference = find_reference(run_uri, dst_dir=dst_dir, tracking_uri=tracking_uri,
                               artifact=artifact)
    built = build_from_file(reference.path, spec, series, start=start, end=end,
                            created_by=created_by, prices=prices)
    return msgspec.structs.replace(built, source=reference.source), reference


# --------------------------------------------------------------------------- out: the summary
class Point(NamedTuple):
    """One metric point as MLflow stores it."""

    key: str
    value: float
    timestamp_ms: int
    step: int


def window_points(rows: Iterable[Mapping[str, Any]]) -> list[Point]:
    """Metric points of window rows. Pure.

    Each row has ``window_start_ms`` and ``window_end_ms``; every other key is a figure
    (e.g. ``quality/accuracy``) whose numeric value becomes a point with ``step`` = the window
    index (start / length) and ``timestamp`` = the window end; ``None`` (no data) is skipped.

    >>> window_points([{"window_start_ms": 60_000, "window_end_ms": 120_000,
    ...                 "quality/accuracy": 0.9, "quality/mae": None, "serving/requests": 7}])
    [Point(key='quality/accuracy', value=0.9, timestamp_ms=120000, step=1), \
Point(key='serving/requests', value=7.0, timestamp_ms=120000, step=1)]
    """
    points = []
    for row in rows:
        start, end = int(row["window_start_ms"]), int(row["window_end_ms"])
        step = start // (end - start) if end > start else start // 1000
        for key, value in row.items():
            if key in ("window_start_ms", "window_end_ms") or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            points.append(Point(key, float(value), end, step))
    return points


def version_tags(points: Sequence[Point], series_key: str = "") -> dict[str, str]:
    """Model version tags for ``points``: the newest value of each headline figure as
    ``inferwatch.<name>``, the newest window end as ``inferwatch.last_window``. Pure.

    >>> version_tags([Point("quality/accuracy", 0.8, 60_000, 1),
    ...               Point("quality/accuracy", 0.91234567, 120_000, 2),
    ...               Point("serving/late_events", 3.0, 120_000, 2)], "model=m")
    {'inferwatch.accuracy': '0.912346', 'inferwatch.last_window': '1970-01-01T00:02:00Z', \
'inferwatch.series': 'model=m'}
    """
    newest: dict[str, Point] = {}
    for point in points:
        name = point.key.rpartition("/")[2]
        held = newest.get(name)
        if name in HEADLINE and (held is None or (point.step, point.timestamp_ms)
                                 >= (held.step, held.timestamp_ms)):
            newest[name] = point
    tags = {f"inferwatch.{name}": f"{p.value:.6g}" for name, p in sorted(newest.items())}
    if points:
        tags["inferwatch.last_window"] = format_time(max(p.timestamp_ms for p in points) / 1000)
    if series_key:
        tags["inferwatch.series"] = series_key
    return tags


@dataclass(frozen=True)
class SummaryLog:
    """What :func:`log_summary` wrote."""

    run_id: str
    experiment_id: str
    created: bool  # the monitoring run was made by this call
    logged: int  # points written (new or corrected)
    unchanged: int  # points already there with the same value
    tags: dict[str, str]  # set on the model version


def _experiment_for(client: Any, version: Any) -> str:
    """The version's source run's experiment, else its logged model's, else ours."""
    from mlflow.exceptions import MlflowException

    candidates = []
    with contextlib.suppress(MlflowException):
        if version.run_id:
            candidates.append(client.get_run(version.run_id).info.experiment_id)
    with contextlib.suppress(MlflowException):
        if getattr(version, "model_id", None):
            candidates.append(client.get_logged_model(version.model_id).experiment_id)
    for experiment_id in candidates:
        with contextlib.suppress(MlflowException):
            if client.get_experiment(experiment_id).lifecycle_stage == "active":
                return str(experiment_id)
    found = client.get_experiment_by_name(MONITORING_RUN)
    if found is not None and found.lifecycle_stage == "active":
        return str(found.experiment_id)
    return str(client.create_experiment(MONITORING_RUN))


def _monitoring_run(client: Any, experiment_id: str, version: Any,
                    series_key: str) -> tuple[str, bool]:
    """(run id, created) of the version's monitoring run for ``series_key``."""
    wanted = {MODEL_TAG: version.name, VERSION_TAG: str(version.version),
              SERIES_TAG: series_key}
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'monitoring'",
                                  max_results=1000, order_by=["attributes.start_time ASC"],
                                  page_token=token)
        for run in page:
            if all(run.data.tags.get(k, "") == v for k, v in wanted.items()):
                return run.info.run_id, False
        token = page.token
        if not token:
            break
    note = (f"Window summaries of series {series_key or '(all)'} for model {version.name} "
            f"version {version.version}, logged by `inferwatch registry log-summary`. "
            "step = window index (window start / window length), timestamp = window end.")
    run = client.create_run(experiment_id, run_name=MONITORING_RUN,
                            tags={ROLE_TAG: "monitoring", **wanted,
                                  "mlflow.note.content": note})
    model_id = getattr(version, "model_id", None)
    if model_id:
        from mlflow.entities import LoggedModelInput
        from mlflow.exceptions import MlflowException

        try:
            client.log_inputs(run.info.run_id, models=[LoggedModelInput(model_id)])
        except MlflowException as exc:  # an older server: the tags still link the run
            log.warning("could not link run %s to logged model %s: %s", run.info.run_id,
                        model_id, _first_line(exc))
    return run.info.run_id, True


def _new_points(client: Any, run_id: str, points: Sequence[Point]) -> tuple[list[Point], int]:
    """(points to log, how many are already there unchanged)."""
    keys = sorted({p.key for p in points})
    last: dict[tuple[str, int], tuple[int, float]] = {}
    for key in keys:
        for metric in client.get_metric_history(run_id, key):
            held = last.get((key, metric.step))
            if held is None or metric.timestamp >= held[0]:
                last[(key, metric.step)] = (metric.timestamp, metric.value)
    fresh, unchanged = [], 0
    for point in points:
        held = last.get((point.key, point.step))
        if held is None:
            fresh.append(point)
        elif held[1] == point.value or (math.isnan(held[1]) and math.isnan(point.value)):
            unchanged += 1
        else:
            fresh.append(point._replace(timestamp_ms=max(point.timestamp_ms, held[0] + 1)))
    return fresh, unchanged


def log_summary(
    tracking_uri: str | None,
    model_name: str,
    version: str | int,
    rows: Iterable[Mapping[str, Any]],
    *,
    series_key: str = "",
) -> SummaryLog:
    """Log window rows (see :func:`window_points`) to registered model ``model_name``
    ``version``: points on its monitoring run, headline tags on the version (module doc).

    Raises :class:`RegistryError` when MLflow or the version cannot be reached, or no row
    holds a value.
    """
    points = window_points(rows)
    if not points:
        raise RegistryError("nothing to log: no window has a value")
    client, uri = _client(tracking_uri)
    with _errors(uri):
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        try:
            mv = client.get_model_version(model_name, str(version))
        except MlflowException as exc:
            if _not_found(exc):
                raise RegistryError(f"model {model_name!r} version {version} not found in "
                                    "the registry") from None
            raise
        experiment_id = _experiment_for(client, mv)
        run_id, created = _monitoring_run(client, experiment_id, mv, series_key)
        fresh, unchanged = (list(points), 0) if created else _new_points(client, run_id, points)
        for first in range(0, len(fresh), _BATCH):
            client.log_batch(run_id, metrics=[
                Metric(p.key, p.value, p.timestamp_ms, p.step)
                for p in fresh[first:first + _BATCH]])
        tags = {**version_tags(points, series_key), "inferwatch.monitoring_run": run_id}
        for key, value in tags.items():
            client.set_model_version_tag(mv.name, str(mv.version), key, value)
        client.set_terminated(run_id, "FINISHED")
    return SummaryLog(run_id=run_id, experiment_id=experiment_id, created=created,
                      logged=len(fresh), unchanged=unchanged, tags=tags)
