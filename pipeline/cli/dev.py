"""``inferwatch dev``: the local single-node Kafka (KRaft) under .inferwatch/."""

from __future__ import annotations

import os

import click

from pipeline.cli import _settings, cli


@cli.group()
def dev() -> None:
    """Run a local single-node Kafka (KRaft) from Maven Central jars, under .inferwatch/."""


def _local(ctx: click.Context, secure: bool | None = None):  # -> LocalKafka
    from pipeline.dev.kafka import LocalKafka

    return LocalKafka(_settings(ctx), say=lambda m: click.echo(m, err=True), secure=secure)


@dev.command("up")
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for the broker.")
@click.option("--secure", is_flag=True, default=None,
              help="SASL_SSL (SCRAM-SHA-512) with a private CA and ACLs per role; users, "
                   "passwords and CA under .inferwatch/kafka/secure/ (default: dev.secure).")
@click.pass_context
def dev_up(ctx: click.Context, timeout: float, secure: bool | None) -> None:
    """Fetch jars if missing, format storage, start the broker, create the topics.

    With INFERWATCH_KAFKA set to another cluster, only creates the topics there.
    With --secure, clients connect with the settings in .inferwatch/kafka/secure/<user>.env
    (inferwatch: workers and commands; producer: the SDK; admin: super user); see
    docs/security.md.
    """
    import asyncio

    from pipeline.runtime.kafka import ensure_topics, wait_for_broker

    settings = _settings(ctx)
    local = _local(ctx, secure)
    external = os.environ.get("INFERWATCH_KAFKA")
    try:
        if external and external != local.bootstrap:
            if local.secure:
                raise click.UsageError(f"--secure starts the local broker, but INFERWATCH_KAFKA "
                                       f"points at {external}")
            async def topics() -> list[str]:
                await wait_for_broker(settings.kafka, timeout)
                return await ensure_topics(settings)
            created = asyncio.run(topics())
            click.echo(f"using existing Kafka at {external}; created topics: {created or 'none'}")
            return
        status = local.up(timeout=timeout)
    except (RuntimeError, TimeoutError) as exc:  # a KafkaAccessError: main() says it
        raise click.ClickException(str(exc)) from exc
    click.echo(str(status))
    if status.secure:
        click.echo(f"connect as the worker: set -a; . {local.secure_dir / 'inferwatch.env'}; "
                   "set +a", err=True)


@dev.command("down")
@click.pass_context
def dev_down(ctx: click.Context) -> None:
    """Stop the local broker (data is kept; remove .inferwatch/kafka/data to reset)."""
    stopped = _local(ctx).down()
    click.echo("kafka stopped" if stopped else "kafka was not running")


@dev.command("status")
@click.pass_context
def dev_status(ctx: click.Context) -> None:
    """Say whether the local broker runs, its pid, address and data directory."""
    status = _local(ctx).status()
    click.echo(str(status))
    ctx.exit(0 if status.running else 3)
