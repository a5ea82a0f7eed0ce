"""``inferwatch query``: one read-only SQL statement against the store."""

from __future__ import annotations

import click

from pipeline.cli import _settings, cli


@cli.command()
@click.argument("sql")
@click.option("--format", "-f", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "csv", "json", "jsonl"]))
@click.pass_context
def query(ctx: click.Context, sql: str, fmt: str) -> None:
    """Run one read-only SQL statement and print the result.

    Works against a ClickHouse server DSN, the embedded store, or the worker that
    currently owns the embedded store. Writes and DDL are refused.
    Tables: events, resources (database from config, default `inferwatch`).
    """
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sinks.clickhouse.query import QueryError, format_result, run_query

    try:
        result = run_query(_settings(ctx), sql)
    except (QueryError, StoreBusyError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_result(result, fmt))
