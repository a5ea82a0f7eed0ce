"""``inferwatch silence``: add, list and expire silences."""

from __future__ import annotations

import os

import click

from pipeline.cli import _settings, cli
from pipeline.config import Settings


@cli.group()
def silence() -> None:
    """Silences: alerts still recorded (marked silenced), notifications suppressed."""


@silence.command("add")
@click.option("--match", "matchers", multiple=True, required=True, metavar="LABEL=VALUE",
              help="Label matcher (=, !=, =~, !~). Repeatable; all must match.")
@click.option("--for", "duration", default="2h", show_default=True, help="e.g. 30m, 2h, 1d.")
@click.option("--comment", default="", help="Why; shown with the silence.")
@click.option("--by", "created_by", default=lambda: os.environ.get("USER", ""),
              help="Who (default: $USER).")
@click.pass_context
def silence_add(ctx: click.Context, matchers: tuple[str, ...], duration: str, comment: str,
                created_by: str) -> None:
    """Create a silence; prints its id."""
    import asyncio
    import time

    from pipeline.alerting.silences import new_silence
    from pipeline.runtime.alerting import publish_silence

    try:
        item = new_silence(list(matchers), duration=duration, now=time.time(),
                           created_by=created_by, comment=comment)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    asyncio.run(publish_silence(_settings(ctx), item))
    click.echo(item.id)


def _silences(settings: Settings):  # -> Silences
    import asyncio

    from pipeline.alerting.silences import Silences
    from pipeline.runtime.alerting import read_silences

    store = Silences()
    asyncio.run(read_silences(settings, store, follow=False))
    return store


@silence.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include expired silences.")
@click.pass_context
def silence_list(ctx: click.Context, show_all: bool) -> None:
    """List active silences (id, until, matchers, by, comment)."""
    import datetime as dt
    import time

    store = _silences(_settings(ctx))
    now = time.time()
    items = store.all() if show_all else store.active(now)
    for s in items:
        until = dt.datetime.fromtimestamp(s.ends_at, dt.UTC).isoformat(timespec="minutes")
        matchers = ",".join(f"{m.name}{m.op}{m.value}" for m in s.matchers)
        click.echo(f"{s.id}  until {until}  {matchers}  by {s.created_by or '-'}  {s.comment}")
    if not items:
        click.echo("no silences", err=True)


@silence.command("expire")
@click.argument("silence_id")
@click.pass_context
def silence_expire(ctx: click.Context, silence_id: str) -> None:
    """End a silence now."""
    import asyncio
    import time

    from pipeline.runtime.alerting import publish_silence

    settings = _settings(ctx)
    store = _silences(settings)
    try:
        expired = store.expire(silence_id, time.time())
    except (KeyError, ValueError) as exc:
        raise click.ClickException(f"no silence {silence_id!r}") from exc
    asyncio.run(publish_silence(settings, expired))
    click.echo(f"expired {silence_id}")
