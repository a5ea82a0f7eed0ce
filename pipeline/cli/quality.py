"""``inferwatch quality``: model quality from delayed feedback, read from the store.

``quality compare`` puts two versions of a model side by side (a canary, an A/B test):
the SQL and the statistics are :mod:`pipeline.views.versions`, this module parses the
options, runs the statement read-only and prints. Exit code 3 when a metric is worse,
so a deployment script can gate on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli import _settings, cli, when_arg

if TYPE_CHECKING:
    from pipeline.quality.compare import Difference

__all__ = ["EXIT_WORSE", "quality", "render"]

EXIT_WORSE = 3  # a verdict was "worse"


@cli.group()
def quality() -> None:
    """Model quality from delayed feedback (docs/quality.md)."""


def _pairs(items: Sequence[str], param: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=param)
        out[name.strip()] = value
    return out


def _value(metric: Any, value: float | None, *, signed: bool = False) -> str:
    """A figure as shown: rates in percent (differences in points), means with a unit."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if metric.kind == "rate":
        return f"{value * 100:{sign}.{metric.digits}f}{'pp' if signed else '%'}"
    return f"{value:{sign}.{metric.digits}f}{' ' + metric.unit if metric.unit else ''}"


def render(differences: Sequence[Difference], level: float) -> list[str]:
    """The table: one line per metric, baseline, candidate, difference, its interval,
    observations per side and the verdict.

    >>> from pipeline.quality.compare import compare_rates
    >>> d = compare_rates("error_rate", 10, 1000, 40, 1000, higher_is_worse=True)
    >>> render([d], 0.95)[1].split()
    ['error_rate', '1.00%', '4.00%', '+3.00pp', '[+1.66pp,', '+4.47pp]', '1000', '1000', 'worse']
    """
    from pipeline.views.versions import METRICS

    by_name = {m.name: m for m in METRICS}
    titles = ["metric", "baseline", "candidate", "difference", f"{level:.0%} interval",
              "n baseline", "n candidate", "verdict"]
    body = []
    for d in differences:
        m = by_name[d.metric]
        interval = ("-" if d.low is None or d.high is None else
                    f"[{_value(m, d.low, signed=True)}, {_value(m, d.high, signed=True)}]")
        body.append([d.metric, _value(m, d.baseline), _value(m, d.candidate),
                     _value(m, d.difference, signed=True), interval, str(d.n_baseline),
                     str(d.n_candidate), d.verdict])
    widths = [max([len(t), *(len(b[i]) for b in body)]) for i, t in enumerate(titles)]
    left = (0, 4, 7)  # metric, interval, verdict; numbers to the right

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(titles), *(line(b) for b in body)]


