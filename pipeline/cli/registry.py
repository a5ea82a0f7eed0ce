"""``inferwatch registry``: the model registry link (MLflow), monitoring back to the model.

``log-summary`` reads a series' windows from ClickHouse through the read-only query path
(quality from ``quality_windows``, basis ``inference_time``; serving figures from
``window_metrics``; the newest version of each window) and logs them to a registered model
version with :func:`pipeline.registry.summary.log_summary`. The baseline direction (MLflow →
InferWatch) is ``inferwatch baseline set --mlflow-run``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli import _settings, cli, when_arg
from pipeline.sinks.clickhouse.sql import literal

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.sinks.clickhouse.query import QueryResult

__all__ = ["QUALITY_COLUMNS", "SERVING_COLUMNS", "read_windows", "summary_rows", "windows_sql"]

# What is logged, per table: the metric key is "<group>/<column>" (MLflow's UI groups charts
# by the part before "/").
QUALITY_COLUMNS = (
    "inferences", "feedback", "labelled", "label_coverage", "accuracy", "precision_macro",
    "recall_macro", "f1_macro", "ece", "mae", "rmse", "satisfaction_mean", "thumbs_down_rate",
    "business_value_per_request", "estimated_accuracy",
)
SERVING_COLUMNS = (
    "requests", "request_rate_per_s", "errors", "error_rate", "latency_p50_ms",
    "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms",
    "input_tokens_sum", "output_tokens_sum", "output_tokens_per_s", "cache_hit_rate",
    "cost_usd_sum", "cost_per_request_usd", "slo_compliance", "feedback_mean",
    "late_events",
)
# (group, table, columns, basis): the sources of a summary, in the order they are read.
_SOURCES = (
    ("quality", "quality_windows", QUALITY_COLUMNS, "inference_time"),
    ("serving", "window_metrics", SERVING_COLUMNS, None),
)


def _ms_time(seconds: float) -> str:
    return f"fromUnixTimestamp64Milli(toInt64({round(seconds * 1000)}), 'UTC')"


def windows_sql(database: str, table: str, columns: Sequence[str], series_key: str,
                start: float, end: float, *, basis: str | None = None,
                limit: int = 10_000) -> str:
    """The newest version of each window of ``series_key`` starting in ``[start, end)``.

    ``LIMIT 1 BY window_start`` after ordering by version (newest first) keeps one row per
    window whatever the table's sorting key, merged or not. Pure.

    >>> sql = windows_sql("iw", "window_metrics", ["requests"], "model=m", 0, 60, limit=5)
    >>> "FROM iw.window_metrics WHERE series_key = 'model=m'" in sql, sql.endswith("LIMIT 5")
    (True, True)
    """
    where = [f"series_key = {literal(series_key)}",
             f"window_start >= {_ms_time(start)}", f"window_start < {_ms_time(end)}"]
    if basis is not None:
        where.append(f"basis = {literal(basis)}")
    return (f"SELECT toUnixTimestamp64Milli(window_start) AS window_start_ms, "
            f"toUnixTimestamp64Milli(window_end) AS window_end_ms, {', '.join(columns)} "
            f"FROM {database}.{table} WHERE {' AND '.join(where)} "
            f"ORDER BY window_start, version DESC LIMIT 1 BY window_start LIMIT {int(limit)}")


def summary_rows(result: QueryResult, group: str) -> list[dict[str, Any]]:
    """Query rows as the window rows :func:`~pipeline.registry.summary.log_summary` takes:
    the window bounds in ms, every other column as ``<group>/<column>``. Pure."""
    rows = []
    for row in result.rows:
        record = dict(zip(result.columns, row, strict=True))
        out = {"window_start_ms": record.pop("window_start_ms"),
               "window_end_ms": record.pop("window_end_ms")}
        out.update((f"{group}/{name}", value) for name, value in record.items())
        rows.append(out)
    return rows


def read_windows(settings: Settings, series_key: str, start: float, end: float, *,
                 max_windows: int = 10_000) -> tuple[list[dict[str, Any]], list[str]]:
    """(window rows of both tables, warnings). A table that does not exist yet is a warning
    (quality needs the quality stage); more than ``max_windows`` windows in one table is a
    ``ValueError``, so a wide range cannot flood MLflow by accident."""
    from pipeline.sinks.clickhouse.query import QueryError, run_query

    rows: list[dict[str, Any]] = []
    warnings = []
    for group, table, columns, basis in _SOURCES:
        sql = windows_sql(settings.clickhouse.database, table, columns, series_key, start, end,
                          basis=basis, limit=max_windows + 1)
        try:
            result = run_query(settings, sql)
        except QueryError as exc:
            if "UNKNOWN_TABLE" in str(exc) or "UNKNOWN_DATABASE" in str(exc):
                warnings.append(f"no {table} table in ClickHouse database "
                                f"{settings.clickhouse.database!r}: {group} figures skipped")
                continue
            raise
        if len(result.rows) > max_windows:
            raise ValueError(f"more than {max_windows} {table} windows in the range: "
                             "narrow --since/--until or raise --max-windows")
        rows.extend(summary_rows(result, group))
    return rows, warnings


@cli.group()
def registry() -> None:
    """The model registry link (MLflow): monitoring summaries back to a model version.

    Reading a baseline from MLflow is `inferwatch baseline set --mlflow-run`. Both need
    `pip install mlflow`; see docs/registry.md.
    """


@registry.command("log-summary")
@click.option("--model", "model_name", required=True, metavar="NAME",
              help="Registered model name in MLflow.")
@click.option("--version", "version", required=True, metavar="V",
              help="Registered model version (a number).")
@click.option("--series", required=True, metavar="KEY",
              help="Series key whose windows are logged: name=value pairs of "
                   "metrics.series_labels joined by |, e.g. "
                   "'model=fraud|model_version=3|operation=classify'.")
@click.option("--since", default="24h", show_default=True, metavar="TIME",
              help="Windows starting at or after: ISO-8601 (naive = UTC), Unix seconds, or a "
                   "duration ago (24h, 7d).")
@click.option("--until", default=None, metavar="TIME",
              help="Windows starting before this (default: now).")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
              help="MLflow tracking server or store, e.g. http://mlflow:5000 or "
                   "sqlite:///mlflow.db (env: MLFLOW_TRACKING_URI).")
@click.option("--max-windows", default=10_000, show_default=True, type=click.IntRange(1),
              help="Refuse a range with more windows than this per table.")
@click.pass_context
def log_summary_command(ctx: click.Context, model_name: str, version: str, series: str,
                        since: str, until: str | None, tracking_uri: str | None,
                        max_windows: int) -> None:
    """Log a series' window summaries to an MLflow registered model version.

    Per window: quality (accuracy, F1, calibration error, label coverage ...; basis
    inference_time, the newest fill-in) and serving figures (requests, error rate, latency
    percentiles, tokens, cost ...) become metrics of the version's `inferwatch-monitoring`
    run (step = window index, timestamp = window end); the version gets tags with the newest
    headline values (inferwatch.accuracy, inferwatch.error_rate, inferwatch.last_window ...).
    Running it again logs only what is new or corrected: schedule it, e.g. hourly.

    \b
    Example:
      inferwatch registry log-summary --model fraud --version 3 \\
          --series 'model=fraud|model_version=3|operation=classify' --since 7d \\
          --tracking-uri http://mlflow:5000
    """
    from pipeline.registry.mlflow import RegistryError
    from pipeline.registry.summary import log_summary
    from pipeline.scoring.baselines import BaselineError, format_time, resolve_series
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sinks.clickhouse.query import QueryError

    settings = _settings(ctx)
    if not version.isdigit():
        raise click.BadParameter(f"{version!r} is not a version number", param_hint="--version")
    now = time.time()
    start = when_arg(since, "--since", now)
    end = when_arg(until, "--until", now) if until is not None else now
    if end <= start:
        raise click.BadParameter(f"{format_time(end)} is not after --since {format_time(start)}",
                                 param_hint="--until")
    try:
        key, _ = resolve_series(settings, series)
        rows, warnings = read_windows(settings, key, start, end, max_windows=max_windows)
    except (BaselineError, QueryError, StoreBusyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if not rows:
        raise click.ClickException(f"no windows of series {key} between {format_time(start)} "
                                   f"and {format_time(end)}")
    try:
        logged = log_summary(tracking_uri, model_name, version, rows, series_key=key)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    windows = len({(r["window_start_ms"], r["window_end_ms"]) for r in rows})
    run = "new run" if logged.created else "run"
    click.echo(f"logged {logged.logged} points ({logged.unchanged} unchanged) of {windows} "
               f"windows of {key} to {model_name} v{version}: {run} {logged.run_id} "
               f"(experiment {logged.experiment_id})")
    click.echo("  version tags: " + ", ".join(f"{k}={v}" for k, v in logged.tags.items()))
