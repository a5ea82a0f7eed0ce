"""``inferwatch worker``: run the processing role, the sink role, or both in one process.

- ``process``: stage 1 (decode, validate, DLQ, partial windows) and stage 2 (merge,
  score, emit) on the runtime's own aiokafka consumers; with alert rules set, the faust
  app of the alert agent beside them (faust is not started without rules).
- ``sink``: Kafka → ClickHouse writer. With the embedded store it also owns the
  chDB directory and answers read-only queries for ``inferwatch query``.

Several processing workers may feed one sink worker (embedded store), or every
worker may run both roles against a ClickHouse server DSN.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
import mode

from pipeline.config import Settings
from pipeline.logs import install as install_repeat_filter
from pipeline.runtime.kafka import ensure_topics, wait_for_broker
from pipeline.sinks.clickhouse.client import connect
from pipeline.sinks.clickhouse.owner import StoreLock, serve_queries
from pipeline.sinks.clickhouse.query import run_readonly
from pipeline.sinks.clickhouse.writer import ClickHouseSink

__all__ = ["run_sink", "run_worker"]

log = logging.getLogger(__name__)


async def run_sink(settings: Settings, stop: asyncio.Event) -> None:
    """The sink role until ``stop``; owns the embedded store and serves queries if embedded."""
    lock = StoreLock(settings.home_path) if settings.embedded else None
    runner = None
    try:
        if lock is not None:
            await lock.acquire(timeout=30.0)
            reader = connect(settings)
            runner = await serve_queries(lock, lambda sql: run_readonly(reader, sql))
        await ClickHouseSink(settings).run(stop)
    finally:
        if runner is not None:
            await runner.cleanup()
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


async def run_process(settings: Settings, stop: asyncio.Event) -> None:
    """The processing role's two stages on the runtime until ``stop``, with the pinned
    baselines followed for stage 2. Logs ``processing ready`` once both own partitions."""
    from pipeline.runtime.consumer import KafkaRunner
    from pipeline.runtime.retry import forever
    from pipeline.scoring.series import follow_pinned

    first, second, pinned = stages(settings)
    runners = [KafkaRunner(settings, first, "stage1"), KafkaRunner(settings, second, "stage2")]
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    if settings.drift.enabled:
        tasks.append(asyncio.create_task(
            forever("reading baselines", lambda: follow_pinned(settings, pinned), stop=stop)))

    async def announce() -> None:
        await asyncio.gather(*(r.assigned_once.wait() for r in runners))
        log.info("processing ready: stage 1 and stage 2 consuming")

    tasks.append(asyncio.create_task(announce()))
    try:
        done, _ = await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a stage that failed fails the worker, loudly
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _RoleService(mode.Service):
    """A role (``run(settings, stop)``) as a mode service, so it shares the faust worker's
    loop and lifecycle when the alert agent runs; a role that fails crashes the worker
    loudly rather than let it limp on."""

    def __init__(self, role: str, run: Callable[[Settings, asyncio.Event], Awaitable[None]],
                 settings: Settings, **kwargs: object) -> None:
        self.role = role
        self.run_role = run
        self.settings = settings
        self._stop = asyncio.Event()
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        try:
            await self.run_role(self.settings, self._stop)
        except Exception as exc:
            log.exception("%s failed", self.role)
            await self.crash(exc)

    async def on_stop(self) -> None:
        self._stop.set()


def run_worker(settings: Settings, roles: Sequence[str], loglevel: str = "info") -> int:
    """Run the given roles until SIGINT/SIGTERM; return the process exit code."""
    roles = sorted(set(roles))
    settings.home_path.mkdir(parents=True, exist_ok=True)
    asyncio.run(_prepare(settings))
    if "process" not in roles or not settings.alerts.rules:
        logging.basicConfig(level=loglevel.upper(),
                            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
        install_repeat_filter()
        return asyncio.run(_without_faust(settings, roles))

    from pipeline.runtime.app import build_app  # the alert agent: the last faust part

    app = build_app(settings)
    services: list[mode.Service] = [_RoleService("processing", run_process, settings)]
    if "sink" in roles:
        services.append(_RoleService("sink", run_sink, settings))
    worker = _Worker(app, *services, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()  # returns only via SystemExit
    return 0


class _Worker(faust.Worker):
    """faust's worker, with repeats rate-limited on the handlers faust's logging set-up made
    (an outage would otherwise log thousands of identical connection errors a second)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        install_repeat_filter(logger.handlers)


async def _prepare(settings: Settings) -> None:
    await wait_for_broker(settings.kafka, timeout=60.0)
    await ensure_topics(settings)


async def _without_faust(settings: Settings, roles: Sequence[str]) -> int:
    """The roles on one asyncio loop until SIGINT/SIGTERM; a role that fails stops all."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    jobs = []
    if "process" in roles:
        jobs.append(asyncio.create_task(run_process(settings, stop)))
    if "sink" in roles:
        jobs.append(asyncio.create_task(run_sink(settings, stop)))
    try:
        done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
        for job in done:
            job.result()
    except Exception:
        log.exception("worker failed")
        return 1
    finally:
        stop.set()
        await asyncio.gather(*jobs, return_exceptions=True)
    return 0
