"""The ``inferwatch`` command line: dev broker, worker, simulator, SQL, schemas."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from pipeline.config import ConfigError, Settings, load_settings

__all__ = ["main"]


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


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


# --------------------------------------------------------------------------- dev broker
@cli.group()
def dev() -> None:
    """Run a local single-node Kafka (KRaft) from Maven Central jars, under .inferwatch/."""


def _local(ctx: click.Context):  # -> LocalKafka
    from pipeline.dev.kafka import LocalKafka

    return LocalKafka(_settings(ctx), say=lambda m: click.echo(m, err=True))


@dev.command("up")
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for the broker.")
@click.pass_context
def dev_up(ctx: click.Context, timeout: float) -> None:
    """Fetch jars if missing, format storage, start the broker, create the topics.

    With INFERWATCH_KAFKA set to another cluster, only creates the topics there.
    """
    import asyncio

    from pipeline.runtime.kafka import ensure_topics, wait_for_broker

    settings = _settings(ctx)
    local = _local(ctx)
    external = os.environ.get("INFERWATCH_KAFKA")
    try:
        if external and external != local.bootstrap:
            async def topics() -> list[str]:
                await wait_for_broker(settings.kafka, timeout)
                return await ensure_topics(settings)
            created = asyncio.run(topics())
            click.echo(f"using existing Kafka at {external}; created topics: {created or 'none'}")
            return
        status = local.up(timeout=timeout)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(status))


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


# --------------------------------------------------------------------------- worker
@cli.command()
@click.option("--roles", default=None, metavar="ROLES",
              help="Comma-separated: process, sink (default from config: both).")
@click.option("--loglevel", "-l", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warn", "error"]))
@click.pass_context
def worker(ctx: click.Context, roles: str | None, loglevel: str) -> None:
    """Run a worker: validate events (process) and/or write them to ClickHouse (sink).

    Add processing workers to the consumer group to scale out. With the embedded
    store, run exactly one sink; it also answers `inferwatch query`.
    """
    from pipeline.runtime.worker import run_worker
    from pipeline.sinks.clickhouse.owner import StoreBusyError

    settings = _settings(ctx)
    chosen = [r.strip() for r in roles.split(",")] if roles else list(settings.worker.roles)
    unknown = set(chosen) - {"process", "sink"}
    if unknown or not chosen:
        raise click.BadParameter(f"unknown roles {sorted(unknown)}; use process, sink",
                                 param_hint="--roles")
    try:
        sys.exit(run_worker(settings, chosen, loglevel=loglevel))
    except (StoreBusyError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from exc


# --------------------------------------------------------------------------- simulate
@cli.command()
@click.option("--rate", default=200.0, show_default=True, help="Events per second (synthetic).")
@click.option("--duration", default=60.0, show_default=True,
              help="Seconds of event time to generate (synthetic).")
@click.option("--seed", default=7, show_default=True, help="Random seed: same seed, same traffic.")
@click.option("--speed", default=1.0, show_default=True,
              help="Pace: 1 = real time, 10 = ten times faster, 0 = as fast as Kafka takes it.")
@click.option("--incident", "incidents", multiple=True, metavar="SPEC",
              help="KIND@OFFSET+DURATION[:model=NAME][:factor=X], KIND one of latency_spike, "
                   "error_burst, feature_drift, token_surge. Repeatable.")
@click.option("--replay", "replay_file", type=click.Path(exists=True, dir_okay=False),
              help="Replay a CSV trace (arrival time, input tokens, output tokens), "
                   "e.g. data/azure_llm_inference_conv_2023.csv.")
@click.option("--limit", type=int, default=None, help="Replay at most this many rows.")
@click.option("--model", default=None, help="Model name for replayed events.")
@click.option("--batch-size", default=500, show_default=True,
              help="Events per Kafka message; 1 sends one event per message.")
@click.option("--format", "fmt", default="json", show_default=True,
              type=click.Choice(["json", "msgpack"]))
@click.option("--start", type=float, default=None, help="Event time of offset 0 (default: now).")
@click.option("--buffer", "buffer_events", default=50_000, show_default=True,
              type=click.IntRange(min=1),
              help="Records kept while Kafka is unreachable. When full, a paced run drops "
                   "the newest (counted); --speed 0 waits for room instead.")
@click.option("--drain-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to keep trying to send what is left once generation ends.")
@click.pass_context
def simulate(ctx: click.Context, rate: float, duration: float, seed: int, speed: float,
             incidents: tuple[str, ...], replay_file: str | None, limit: int | None,
             model: str | None, batch_size: int, fmt: str, start: float | None,
             buffer_events: int, drain_timeout: float) -> None:
    """Publish realistic inference traffic (or replay a trace) to the events topic.

    A Kafka outage does not stop the run: records wait in a bounded buffer and are sent
    when the broker is back. The last line says what could not be sent (exit status 1
    when anything was not).
    """
    import asyncio
    import time

    from pipeline.dev.publish import PublishStats, publish
    from pipeline.dev.simulate import Incident, TrafficModel, replay
    from pipeline.sources.codec import JSON, MSGPACK

    settings = _settings(ctx)
    try:
        parsed = [Incident.parse(text) for text in incidents]
        begin = time.time() if start is None else start
        if replay_file:
            records = replay(replay_file, seed, begin, model=model, limit=limit, incidents=parsed)
            what = f"replaying {replay_file}"
        else:
            # The run's start in the ids: a rerun with the same seed is new traffic, not a replay.
            traffic = TrafficModel(incidents=parsed, seed=seed, id_prefix=f"sim-{seed}-{begin:.0f}")
            records = traffic.stream(rate, duration, begin)
            what = f"simulating {rate:g} ev/s for {duration:g}s"
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if batch_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch-size")
    click.echo(f"{what} at speed {speed:g} to {settings.topics.events} "
               f"({settings.kafka.bootstrap_servers})", err=True)
    _log_to_stderr()
    stats = PublishStats()
    interrupted = False
    try:
        asyncio.run(publish(
            settings, records, speed=speed, batch_size=batch_size,
            content_type=MSGPACK if fmt == "msgpack" else JSON,
            progress=lambda s: click.echo(s.line(), err=True),
            buffer_events=buffer_events, drain_timeout=drain_timeout, stats=stats,
        ))
    except KeyboardInterrupt:
        interrupted = True  # stats still say what was sent and what was not
    click.echo(stats.line() + (" (interrupted)" if interrupted else ""))
    if not stats.complete:
        click.echo(stats.unsent_line(), err=True)
        ctx.exit(1)
    if interrupted:
        ctx.exit(130)


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


# --------------------------------------------------------------------------- query
@cli.command()
@click.argument("sql")
@click.option("--format", "-f", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "csv", "json", "jsonl"]))
@click.pass_context
def query(ctx: click.Context, sql: str, fmt: str) -> None:
    """Run one read-only SQL statement and print the result.

    Works against a ClickHouse server DSN, the embedded store, or the worker that
    currently owns the embedded store. Writes and DDL are refused.
    Tables: events, resources (database from config, default `inferwatch`).
    """
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sinks.clickhouse.query import QueryError, format_result, run_query

    try:
        result = run_query(_settings(ctx), sql)
    except (QueryError, StoreBusyError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_result(result, fmt))


# --------------------------------------------------------------------------- schema / config
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


# --------------------------------------------------------------------------- rules
@cli.group()
def rules() -> None:
    """Alert rules (YAML): validate them and run their unit tests."""


@rules.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def rules_check(paths: tuple[Path, ...]) -> None:
    """Validate rule files or directories; print file:line:col: problem for each error."""
    from pipeline.alerting.rules import check

    problems = check(list(paths))
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in the rules")
    click.echo(f"rules OK: {', '.join(str(p) for p in paths)}")


@rules.command("test")
@click.argument("path", type=click.Path(path_type=Path))
def rules_test(path: Path) -> None:
    """Run promtool-style rule tests (input windows, eval times, expected alerts)."""
    from pipeline.alerting.ruletest import run_rule_tests

    result = run_rule_tests(path)
    click.echo(result.report())
    if not result.passed:
        raise click.ClickException("rule tests failed")


# --------------------------------------------------------------------------- alerts
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


# --------------------------------------------------------------------------- baselines
@cli.group()
def baseline() -> None:
    """Pinned drift baselines: the reference a series' windows are compared with.

    A baseline is built once from stored events (or a file) and kept, versioned, on the
    compacted baselines topic; workers follow it. Setting it again stores version + 1.
    """


def _features(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))


@baseline.command("set")
@click.option("--series", required=True, metavar="KEY",
              help="Series key: name=value pairs of metrics.series_labels joined by |, "
                   "e.g. 'model=gpt-chat|model_version=2024-06|operation=chat'.")
@click.option("--from", "start", metavar="TIME",
              help="Start of the event-time range, inclusive: ISO-8601 (naive = UTC) or "
                   "Unix seconds. Required unless --file.")
@click.option("--to", "end", metavar="TIME",
              help="End of the event-time range, exclusive. Required unless --file.")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Build from a file of InferenceEvents instead of ClickHouse: JSON array, "
                   "JSON lines or Parquet. The whole file is used (--from/--to filter it).")
@click.option("--numeric-features", default=None, metavar="A,B",
              help="Numeric features (keys of the event's features) to monitor "
                   "(default: drift.numeric_features of the config).")
@click.option("--categorical-features", default=None, metavar="C,D",
              help="Categorical features to monitor (default: drift.categorical_features).")
@click.option("--prediction", default=None,
              type=click.Choice(["categorical", "numeric", "none"]),
              help="How the prediction is compared (default: drift.prediction).")
@click.option("--by", "created_by", default=lambda: os.environ.get("USER", ""),
              help="Who (default: $USER).")
@click.pass_context
def baseline_set(ctx: click.Context, series: str, start: str | None, end: str | None,
                 path: Path | None, numeric_features: str | None,
                 categorical_features: str | None, prediction: str | None,
                 created_by: str) -> None:
    """Pin a series' drift baseline from its stored events (or a file); prints the version.

    Reads the raw events of SERIES in [--from, --to) from ClickHouse (read-only; through
    the running worker when it owns the embedded store) and stores histograms of the
    features, prediction, confidence, latency, time to first token, tokens and cost.

    \b
    Example:
      inferwatch baseline set --series 'model=gpt-chat|model_version=2024-06|operation=chat' \\
          --from 2024-06-01T00:00:00Z --to 2024-06-08T00:00:00Z \\
          --numeric-features prompt_length --categorical-features language
      inferwatch baseline set --series 'model=gpt-chat|model_version=2024-09|operation=chat' \\
          --file training-events.parquet
    """
    import asyncio

    from aiokafka.errors import KafkaError

    from pipeline.scoring.baselines import (
        BaselineError,
        build_from_clickhouse,
        build_from_file,
        format_time,
        parse_time,
        publish_baseline,
        resolve_series,
    )
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sinks.clickhouse.query import QueryError
    from pipeline.windows.drift_profile import MonitorSpec

    settings = _settings(ctx)
    if path is None and (start is None or end is None):
        raise click.UsageError("--from and --to are required unless --file is given")
    try:
        begin = parse_time(start) if start is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--from") from exc
    try:
        until = parse_time(end) if end is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from exc
    if begin is not None and until is not None and until <= begin:
        raise click.BadParameter(f"{format_time(until)} is not after --from "
                                 f"{format_time(begin)}", param_hint="--to")
    drift = settings.drift  # what the workers monitor: a baseline should cover the same
    try:
        spec = MonitorSpec(
            numeric_features=(_features(numeric_features) if numeric_features is not None
                              else tuple(drift.numeric_features)),
            categorical_features=(_features(categorical_features)
                                  if categorical_features is not None
                                  else tuple(drift.categorical_features)),
            prediction=prediction or drift.prediction,  # type: ignore[arg-type]
            confidence=drift.confidence, operational=drift.operational)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        _, labels = resolve_series(settings, series)
        if path is not None:
            built = build_from_file(path, spec, labels, start=begin, end=until,
                                    created_by=created_by)
        else:
            assert begin is not None and until is not None
            built = build_from_clickhouse(settings, labels, begin, until, spec,
                                          created_by=created_by)
        stored = asyncio.run(publish_baseline(settings, built))
    except (BaselineError, QueryError, StoreBusyError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaError as exc:
        raise click.ClickException(f"Kafka ({settings.kafka.bootstrap_servers}): {exc}") from exc
    counts = " ".join(f"{name}={n}" for name, n in stored.counts().items())
    click.echo(f"stored baseline v{stored.version} for {stored.series_key}: "
               f"{stored.events} events from {stored.source}")
    click.echo(f"  values per monitored name: {counts}")
    if stored.type_mismatches:
        click.echo(f"warning: {stored.type_mismatches} values had the wrong type for their "
                   "declared kind and were skipped", err=True)


@baseline.command("list")
@click.option("--series", default=None, metavar="KEY", help="Only this series.")
@click.pass_context
def baseline_list(ctx: click.Context, series: str | None) -> None:
    """List the pinned baselines (series, version, created, source, events)."""
    import asyncio

    from pipeline.scoring.baselines import format_time, parse_series_key, read_baselines
    from pipeline.windows.profile import series_key

    settings = _settings(ctx)
    wanted = None
    if series is not None:
        try:
            wanted = series_key(parse_series_key(series))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--series") from exc
    stored = asyncio.run(read_baselines(settings))
    items = [b for key, b in sorted(stored.items()) if wanted is None or key == wanted]
    for b in items:
        created = format_time(round(b.created_at))
        click.echo(f"{b.series_key}  v{b.version}  created {created}  {b.source}  "
                   f"{b.events} events  by {b.created_by or '-'}")
    if not items:
        if wanted is not None:
            raise click.ClickException(f"no baseline for series {wanted!r}")
        click.echo("no baselines", err=True)


@cli.group("config")
def config_group() -> None:
    """Settings."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the settings in force (secrets masked)."""
    click.echo(json.dumps(_settings(ctx).describe(), indent=2))


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


def main() -> None:
    cli(prog_name="inferwatch")