def _store_error(exc: Exception, database: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "UNKNOWN_TABLE" in text or "UNKNOWN_DATABASE" in text:
        return (f"no events or feedback table in ClickHouse database {database!r}: run "
                "`inferwatch migrate` or a worker first")
    return text


@quality.command("compare")
@click.option("--model", required=True, metavar="NAME", help="The model (its `model` label).")
@click.option("--baseline", required=True, metavar="V",
              help="The version compared against (model_version), e.g. the one in production.")
@click.option("--candidate", required=True, metavar="V",
              help="The new version (model_version); differences are candidate - baseline.")
@click.option("--operation", default=None, metavar="OP", help="Only this operation.")
@click.option("--label", "labels", multiple=True, metavar="NAME=VALUE",
              help="Only inferences with this series label value, e.g. tenant=acme "
                   "(repeatable; a label of metrics.series_labels).")
@click.option("--since", default="24h", show_default=True, metavar="TIME",
              help="Inferences made at or after: ISO-8601 (naive = UTC), Unix seconds, or a "
                   "duration ago (1h, 7d).")
@click.option("--until", default=None, metavar="TIME",
              help="Inferences made before this (default: now).")
@click.option("--level", default=0.95, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Confidence level of the intervals.")
@click.option("--min-samples", "min_samples", type=click.IntRange(min=1), default=None,
              help="Fewest observations per version for a verdict "
                   "[default: 100 for rates, 30 for means].")
@click.option("--margin", "margins", multiple=True, metavar="METRIC=VALUE",
              help="Smallest difference that counts for a metric, in its unit (a "
                   "proportion for rates), e.g. latency_ms=5 or error_rate=0.002 "
                   "(repeatable; default 0).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def compare(ctx: click.Context, model: str, baseline: str, candidate: str,
            operation: str | None, labels: tuple[str, ...], since: str, until: str | None,
            level: float, min_samples: int | None, margins: tuple[str, ...],
            fmt: str) -> None:
    """Compare two versions of a model: error rate, latency, accuracy, satisfaction and
    thumbs-down rate, each with the difference (candidate - baseline), its confidence
    interval, the observations per version and a verdict: worse, better, no_difference
    or insufficient_data.

    A verdict of worse or better needs the whole interval on that side (beyond --margin)
    and --min-samples observations per version. Figures are of the inferences made in
    [--since, --until): errors and latency from the raw events, accuracy (classification
    labels) and satisfaction from the feedback joined to them so far; see
    docs/quality.md.

    \b
    Exit codes:
      0  compared; no metric is worse
      3  at least one metric is worse (gate a canary on it)
      1  an error (no store, unknown model or version); 2 a usage error

    \b
    Example:
      inferwatch quality compare --model fraud --baseline 3 --candidate 4 --since 6h
      inferwatch quality compare --model clf --baseline v1 --candidate v2 \\
          --operation classify --margin latency_ms=5 --format json
    """
    from pipeline.scoring.baselines import format_time
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sinks.clickhouse.query import QueryError, run_query
    from pipeline.views.versions import (
        METRICS,
        UnknownVersionError,
        compare_versions,
        versions_sql,
    )

    settings = _settings(ctx)
    if baseline == candidate:
        raise click.BadParameter("is the same version as --baseline", param_hint="--candidate")
    now = time.time()
    start = when_arg(since, "--since", now)
    end = when_arg(until, "--until", now) if until is not None else now
    if end <= start:
        raise click.BadParameter(f"{format_time(end)} is not after --since {format_time(start)}",
                                 param_hint="--until")
    filters = _pairs(labels, "--label")
    if operation is not None:
        filters["operation"] = operation
    series_labels = settings.metrics.series_labels
    for name in ("model", "model_version", *filters):
        if name not in series_labels:
            raise click.UsageError(
                f"{name!r} is not a series label (metrics.series_labels: "
                f"{', '.join(series_labels)}): feedback is attributed to a version by its "
                "series, so only series labels select it")
    try:
        margin = {name: float(value) for name, value in _pairs(margins, "--margin").items()}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--margin") from exc
    if any(not v >= 0 for v in margin.values()):
        raise click.BadParameter("a margin must be a number >= 0", param_hint="--margin")
    unknown = sorted(set(margin) - {m.name for m in METRICS})
    if unknown:
        raise click.BadParameter(f"no metric {unknown[0]!r}; one of: "
                                 f"{', '.join(m.name for m in METRICS)}", param_hint="--margin")
    if settings.embedded:
        path = Path(settings.clickhouse_dsn.removeprefix("chdb://"))
        if not path.is_dir():
            raise click.ClickException(f"no embedded store at {path}: run a worker first, or "
                                       "set clickhouse.dsn to a ClickHouse server")
    try:
        sql = versions_sql(model, start, end, filters=filters,
                           thumbs_down_below=settings.quality.thumbs_down_below)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        result = run_query(settings, sql)
    except (QueryError, StoreBusyError) as exc:
        raise click.ClickException(_store_error(exc, settings.clickhouse.database)) from exc
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    span = f"between {format_time(start)} and {format_time(end)}"
    if not rows:
        raise click.ClickException(f"no inference or feedback of model {model!r} {span}"
                                   + _filtered(filters))
    try:
        differences = compare_versions(rows, baseline, candidate, level=level,
                                       min_n=min_samples, margin=margin)
    except UnknownVersionError as exc:
        raise click.ClickException(f"model {model!r}: {exc} ({span}{_filtered(filters)})"
                                   ) from exc
    worse = [d.metric for d in differences if d.verdict == "worse"]
    if fmt == "json":
        click.echo(json.dumps(_report(model, baseline, candidate, start, end, filters, level,
                                      differences, worse), indent=2))
    else:
        click.echo(f"{model}: candidate {candidate} vs baseline {baseline}, inferences "
                   f"{span}{_filtered(filters)}")
        click.echo("\n".join(render(differences, level)))
        if worse:
            click.echo(f"worse: {', '.join(worse)}")
    if worse:
        ctx.exit(EXIT_WORSE)


def _filtered(filters: Mapping[str, str]) -> str:
    return "".join(f", {name}={value!r}" for name, value in filters.items())


def _report(model: str, baseline: str, candidate: str, start: float, end: float,
            filters: Mapping[str, str], level: float, differences: Sequence[Difference],
            worse: Sequence[str]) -> dict[str, Any]:
    import msgspec

    from pipeline.scoring.baselines import format_time

    return {"model": model, "baseline": baseline, "candidate": candidate,
            "since": format_time(start), "until": format_time(end), "filters": dict(filters),
            "level": level, "metrics": msgspec.to_builtins(list(differences)),
            "worse": list(worse)}
