"""``inferwatch worker``: run the processing role, the sink role, or both in one process.

- ``process``: stage 1 (decode, validate, DLQ, partial windows) on the runtime's own
  aiokafka consumer, and the faust app for stage 2 and alerting.
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


def partial_stage(settings: Settings):  # -> PartialStage
    """Stage 1 as configured: with drift on, each window also keeps the histograms of
    the distributions scored in stage 2 (the operational ones come from its sketches)."""
    from pipeline.scoring.monitor import monitor_spec
    from pipeline.windows.partial_stage import PartialStage

    spec = monitor_spec(settings.drift, settings.metrics.relative_accuracy, operational=False)
    drift = spec if settings.drift.enabled and spec.monitored() else None
    return PartialStage(settings, drift)


class _StageService(mode.Service):
    """Stage 1 on the runtime's consumer, sharing the faust worker's loop and lifecycle."""

    def __init__(self, settings: Settings, **kwargs: object) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        from pipeline.runtime.consumer import KafkaRunner

        try:
            await KafkaRunner(self.settings, partial_stage(self.settings), "stage1").run(
                self._stop)
        except Exception as exc:  # crash the worker loudly rather than limp on
            log.exception("stage 1 failed")
            await self.crash(exc)

    async def on_stop(self) -> None:
        self._stop.set()


class _SinkService(mode.Service):
    """The sink as a mode service, so it shares the faust worker's loop and lifecycle."""

    def __init__(self, settings: Settings, **kwargs: object) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        try:
            await run_sink(self.settings, self._stop)
        except Exception as exc:  # crash the whole worker loudly, never limp on without a sink
            log.exception("sink failed")
            await self.crash(exc)

    async def on_stop(self) -> None:
        self._stop.set()


def run_worker(settings: Settings, roles: Sequence[str], loglevel: str = "info") -> int:
    """Run the given roles until SIGINT/SIGTERM; return the process exit code."""
    roles = sorted(set(roles))
    settings.home_path.mkdir(parents=True, exist_ok=True)
    asyncio.run(_prepare(settings))
    if "process" not in roles:
        logging.basicConfig(level=loglevel.upper(),
                            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
        install_repeat_filter()
        return asyncio.run(_sink_only(settings))

    from pipeline.runtime.app import build_app

    app = build_app(settings)
    services: list[mode.Service] = [_StageService(settings)]
    if "sink" in roles:
        services.append(_SinkService(settings))
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


async def _sink_only(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_sink(settings, stop)
    return 0
