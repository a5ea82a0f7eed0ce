"""``inferwatch silence``: add, list and expire silences.

Adding and expiring are recorded in the audit trail (:mod:`pipeline.audit`): the
operating-system user, the silence and its matchers, and whether it was done, refused (no
such silence to expire) or failed (the broker did not take it). Arguments refused before
anything is read or written (a matcher that does not parse) are only reported."""

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
              help="Who, as the silence shows it (default: $USER). The audit trail records "
                   "the operating-system user.")
@click.pass_context
def silence_add(ctx: click.Context, matchers: tuple[str, ...], duration: str, comment: str,
                created_by: str) -> None:
    """Create a silence; prints its id."""
    import asyncio
    import time

    from pipeline.alerting.silences import new_silence
    from pipeline.audit import failure_reason, record_sync, silence_detail
    from pipeline.runtime.alerting import publish_silence

    settings = _settings(ctx)
    try:
        item = new_silence(list(matchers), duration=duration, now=time.time(),
                           created_by=created_by, comment=comment)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    detail = silence_detail(item, duration)
    try:
        asyncio.run(publish_silence(settings, item))
    except Exception as exc:
        record_sync(settings, "silence.add", item.id, outcome="failed",
                    detail={**detail, "reason": failure_reason(exc)})
        raise
    record_sync(settings, "silence.add", item.id, detail=detail)
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

    from pipeline.audit import failure_reason, record_sync, silence_detail
    from pipeline.runtime.alerting import publish_silence

    settings = _settings(ctx)
    store = _silences(settings)
    try:
        expired = store.expire(silence_id, time.time())
    except (KeyError, ValueError) as exc:
        record_sync(settings, "silence.expire", silence_id, outcome="refused",
                    detail={"reason": f"no silence {silence_id!r}"})
        raise click.ClickException(f"no silence {silence_id!r}") from exc
    detail = silence_detail(expired)
    try:
        asyncio.run(publish_silence(settings, expired))
    except Exception as exc:
        record_sync(settings, "silence.expire", silence_id, outcome="failed",
                    detail={**detail, "reason": failure_reason(exc)})
        raise
    record_sync(settings, "silence.expire", silence_id, detail=detail)
    click.echo(f"expired {silence_id}")
