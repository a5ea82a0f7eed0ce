"""The ``inferwatch`` command line: dev broker, worker, simulator, SQL, schemas.

The root group, its settings and the helpers every command shares live here; each
command group is a module of this package that registers itself on :data:`cli`.
Commands import what they run inside their function, so ``inferwatch --help`` loads
no Kafka, ClickHouse or scoring code.
"""

from __future__ import annotations

import click

from pipeline.config import ConfigError, Settings, load_settings

__all__ = ["cli", "main"]


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


def _log_to_stderr(level: int | None = None) -> None:
    """Warnings and errors of a command (Kafka outages, retries) to stderr, with repeats
    rate-limited (pipeline.logs) so an outage is a few lines, not thousands."""
    import logging

    from pipeline.logs import install

    if logging.getLogger().handlers:
        return  # configured by whoever runs the command in-process (tests, a program)
    logging.basicConfig(level=level or logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install()


def when_arg(text: str, param: str, now: float) -> float:
    """A time option: ISO-8601, Unix seconds, or a duration ago (``24h``, ``7d``)."""
    from pipeline.alerting.durations import parse_duration
    from pipeline.scoring.baselines import parse_time

    try:
        return parse_time(text)
    except ValueError:
        pass
    try:
        return now - parse_duration(text)
    except ValueError:
        raise click.BadParameter(f"invalid time {text!r}: use ISO-8601 (2024-06-01T12:00:00Z), "
                                 "Unix seconds or a duration ago (24h, 7d)",
                                 param_hint=param) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="INFERWATCH_CONFIG",
              help="TOML settings file (env: INFERWATCH_CONFIG). Env vars override it.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """InferWatch: streaming observability for ML and LLM inference.

    Events go to Kafka (inferwatch.events); workers validate, aggregate and store
    them in ClickHouse; `inferwatch query` reads them back with SQL.

    \b
    Quick start:
      inferwatch dev up                  # local Kafka (KRaft) on 127.0.0.1:9092
      inferwatch worker &                # process + sink roles, embedded ClickHouse
      inferwatch simulate --duration 30  # realistic traffic
      inferwatch query "SELECT model, count() FROM events GROUP BY model"
    """
    try:
        ctx.obj = load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def main() -> None:
    try:
        cli(prog_name="inferwatch")
    except Exception as exc:
        # Kafka refused the credentials, certificate or ACLs of any command: one line
        from pipeline.runtime.kafka import KafkaAccessError

        if not isinstance(exc, KafkaAccessError):
            raise
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None


# Each module registers its commands on `cli` when imported; they need `cli` and the
# helpers above, hence the imports at the end. `--help` lists commands alphabetically.
from pipeline.cli import (  # noqa: E402, F401
    alerts,
    backup,
    baseline,
    config,
    dev,
    migrate,
    quality,
    query,
    registry,
    rules,
    schema,
    silence,
    simulate,
    top,
    ui,
    worker,
)
