"""``inferwatch baseline``: pin and list drift baselines."""

from __future__ import annotations

import os
from pathlib import Path

import click

from pipeline.cli import _settings, cli


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
                 path: Path | None, numeric_features: str | None,
                 categorical_features: str | None, prediction: str | None,
                 created_by: str) -> None:
    """Pin a series' drift baseline from its stored events (or a file); prints the version.

    Reads the raw events of SERIES in [--from, --to) from ClickHouse (read-only; through
    the running worker when it owns the embedded store) and stores histograms of the
    features, prediction, confidence, latency, time to first token, tokens and cost.

    \b
    Example:
      inferwatch baseline set --series 'model=gpt-chat|model_version=2024-06|operation=chat' \\
          --from 2024-06-01T00:00:00Z --to 2024-06-08T00:00:00Z \\
          --numeric-features prompt_length --categorical-features language
      inferwatch baseline set --series 'model=gpt-chat|model_version=2024-09|operation=chat' \\
          --file training-events.parquet
    """
    import asyncio

    from aiokafka.errors import KafkaError

    from pipeline.scoring.baseline_topic import publish_baseline
    from pipeline.scoring.baselines import (
        BaselineError,
        build_from_clickhouse,
        build_from_file,
        format_time,
        parse_time,
        resolve_series,
    )
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sinks.clickhouse.query import QueryError
    from pipeline.sources.pricing import PriceTableError, price_table
    from pipeline.windows.drift_profile import MonitorSpec

    settings = _settings(ctx)
    if path is None and (start is None or end is None):
        raise click.UsageError("--from and --to are required unless --file is given")
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
    try:
        _, labels = resolve_series(settings, series)
        if path is not None:
            built = build_from_file(path, spec, labels, start=begin, end=until,
                                    created_by=created_by,
                                    prices=price_table(settings.pricing))
        else:
            assert begin is not None and until is not None
            built = build_from_clickhouse(settings, labels, begin, until, spec,
                                          created_by=created_by)
        stored = asyncio.run(publish_baseline(settings, built))
    except (BaselineError, QueryError, StoreBusyError, PriceTableError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaError as exc:
        raise click.ClickException(f"Kafka ({settings.kafka.bootstrap_servers}): {exc}") from exc
    counts = " ".join(f"{name}={n}" for name, n in stored.counts().items())
    click.echo(f"stored baseline v{stored.version} for {stored.series_key}: "
               f"{stored.events} events from {stored.source}")
    click.echo(f"  values per monitored name: {counts}")
    if stored.type_mismatches:
        click.echo(f"warning: {stored.type_mismatches} values had the wrong type for their "
                   "declared kind and were skipped", err=True)


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
