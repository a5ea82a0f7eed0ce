"""A monitoring summary out to MLflow (``inferwatch registry log-summary``).

:func:`log_summary` writes one point per window and figure as metrics of a run linked to the
registered model version, which is what MLflow 3's API supports cleanly for a time series (a
model version has tags, not metric histories): the run is named ``inferwatch-monitoring``,
lives in the experiment of the version's source run (else of its logged model, else an
experiment ``inferwatch-monitoring``), and carries tags ``inferwatch.role=monitoring``,
``inferwatch.model_name``, ``inferwatch.model_version`` and ``inferwatch.series``; when the
version has an MLflow 3 logged model, the run lists it as a model input. Each point's ``step``
is the window index (window start / window length, so equal windows line up across runs and
re-runs) and its ``timestamp`` the window end in milliseconds. Re-logging is idempotent: a
point whose step already holds the same value is skipped; a changed value (a window corrected
later, as quality fills in when labels arrive) is logged again at the same step, 1 ms after
the point it corrects, so it is the one MLflow shows as latest. The version itself gets tags
with the newest value of the headline figures (``inferwatch.accuracy``,
``inferwatch.error_rate``, …), ``inferwatch.last_window``, ``inferwatch.series`` and
``inferwatch.monitoring_run``. ``mlflow`` is imported lazily, as everywhere in
:mod:`pipeline.registry`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pipeline.registry.mlflow import RegistryError, _client, _errors, _first_line, _not_found
from pipeline.scoring.baselines import format_time

__all__ = ["MONITORING_RUN", "Point", "SummaryLog", "log_summary", "version_tags",
           "window_points"]

log = logging.getLogger(__name__)

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
