"""``inferwatch migrate``: apply pending ClickHouse migrations."""

from __future__ import annotations

import click

from pipeline.cli import _settings, cli


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending ClickHouse migrations (the sink also does this on start)."""
    from pipeline.sinks.clickhouse.client import apply_migrations, connect
    from pipeline.sinks.clickhouse.owner import StoreLock

    settings = _settings(ctx)
    lock = StoreLock(settings.home_path) if settings.embedded else None
    if lock is not None and not lock.try_acquire():
        raise click.ClickException("a running worker owns the embedded store; it migrates on start")
    try:
        applied = apply_migrations(connect(settings), settings)
    finally:
        if lock is not None:
            lock.release()
    click.echo(f"applied: {', '.join(applied) or 'nothing (up to date)'}")
