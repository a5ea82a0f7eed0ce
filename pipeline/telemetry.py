"""The pipeline's own health as Prometheus metrics (prometheus-client), and the worker's
HTTP endpoint that serves it: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready).

Every metric lives here, on one registry, so its name, help and labels are read in one
place; stages and adapters import the object they update (``EVENTS_REJECTED.labels(
stage="stage1", reason="schema").inc(n)``). Label values are bounded sets (stage names,
rejection reasons, alert states, receiver names, tables, partitions), never series keys:
the opt-in model metrics (:class:`ModelSeries`) have their own collector, bounded by
``telemetry.max_model_series``.

What the runtime counts for every stage goes through :class:`StageMeter` (messages,
accepted events, rejections by reason, dead letters delivered, consumer lag), so a stage
itself stays free of metrics code. Readiness is :data:`HEALTH`: the processing role's
runners have had their partitions assigned, and the sink's store answered ``SELECT 1``
within the last :data:`STORE_FRESH_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "ACTIVE_SERIES", "ALERTS", "CONSUMER_LAG", "DLQ_DELIVERIES", "EVENTS_CONSUMED",
    "EVENTS_REJECTED", "HEALTH", "MESSAGES_CONSUMED", "MODEL_SERIES_OVERFLOW",
    "NOTIFICATIONS", "OTLP_SPANS", "REGISTRY", "SERIES_OVERFLOW", "SINK_INSERT_FAILURES",
    "SINK_INSERT_SECONDS", "SINK_ROWS", "WINDOW_CLOSE_DELAY", "Health", "ModelSeries",
    "StageMeter", "TelemetryError", "TelemetryServer", "count_letters", "serve",
]

log = logging.getLogger(__name__)

disable_created_metrics()  # no ``*_created`` series: they double the exposition for nothing

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_CONSUMED = Counter(
    "inferwatch_messages_consumed", "Kafka records consumed, per stage and topic.",
    ["stage", "topic"], registry=REGISTRY)
EVENTS_CONSUMED = Counter(
    "inferwatch_events_consumed", "Events decoded and accepted, per stage.",
    ["stage"], registry=REGISTRY)
EVENTS_REJECTED = Counter(
    "inferwatch_events_rejected", "Events or messages rejected, per stage and reason "
    "(each one is on the dead-letter topic).", ["stage", "reason"], registry=REGISTRY)
DLQ_DELIVERIES = Counter(
    "inferwatch_dlq_deliveries", "Dead letters acknowledged by the broker, per stage.",
    ["stage"], registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "inferwatch_consumer_lag", "Records between a partition's end and the stage's "
    "position, per assigned partition.", ["stage", "topic", "partition"], registry=REGISTRY)
WINDOW_CLOSE_DELAY = Histogram(
    "inferwatch_window_close_delay_seconds", "Wall-clock time from a window's end to its "
    "first metrics being emitted.", registry=REGISTRY,
    buckets=(0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120, 300, 600))
SINK_ROWS = Counter(
    "inferwatch_sink_rows", "Rows inserted into ClickHouse, per table.", ["table"],
    registry=REGISTRY)
SINK_INSERT_SECONDS = Histogram(
    "inferwatch_sink_insert_seconds", "Time of one ClickHouse insert, per table.", ["table"],
    registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SINK_INSERT_FAILURES = Counter(
    "inferwatch_sink_insert_failures", "ClickHouse inserts that failed (retried or "
    "isolated), per table.", ["table"], registry=REGISTRY)
ACTIVE_SERIES = Gauge(
    "inferwatch_active_series", "Series this worker holds state for, per stage (stage1: "
    "seen recently by the cardinality guard; stage2: with windows held).",
    ["stage"], registry=REGISTRY)
SERIES_OVERFLOW = Counter(
    "inferwatch_series_overflow", "Events folded into an overflow series because the "
    "worker held metrics.max_series_per_worker series.", registry=REGISTRY)
ALERTS = Gauge(
    "inferwatch_alerts", "Alerts on this worker, per state (pending, firing).", ["state"],
    registry=REGISTRY)
NOTIFICATIONS = Counter(
    "inferwatch_notifications", "Notifications to receivers, per receiver and outcome "
    "(sent, failed, dropped).", ["receiver", "outcome"], registry=REGISTRY)
FEEDBACK_FATES = Counter(
    "inferwatch_feedback", "Valid feedback events by what the join made of them: joined, "
    "repeat, duplicate, unmatched (invalid ones are in inferwatch_events_rejected).",
    ["status"], registry=REGISTRY)
QUALITY_HELD = Gauge(
    "inferwatch_quality_held", "What the quality join holds on this worker: inferences "
    "waiting for feedback, feedback waiting for its inference.", ["what"], registry=REGISTRY)
OTLP_SPANS = Counter(
    "inferwatch_otlp_spans", "OpenTelemetry spans read, per outcome (mapped: a GenAI span "
    "became an event; skipped: not a GenAI span).", ["outcome"], registry=REGISTRY)
MODEL_SERIES_OVERFLOW = Counter(
    "inferwatch_model_series_overflow", "Closed windows left out of the model metrics "
    "because telemetry.max_model_series series were exposed already.", registry=REGISTRY)

_REASON_HEADER = "inferwatch-error-reason"  # pipeline.sources.dlq.REASON


# ---------------------------------------------------------------------- the runtime's counts
def count_letters(stage: str, letters: Iterable[Any]) -> None:
    """Count dead letters (``DeadLetter``) as rejections of ``stage``, by their reason."""
    reasons: Tally[str] = Tally()
    for letter in letters:
        reason = dict(letter.headers).get(_REASON_HEADER, b"internal")
        reasons[reason.decode("utf-8", "replace")] += 1
    for reason, n in reasons.items():
        EVENTS_REJECTED.labels(stage=stage, reason=reason).inc(n)


class StageMeter:
    """What the runtime counts for one stage: records consumed per topic, events accepted
    (read from the stage's ``counts.events`` if it keeps one), rejections by reason (the
    dead letters of its steps), dead letters delivered, and lag per owned partition.

    ``watch`` exposes the stage's ``active_series()`` and its ``model_series`` collector
    (if any) while it runs; ``close`` takes them and the stage's lag series away.

    >>> from types import SimpleNamespace
    >>> stage = SimpleNamespace(counts=SimpleNamespace(events=0))
    >>> meter = StageMeter("doc", stage)
    >>> stage.counts.events += 3
    >>> meter.batch("t", 2, [])
    >>> REGISTRY.get_sample_value("inferwatch_events_consumed_total", {"stage": "doc"})
    3.0
    """

    def __init__(self, name: str, stage: Any) -> None:
        self.name = name
        self.stage = stage
        self._accepted = self._accepted_now() or 0
        self._lagging: set[tuple[str, int]] = set()
        self._collector: Collector | None = None

    def _accepted_now(self) -> int | None:
        events = getattr(getattr(self.stage, "counts", None), "events", None)
        return events if isinstance(events, int) else None

    def batch(self, topic: str, records: int, letters: Sequence[Any]) -> None:
        """One ``on_batch`` call: ``records`` read from ``topic``, ``letters`` its dead letters."""
        MESSAGES_CONSUMED.labels(stage=self.name, topic=topic).inc(records)
        self.rejected(letters)
        accepted = self._accepted_now()
        if accepted is not None:
            if accepted > self._accepted:
                EVENTS_CONSUMED.labels(stage=self.name).inc(accepted - self._accepted)
            self._accepted = accepted

    def rejected(self, letters: Sequence[Any]) -> None:
        count_letters(self.name, letters)

    def delivered(self, letters: int) -> None:
        DLQ_DELIVERIES.labels(stage=self.name).inc(letters)

    def lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """The lag of every owned partition now; partitions not named are dropped."""
        for topic, partition in self._lagging - set(lags):
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.name, topic, str(partition))
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(stage=self.name, topic=topic,
                                partition=str(partition)).set(max(0, lag))
        self._lagging = set(lags)

    def watch(self) -> None:
        active = getattr(self.stage, "active_series", None)
        if callable(active):
            ACTIVE_SERIES.labels(stage=self.name).set_function(active)
        collector = getattr(self.stage, "model_series", None)
        if collector is not None and self._collector is None:
            REGISTRY.register(collector)
            self._collector = collector

    def close(self) -> None:
        self.lag({})
        with contextlib.suppress(KeyError):
            ACTIVE_SERIES.remove(self.name)
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None


# ---------------------------------------------------------------------- model metrics
_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_RESERVED = {"quantile", "direction"}


def _label_name(name: str) -> str:
    """A series label as a Prometheus label name (``[a-zA-Z_][a-zA-Z0-9_]*``, not ``__*``,
    not one of the names the model metrics use themselves)."""
    out = _LABEL.sub("_", name) or "_"
    if out[0].isdigit() or out.startswith("__") or out in _RESERVED:
        out = f"series_{out.lstrip('_')}"
    return out


class ModelSeries(Collector):
    """The model metrics of the latest closed window per series, as Prometheus gauges.

    Opt-in (``telemetry.model_metrics``), for teams that alert in Prometheus. At most
    ``max_series`` series are exposed: a window of a new series beyond that is left out
    and counted in ``inferwatch_model_series_overflow_total``. A series whose latest
    window ended ``stale_windows`` windows before the newest one seen is removed (the
    model went quiet), which frees its place.

    >>> from schemas.metrics import WindowMetrics
    >>> models = ModelSeries(["model"], max_series=1)
    >>> models.add(WindowMetrics(series_key="model=a", labels={"model": "a"},
    ...                          window_start=0.0, window_end=10.0, requests=7))
    True
    >>> models.add(WindowMetrics(series_key="model=b", labels={"model": "b"},
    ...                          window_start=0.0, window_end=10.0, requests=1))
    False
    >>> [(s.labels, s.value) for s in next(iter(models.collect())).samples]
    [({'model': 'a'}, 7)]
    """

    def __init__(self, series_labels: Sequence[str], max_series: int,
                 stale_windows: int = 3) -> None:
        self.names = list(series_labels)
        self.label_names = [_label_name(n) for n in self.names]
        self.max_series = max_series
        self.stale_windows = stale_windows
        self._latest: dict[str, Any] = {}  # series key -> its newest WindowMetrics
        self._newest_end = float("-inf")

    def __len__(self) -> int:
        return len(self._latest)

    def add(self, window: Any) -> bool:
        """Take a closed window (``WindowMetrics``); False if left out for the bound."""
        key = window.series_key
        held = self._latest.get(key)
        if held is not None and (held.window_start, held.version) > (window.window_start,
                                                                     window.version):
            return True  # an older window's correction: the exposed one stays
        if window.window_end > self._newest_end:
            self._newest_end = window.window_end
            self._expire(window.window_end - window.window_start)
        if held is None and len(self._latest) >= self.max_series:
            MODEL_SERIES_OVERFLOW.inc()
            return False
        self._latest[key] = window
        return True

    def _expire(self, size: float) -> None:
        horizon = self._newest_end - self.stale_windows * max(size, 0.0)
        for key in [k for k, w in self._latest.items() if w.window_end < horizon]:
            del self._latest[key]

    def describe(self) -> Iterator[Any]:
        return iter(self._families())

    def collect(self) -> Iterator[Any]:
        families = self._families()
        requests, errors, latency, ttft, tokens, cost, ends = families
        for window in list(self._latest.values()):
            values = [str(window.labels.get(n, "")) for n in self.names]
            requests.add_metric(values, window.requests)
            errors.add_metric(values, window.errors)
            for q, field in (("0.5", "p50"), ("0.99", "p99")):
                if (v := getattr(window, f"latency_{field}_ms")) is not None:
                    latency.add_metric([*values, q], v)
                if (v := getattr(window, f"ttft_{field}_ms")) is not None:
                    ttft.add_metric([*values, q], v)
            tokens.add_metric([*values, "input"], window.input_tokens_sum)
            tokens.add_metric([*values, "output"], window.output_tokens_sum)
            cost.add_metric(values, window.cost_usd_sum)
            ends.add_metric(values, window.window_end)
        return iter(families)

    def _families(self) -> list[GaugeMetricFamily]:
        labels = self.label_names
        q, d = [*labels, "quantile"], [*labels, "direction"]
        return [
            GaugeMetricFamily("inferwatch_model_requests",
                              "Requests in the series' latest closed window.", labels=labels),
            GaugeMetricFamily("inferwatch_model_errors",
                              "Errors in the series' latest closed window.", labels=labels),
            GaugeMetricFamily("inferwatch_model_latency_ms", "Latency percentile (ms) of "
                              "the series' latest closed window.", labels=q),
            GaugeMetricFamily("inferwatch_model_ttft_ms", "Time-to-first-token percentile "
                              "(ms) of the series' latest closed window.", labels=q),
            GaugeMetricFamily("inferwatch_model_tokens", "Tokens in the series' latest "
                              "closed window, per direction (input, output).", labels=d),
            GaugeMetricFamily("inferwatch_model_cost_usd", "Cost (USD) of the series' "
                              "latest closed window.", labels=labels),
            GaugeMetricFamily("inferwatch_model_window_end_seconds", "Unix time at which "
                              "the series' latest closed window ended.", labels=labels),
        ]


# ---------------------------------------------------------------------- readiness
STORE_FRESH_SECONDS = 30.0  # the store must have answered SELECT 1 this recently
STORE_PROBE_SECONDS = 5.0


class Health:
    """What ``/readyz`` asks: each runner got its partitions; the store answers.

    The worker names what it expects (``expect``); the processing role adds its runners
    (objects with an ``assigned_once`` event and a ``name``); the sink role sets
    ``store_probe``, a blocking ``SELECT 1`` the server runs every few seconds.
    """

    def __init__(self) -> None:
        self.runners: list[Any] = []
        self.expects_runners = False
        self.expects_store = False
        self.store_probe: Callable[[], object] | None = None
        self.store_ok_at: float | None = None  # time.monotonic() of the last answer

    def expect(self, roles: Iterable[str]) -> None:
        roles = set(roles)
        self.runners.clear()
        self.expects_runners = "process" in roles
        self.expects_store = "sink" in roles
        self.store_probe, self.store_ok_at = None, None

    def problems(self, now: float | None = None) -> list[str]:
        """Why the worker is not ready; empty when it is."""
        now = time.monotonic() if now is None else now
        out = []
        if self.expects_runners:
            if not self.runners:
                out.append("processing stages not started")
            out += [f"{r.name}: no partitions assigned yet" for r in self.runners
                    if not r.assigned_once.is_set()]
        if self.expects_store and (self.store_ok_at is None
                                   or now - self.store_ok_at > STORE_FRESH_SECONDS):
            out.append("store not reachable" if self.store_probe is not None
                       else "sink not started")
        return out

    async def probe_store(self) -> None:
        """Run ``store_probe`` (in a thread) and note when it answered."""
        probe = self.store_probe
        if probe is None:
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(probe), timeout=STORE_PROBE_SECONDS * 2)
        except Exception as exc:
            log.warning("readiness: the store did not answer SELECT 1: %s", exc)
        else:
            self.store_ok_at = time.monotonic()


HEALTH = Health()


# ---------------------------------------------------------------------- the endpoint
class TelemetryError(Exception):
    """The endpoint could not start (the message says which setting to change)."""


class TelemetryServer:
    """``/metrics``, ``/healthz``, ``/readyz`` on aiohttp, on the worker's loop."""

    def __init__(self, bind: str, port: int, health: Health = HEALTH,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.bind = bind
        self.port = port
        self.health = health
        self.registry = registry
        self._runner: web.AppRunner | None = None
        self._prober: asyncio.Task | None = None

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; raises :class:`TelemetryError` when the address is taken."""
        sock = _bind(self.bind, self.port)
        self.port = sock.getsockname()[1]
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._prober = asyncio.create_task(self._probe_forever())
        log.info("telemetry on %s", self.url)

    async def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        if self._runner is not None:
            await self._runner.cleanup()

    async def _probe_forever(self) -> None:
        while True:
            await self.health.probe_store()
            await asyncio.sleep(STORE_PROBE_SECONDS)

    async def _metrics(self, request: web.Request) -> web.Response:
        # the text format every Prometheus reads (our names need no escaping)
        body = await asyncio.to_thread(generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")  # the loop answers: the worker is alive

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = self.health.problems()
        if problems:
            return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
        return web.Response(text="ready\n")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a :class:`TelemetryError` naming the setting."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise TelemetryError(f"telemetry bind address {host!r} does not resolve ({exc}); "
                             "set INFERWATCH_TELEMETRY__BIND") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise TelemetryError(
                f"telemetry port {port} on {host} is already in use: set "
                "INFERWATCH_TELEMETRY__PORT to a free port (0: any free port, logged), or "
                "INFERWATCH_TELEMETRY__ENABLED=false") from None
        raise TelemetryError(f"telemetry cannot listen on {host}:{port} ({exc.strerror}); "
                             "check INFERWATCH_TELEMETRY__BIND and "
                             "INFERWATCH_TELEMETRY__PORT") from None
    return sock


async def serve(settings: Any) -> TelemetryServer | None:
    """Start the endpoint the settings ask for (None when ``telemetry.enabled`` is off)."""
    telemetry = settings.telemetry
    if not telemetry.enabled:
        return None
    server = TelemetryServer(telemetry.bind, telemetry.port)
    await server.start()
    return server
