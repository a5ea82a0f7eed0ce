"""``inferwatch config``: the settings in force."""

from __future__ import annotations

import json

import click

from pipeline.cli import _settings, cli


@cli.group("config")
def config_group() -> None:
    """Settings."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the settings in force (secrets masked)."""
    click.echo(json.dumps(_settings(ctx).describe(), indent=2))
