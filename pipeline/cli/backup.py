"""``inferwatch backup DIR`` and ``inferwatch restore DIR``: the embedded store, verified."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import _settings, cli

_DIR = click.Path(file_okay=False, path_type=Path)


@cli.command()
@click.argument("directory", metavar="DIR", type=_DIR)
@click.option("--force", is_flag=True,
              help="Replace the backup DIR already holds (the old one stays until the new "
                   "one is complete).")
@click.pass_context
def backup(ctx: click.Context, directory: Path, force: bool) -> None:
    """Back up the embedded store into DIR (new or empty), with ClickHouse's BACKUP.

    Every table of the configured database is copied with its parts' checksums, and
    DIR/manifest.json records each table's row count, the schema version, the
    InferWatch and engine versions and the time; `inferwatch restore` checks them.

    The worker owning the store must be stopped first (the command says which pid);
    Kafka keeps the events meanwhile and the worker resumes where it stopped. A
    ClickHouse server DSN is backed up on the server. See docs/backup.md.

    \b
    Example (nightly, keeping a dated copy):
      inferwatch backup /var/backups/inferwatch/$(date +%F)
    """
    _do("backup", ctx, directory, force)


@cli.command()
@click.argument("directory", metavar="DIR", type=_DIR)
@click.option("--force", is_flag=True,
              help="Replace the database the store already holds (it is kept until the "
                   "backup has been restored and verified).")
@click.pass_context
def restore(ctx: click.Context, directory: Path, force: bool) -> None:
    """Restore the backup in DIR (made by `inferwatch backup`) into the embedded store.

    Tables are restored into a staging database, each one's row count checked against
    DIR/manifest.json and its parts against their checksums; only then is the
    configured database replaced. A store
    that already holds tables is replaced only with --force. Stop the worker owning
    the store first. Migrations newer than the backup apply on the next worker start.
    """
    _do("restore", ctx, directory, force)


def _do(verb: str, ctx: click.Context, directory: Path, force: bool) -> None:
    from pipeline.sinks.clickhouse import backup as module
    from pipeline.sinks.clickhouse.owner import StoreBusyError

    run = module.backup if verb == "backup" else module.restore
    try:
        run(_settings(ctx), directory, force=force, say=click.echo)
    except (module.BackupError, StoreBusyError) as exc:
        raise click.ClickException(str(exc)) from exc
