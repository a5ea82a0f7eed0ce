"""``inferwatch baseline``: pin and list drift baselines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.cli import _settings, cli

if TYPE_CHECKING:
    from pipeline.registry.reference import ReferenceData


@cli.group()
def baseline() -> None:
    """Pinned drift baselines: the reference a series' windows are compared with.

    A baseline is built once from stored events (or a file) and kept, versioned, on the
    compacted baselines topic; workers follow it. Setting it again stores version + 1.
    """


def _features(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))


@baseline.command("set")
@click.option("--series", required=True, metavar="KEY",
              help="Series key: name=value pairs of metrics.series_labels joined by |, "
                   "e.g. 'model=gpt-chat|model_version=2024-06|operation=chat'.")
@click.option("--from", "start", metavar="TIME",
              help="Start of the event-time range, inclusive: ISO-8601 (naive = UTC) or "
                   "Unix seconds. Required unless --file.")
@click.option("--to", "end", metavar="TIME",
              help="End of the event-time range, exclusive. Required unless --file.")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Build from a file of InferenceEvents instead of ClickHouse: JSON array, "
                   "JSON lines or Parquet. The whole file is used (--from/--to filter it).")
@click.option("--mlflow-run", "mlflow_run", metavar="URI",
              help="Build from a model's training reference in MLflow instead: RUN_ID, "
                   "runs:/RUN_ID[/PATH], models:/NAME/VERSION or models:/NAME@ALIAS. The "
                   "run's logged training dataset (a JSON/JSONL/Parquet file of "
                   "InferenceEvents) is used, or --mlflow-artifact. Needs `pip install mlflow`.")
@click.option("--mlflow-artifact", "mlflow_artifact", metavar="PATH",
              help="With --mlflow-run: the run's artifact holding the events (JSON, JSON "
                   "lines or Parquet), e.g. reference/events.parquet.")
@click.option("--mlflow-tracking-uri", "mlflow_tracking_uri", envvar="MLFLOW_TRACKING_URI",
              metavar="URI",
              help="MLflow tracking server or store, e.g. http://mlflow:5000 or "
                   "sqlite:///mlflow.db (env: MLFLOW_TRACKING_URI).")
@click.option("--numeric-features", default=None, metavar="A,B",
              help="Numeric features (keys of the event's features) to monitor "
                   "(default: drift.numeric_features of the config).")
@click.option("--categorical-features", default=None, metavar="C,D",
              help="Categorical features to monitor (default: drift.categorical_features).")
@click.option("--prediction", default=None,
              type=click.Choice(["categorical", "numeric", "none"]),
              help="How the prediction is compared (default: drift.prediction).")
@click.option("--by", "created_by", default=lambda: os.environ.get("USER", ""),
              help="Who (default: $USER).")
@click.pass_context
def baseline_set(ctx: click.Context, series: str, start: str | None, end: str | None,
                 path: Path | None, mlflow_run: str | None, mlflow_artifact: str | None,
                 mlflow_tracking_uri: str | None, numeric_features: str | None,
                 categorical_features: str | None, prediction: str | None,
                 created_by: str) -> None:
    """Pin a series' drift baseline from its stored events (or a file, or MLflow); prints
    the version.

    Reads the raw events of SERIES in [--from, --to) from ClickHouse (read-only; through
    the running worker when it owns the embedded store) and stores histograms of the
    features, prediction, confidence, latency, time to first token, tokens and cost.
    With --mlflow-run the events are the model's training reference in MLflow, and the
    baseline's source names the run, model version and dataset (docs/registry.md).

    \b
    Example:
      inferwatch baseline set --series 'model=gpt-chat|model_version=2024-06|operation=chat' \\
          --from 2024-06-01T00:00:00Z --to 2024-06-08T00:00:00Z \\
          --numeric-features prompt_length --categorical-features language
      inferwatch baseline set --series 'model=gpt-chat|model_version=2024-09|operation=chat' \\
          --file training-events.parquet
      inferwatch baseline set --series 'model=fraud|model_version=3|operation=classify' \\
          --mlflow-run models:/fraud/3 --mlflow-tracking-uri http://mlflow:5000
    """
    import asyncio
    import tempfile

    from aiokafka.errors import KafkaError

    from pipeline.audit import record_sync
    from pipeline.registry.mlflow import RegistryError
    from pipeline.registry.reference import baseline_from_mlflow
    from pipeline.scoring.baseline_files import build_from_file
    from pipeline.scoring.baseline_topic import publish_baseline
    from pipeline.scoring.baselines import (
        BaselineError,
        build_from_clickhouse,
        format_time,
        parse_time,
        resolve_series,
    )
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sinks.clickhouse.query import QueryError
    from pipeline.sources.pricing import PriceTableError, price_table
    from pipeline.windows.drift_profile import MonitorSpec

    settings = _settings(ctx)
    if path is not None and mlflow_run is not None:
        raise click.UsageError("--file and --mlflow-run are alternatives: give one")
    if mlflow_artifact is not None and mlflow_run is None:
        raise click.UsageError("--mlflow-artifact names an artifact of --mlflow-run: give both")
    if path is None and mlflow_run is None and (start is None or end is None):
        raise click.UsageError("--from and --to are required unless --file or --mlflow-run "
                               "is given")
    try:
        begin = parse_time(start) if start is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--from") from exc
    try:
        until = parse_time(end) if end is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from exc
    if begin is not None and until is not None and until <= begin:
        raise click.BadParameter(f"{format_time(until)} is not after --from "
                                 f"{format_time(begin)}", param_hint="--to")
    drift = settings.drift  # what the workers monitor: a baseline should cover the same
    try:
        spec = MonitorSpec(
            numeric_features=(_features(numeric_features) if numeric_features is not None
                              else tuple(drift.numeric_features)),
            categorical_features=(_features(categorical_features)
                                  if categorical_features is not None
                                  else tuple(drift.categorical_features)),
            prediction=prediction or drift.prediction,  # type: ignore[arg-type]
            confidence=drift.confidence, operational=drift.operational)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    dropped = [f for f in (*spec.numeric_features, *spec.categorical_features)
               if f in settings.privacy.drop_features]
    if dropped:  # the baseline would keep values of a key the pipeline must not keep
        raise click.UsageError(f"{', '.join(map(repr, dropped))}: privacy.drop_features drops "
                               "it at ingest, so it cannot be monitored or kept in a baseline")
    reference = None
    try:
        _, labels = resolve_series(settings, series)
        if mlflow_run is not None:
            with tempfile.TemporaryDirectory(prefix="inferwatch-mlflow-") as tmp:
                built, reference = baseline_from_mlflow(
                    mlflow_run, spec, labels, dst_dir=tmp, tracking_uri=mlflow_tracking_uri,
                    artifact=mlflow_artifact, start=begin, end=until,
                    created_by=created_by, prices=price_table(settings.pricing))
        elif path is not None:
            built = build_from_file(path, spec, labels, start=begin, end=until,
                                    created_by=created_by,
                                    prices=price_table(settings.pricing))
        else:
            assert begin is not None and until is not None
            built = build_from_clickhouse(settings, labels, begin, until, spec,
                                          created_by=created_by)
        stored = asyncio.run(publish_baseline(settings, built))
    except (BaselineError, QueryError, StoreBusyError, PriceTableError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaError as exc:  # the pin was tried: the audit trail says it failed
        record_sync(settings, "baseline.set", series, outcome="failed", detail={"reason": exc})
        raise click.ClickException(f"Kafka ({settings.kafka.bootstrap_servers}): {exc}") from exc
    record_sync(settings, "baseline.set", stored.series_key, detail={
        "version": stored.version, "events": stored.events, "source": stored.source,
        "created_by": created_by})
    counts = " ".join(f"{name}={n}" for name, n in stored.counts().items())
    click.echo(f"stored baseline v{stored.version} for {stored.series_key}: "
               f"{stored.events} events from {stored.source}")
    click.echo(f"  values per monitored name: {counts}")
    if reference is not None:
        _echo_reference(reference)
    if stored.type_mismatches:
        click.echo(f"warning: {stored.type_mismatches} values had the wrong type for their "
                   "declared kind and were skipped", err=True)


def _echo_reference(reference: ReferenceData) -> None:
    """The MLflow metadata a baseline has no field for: printed with the stored version."""
    model = (f"model {reference.model_name} v{reference.model_version}, "
             if reference.model_name else "")
    what = (f"dataset {reference.dataset} (context {reference.context})" if reference.dataset
            else f"artifact {reference.artifact}")
    click.echo(f"  from MLflow: {model}run {reference.run_id} "
               f"({reference.run_name or 'unnamed'}, experiment {reference.experiment_id}), "
               f"{what}")
    for title, tags in (("run tags", reference.run_tags),
                        ("version tags", reference.version_tags)):
        if tags:
            click.echo(f"  {title}: " + ", ".join(f"{k}={v}" for k, v in sorted(tags.items())))


@baseline.command("list")
@click.option("--series", default=None, metavar="KEY", help="Only this series.")
@click.pass_context
def baseline_list(ctx: click.Context, series: str | None) -> None:
    """List the pinned baselines (series, version, created, source, events)."""
    import asyncio

    from pipeline.scoring.baseline_topic import read_baselines
    from pipeline.scoring.baselines import format_time, parse_series_key
    from pipeline.windows.profile import series_key

    settings = _settings(ctx)
    wanted = None
    if series is not None:
        try:
            wanted = series_key(parse_series_key(series))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--series") from exc
    stored = asyncio.run(read_baselines(settings))
    items = [b for key, b in sorted(stored.items()) if wanted is None or key == wanted]
    for b in items:
        created = format_time(round(b.created_at))
        click.echo(f"{b.series_key}  v{b.version}  created {created}  {b.source}  "
                   f"{b.events} events  by {b.created_by or '-'}")
    if not items:
        if wanted is not None:
            raise click.ClickException(f"no baseline for series {wanted!r}")
        click.echo("no baselines", err=True)
