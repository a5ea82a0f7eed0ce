"""``inferwatch worker``: run the processing role, the sink role, or both in one process.

- ``process``: stage 1 (decode, validate, DLQ, partial windows), stage 2 (merge, score,
  emit), the quality path (``-quality-intake``, ``-quality-join``, ``-quality``: feedback
  joined to inferences, quality windows) and, with alert rules set, alerting, each on the
  runtime's own aiokafka consumer group (``<app_id>-stage1``, ``-stage2``, ``-alerts``…),
  all on one asyncio loop.
- ``sink``: Kafka → ClickHouse writer. With the embedded store it also owns the
  chDB directory and answers read-only queries for ``inferwatch query``.

Several processing workers may feed one sink worker (embedded store), or every
worker may run both roles against a ClickHouse server DSN.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.config import Settings
from pipeline.logs import configure as configure_logging
from pipeline.runtime.kafka import access_error, ensure_topics, wait_for_broker
from pipeline.sinks.clickhouse.client import connect
from pipeline.sinks.clickhouse.http_interface import serve_http
from pipeline.sinks.clickhouse.owner import StoreLock
from pipeline.sinks.clickhouse.writer import ClickHouseSink
from pipeline.telemetry import HEALTH, TelemetryError
from pipeline.telemetry import serve as serve_telemetry

if TYPE_CHECKING:
    from pipeline.alerting.rules import RuleSet

__all__ = ["run_sink", "run_worker"]

log = logging.getLogger(__name__)


async def run_sink(settings: Settings, stop: asyncio.Event) -> None:
    """The sink role until ``stop``. With the embedded store it owns the chDB directory
    and answers ClickHouse's HTTP interface (read-only) for any ClickHouse client."""
    lock = StoreLock(settings.home_path) if settings.embedded else None
    runner = keeper = None
    try:
        if lock is not None:
            await lock.acquire(timeout=30.0)
            keeper = connect(settings)  # creates the database; keeps the engine open
            path = settings.clickhouse_dsn.removeprefix("chdb://")
            runner, end = await serve_http(path, settings)
            lock.publish(end.host, end.port, end.user, end.password, end.scheme)
            where = ("password from settings" if settings.query.password else
                     f"random password in {lock.info_path}")
            log.info("embedded store answers ClickHouse HTTP on %s://%s:%d (user %s, %s)",
                     end.scheme, end.host, end.port, end.user, where)
        await ClickHouseSink(settings).run(stop)
    finally:
        if runner is not None:
            await runner.cleanup()
        if keeper is not None:
            keeper.close()
        if lock is not None:
            lock.release()


def stages(settings: Settings) -> tuple[Any, Any, Any]:
    """Stage 1 and stage 2 as configured, and the pinned baselines stage 2 reads.

    With drift on, each window also keeps the histograms of the distributions stage 2
    scores (the operational ones come from the window's own sketches)."""
    from pipeline.scoring.monitor import monitor_spec
    from pipeline.scoring.series import PinnedReferences
    from pipeline.scoring.stage import MergeStage
    from pipeline.windows.partial_stage import PartialStage

    spec = monitor_spec(settings.drift, settings.metrics.relative_accuracy, operational=False)
    drift = spec if settings.drift.enabled and spec.monitored() else None
    pinned = PinnedReferences()
    return PartialStage(settings, drift), MergeStage(settings, drift, pinned), pinned


