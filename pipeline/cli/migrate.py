"""``inferwatch migrate``: apply pending ClickHouse migrations."""

from __future__ import annotations

import click

from pipeline.cli import _settings, cli


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending ClickHouse migrations and the configured retention to every table's
    TTL (the sink also does both on start)."""
    from pipeline.sinks.clickhouse.client import apply_migrations, apply_retention, connect
    from pipeline.sinks.clickhouse.owner import StoreLock

    settings = _settings(ctx)
    lock = StoreLock(settings.home_path) if settings.embedded else None
    if lock is not None and not lock.try_acquire():
        raise click.ClickException("a running worker owns the embedded store; it migrates on start")
    try:
        client = connect(settings)
        applied = apply_migrations(client, settings)
        retained = apply_retention(client, settings)
    finally:
        if lock is not None:
            lock.release()
    click.echo(f"applied: {', '.join(applied) or 'nothing (up to date)'}")
    if retained:
        click.echo(f"retention updated: {', '.join(sorted(retained))}")
