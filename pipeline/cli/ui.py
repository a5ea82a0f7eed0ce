"""``inferwatch ui``: the built-in web dashboard (Overview, Series, Alerts, Query)."""

from __future__ import annotations

import click

from pipeline.cli import _log_to_stderr, _settings, cli


@cli.command()
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default; the dashboard shows all data).")
@click.option("--port", default=8088, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--no-live", is_flag=True,
              help="Do not consume the metrics/scores/alerts topics (no live updates).")
@click.pass_context
def ui(ctx: click.Context, bind: str, port: int, no_live: bool) -> None:
    """Serve the dashboard, reading the store through the query path.

    Log in with the query endpoint's credentials: [query] user and password, or, when
    the password is empty, the random one the store's owner writes to
    <home>/clickhouse.owner.json. Live updates come from the metrics, scores and alerts
    topics (no consumer group); silences are read from and written to the silences topic.
    """
    import asyncio
    import contextlib
    import logging

    from pipeline.ui.server import serve

    _log_to_stderr(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(_settings(ctx), bind=bind, port=port, live_updates=not no_live,
                          ready=lambda line: click.echo(line, err=True)))