async def run_process(settings: Settings, stop: asyncio.Event,
                      rules: RuleSet | None = None) -> None:
    """The processing role's two stages on the runtime until ``stop``, with the pinned
    baselines followed for stage 2. Logs ``processing ready`` once both own partitions."""
    from pipeline.runtime.consumer import KafkaRunner
    from pipeline.runtime.memory_tuning import tune_gc
    from pipeline.runtime.retry import forever
    from pipeline.scoring.series import follow_pinned

    first, second, pinned = stages(settings)
    tune_gc()  # after the imports and stages: those are frozen out of collection
    runners = [KafkaRunner(settings, first, "stage1"), KafkaRunner(settings, second, "stage2")]
    if settings.otlp.enabled:
        from pipeline.sources.otlp_stage import OtlpStage

        runners.append(KafkaRunner(settings, OtlpStage(settings), "otlp"))
    if settings.quality.enabled:  # feedback joined to inferences, quality windows
        from pipeline.quality.intake import JoinIntake
        from pipeline.quality.join_stage import JoinStage
        from pipeline.quality.stage import QualityStage

        runners += [KafkaRunner(settings, JoinIntake(settings), "quality-intake"),
                    KafkaRunner(settings, JoinStage(settings), "quality-join"),
                    KafkaRunner(settings, QualityStage(settings), "quality")]
    followers = []
    if settings.drift.enabled:
        followers.append(forever("reading baselines", lambda: follow_pinned(settings, pinned),
                                 stop=stop))
    if settings.alerts.rules:
        from pipeline.alerting.stage import AlertRuleStage
        from pipeline.audit import record, rules_loaded
        from pipeline.runtime.alerting import read_silences

        if rules is None:  # run_worker read them when it checked them: what was checked runs
            from pipeline.alerting.rules import load_rules

            rules = load_rules(settings.alerts.rules)  # RuleError names file:line:col
        await record(settings, rules_loaded(settings, rules))
        alerting = AlertRuleStage(settings, rules)
        runners.append(KafkaRunner(settings, alerting, "alerts"))
        followers.append(forever("reading silences",
                                 lambda: read_silences(settings, alerting.silences), stop=stop))
        log.info("alerting with %d rules from %s", len(rules), settings.alerts.rules)
    HEALTH.runners.extend(runners)  # /readyz: every runner has its partitions
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    stages_running = list(tasks)
    tasks += [asyncio.create_task(f) for f in followers]

    async def announce() -> None:
        await asyncio.gather(*(r.assigned_once.wait() for r in runners))
        log.info("processing ready: %s consuming", ", ".join(r.name for r in runners))

    tasks.append(asyncio.create_task(announce()))
    try:
        done, _ = await asyncio.wait(stages_running, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a stage that failed fails the worker, loudly
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_worker(settings: Settings, roles: Sequence[str], loglevel: str = "info") -> int:
    """Run the given roles until SIGINT/SIGTERM; return the process exit code."""
    roles = sorted(set(roles))
    rules = check_files(settings, roles)
    settings.home_path.mkdir(parents=True, exist_ok=True)
    asyncio.run(_prepare(settings))
    configure_logging(settings.log.format, loglevel)  # text, or JSON lines (log.format)
    return asyncio.run(_run_roles(settings, roles, rules))


def check_files(settings: Settings, roles: Sequence[str]) -> RuleSet | None:
    """Read the files the settings name (price table, alert rules, and the query
    endpoint's TLS files when ``roles`` serve it: the sink of an embedded store) before
    anything starts, so a mistake is one line naming file and line or setting
    (PriceTableError, RuleError, TlsError), not a traceback from a running stage.
    The rules read are the ones the worker runs.

    ``[query] tls_certfile`` alone is a client's pin (``inferwatch query``), not an error
    of a worker that serves no HTTPS:

    >>> from pipeline.config import QuerySettings
    >>> pinned = Settings(query=QuerySettings(tls_certfile="/etc/inferwatch/query.pem"))
    >>> check_files(pinned, ["process"]) is None
    True
    >>> try:
    ...     check_files(pinned, ["process", "sink"])
    ... except Exception as exc:
    ...     print(type(exc).__name__, str(exc).split(":")[0])
    TlsError [query] tls_certfile is set but tls_keyfile is not
    """
    from pipeline.sources.pricing import price_table

    price_table(settings.pricing)
    if "sink" in roles and settings.embedded:
        from pipeline.sinks.clickhouse.http_interface import tls_context

        tls_context(settings.query)
    if not settings.alerts.rules:
        return None
    from pipeline.alerting.rules import load_rules

    return load_rules(settings.alerts.rules)


async def _prepare(settings: Settings) -> None:
    await wait_for_broker(settings.kafka, timeout=60.0)
    await ensure_topics(settings)


async def _run_roles(settings: Settings, roles: Sequence[str],
                     rules: RuleSet | None = None) -> int:
    """The roles on one asyncio loop until SIGINT/SIGTERM; a role that fails stops all.

    The telemetry endpoint (``/metrics``, ``/healthz``, ``/readyz``) starts first: a
    port already taken ends the worker here with one line naming the setting."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    HEALTH.expect(roles)
    try:
        telemetry = await serve_telemetry(settings)
    except TelemetryError as exc:
        log.error("worker cannot start: %s", exc)
        return 1
    jobs = []
    if "process" in roles:
        jobs.append(asyncio.create_task(run_process(settings, stop, rules)))
    if "sink" in roles:
        jobs.append(asyncio.create_task(run_sink(settings, stop)))
    try:
        done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
        for job in done:
            job.result()
    except Exception as exc:
        refused = access_error(settings.kafka, exc)  # credentials, certificate, ACLs
        if refused is None:
            log.exception("worker failed")
        else:
            log.error("worker failed: %s", refused)
        return 1
    finally:
        stop.set()
        await asyncio.gather(*jobs, return_exceptions=True)
        if telemetry is not None:
            await telemetry.stop()
    return 0
