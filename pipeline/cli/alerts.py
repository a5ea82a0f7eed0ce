"""``inferwatch alerts``: follow the alerts topic."""

from __future__ import annotations

import contextlib

import click

from pipeline.cli import _settings, cli


@cli.group()
def alerts() -> None:
    """Alert events on the alerts topic."""


@alerts.command("tail")
@click.option("--json", "as_json", is_flag=True, help="One JSON AlertEvent per line.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest event kept.")
@click.option("--max", "limit", type=int, default=None, help="Stop after this many events.")
@click.pass_context
def alerts_tail(ctx: click.Context, as_json: bool, from_beginning: bool,
                limit: int | None) -> None:
    """Print alert transitions (firing / resolved) as they arrive; Ctrl-C to stop."""
    import asyncio

    import msgspec

    from pipeline.runtime.follower import follow
    from schemas.alert import AlertEvent

    settings = _settings(ctx)
    decode = msgspec.json.Decoder(AlertEvent).decode
    stop = asyncio.Event()
    seen = 0

    def show(record) -> None:  # a record that is not an AlertEvent is reported, not fatal
        nonlocal seen
        event = decode(record.value)
        click.echo(record.value.decode() if as_json else _alert_line(event))
        seen += 1
        if limit is not None and seen >= limit:
            stop.set()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow(settings.kafka, settings.topics.alerts, show, stop=stop,
                           from_beginning=from_beginning))


def _alert_line(event) -> str:  # (AlertEvent) -> str
    import datetime as dt

    when = dt.datetime.fromtimestamp(event.window_end, dt.UTC).strftime("%H:%M:%S")
    state = "REPEAT" if event.repeat else event.state.upper()
    muted = " [silenced]" if event.silenced else " [inhibited]" if event.inhibited else ""
    value = f" value={event.value:g}" if event.value is not None else ""
    summary = event.annotations.get("summary", "")
    return (f"{when} {state:<8} {event.severity:<8} {event.rule} {event.series_key}{value}"
            f"{muted} {summary}").rstrip()
