"""``inferwatch worker``: the process and sink roles."""

from __future__ import annotations

import sys

import click

from pipeline.cli import _settings, cli


@cli.command()
@click.option("--roles", default=None, metavar="ROLES",
              help="Comma-separated: process, sink (default from config: both).")
@click.option("--loglevel", "-l", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warn", "error"]))
@click.pass_context
def worker(ctx: click.Context, roles: str | None, loglevel: str) -> None:
    """Run a worker: validate events (process) and/or write them to ClickHouse (sink).

    Add processing workers to the consumer group to scale out. With the embedded
    store, run exactly one sink; it also answers `inferwatch query`.
    """
    from pipeline.alerting.rules import RuleError
    from pipeline.runtime.worker import run_worker
    from pipeline.sinks.clickhouse.http_interface import TlsError
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sources.pricing import PriceTableError

    settings = _settings(ctx)
    chosen = [r.strip() for r in roles.split(",")] if roles else list(settings.worker.roles)
    unknown = set(chosen) - {"process", "sink"}
    if unknown or not chosen:
        raise click.BadParameter(f"unknown roles {sorted(unknown)}; use process, sink",
                                 param_hint="--roles")
    try:
        sys.exit(run_worker(settings, chosen, loglevel=loglevel))
    except (StoreBusyError, TimeoutError, PriceTableError, RuleError, TlsError) as exc:
        raise click.ClickException(str(exc)) from exc
