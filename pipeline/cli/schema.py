"""``inferwatch schema``: the event contracts as JSON Schema."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import cli


@cli.group()
def schema() -> None:
    """Event contracts."""


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schema_export(directory: Path) -> None:
    """Write JSON Schema files for producers in other languages."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        click.echo(str(path))
