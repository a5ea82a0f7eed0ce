"""Alerting on real Kafka: a simulated latency spike fires and resolves, once per series.

Traffic runs in real time (event time = wall time), so "how long after the window
closed did the firing event arrive" is measured, not assumed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer

from pipeline.dev.publish import publish
from pipeline.dev.simulate import TrafficModel
from schemas.alert import AlertEvent
from tests.integration.harness import ROOT, Pipeline

pytestmark = pytest.mark.integration

WINDOW, LATENESS = 5.0, 2.0
# gpt-chat's p50 is 4-7 s per window, 21-33 s in a factor-6 spike: 12 s lies between, so a
# spike fires once and resolves once (at 20 s, windows inside a spike crossed back).
RULES = """
group_by: [alertname, model, model_version]
rules:
  - name: ChatLatencyHigh
    condition: latency_p50_ms > 12000
    severity: critical
    annotations:
      summary: "p50 {{ value }} ms on {{ labels.model }} {{ labels.model_version }}"
      runbook: https://runbooks.example/latency
"""


class Collector:
    """Reads the alerts topic from the start in a thread; records arrival wall times."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.events: list[tuple[float, AlertEvent]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        decode = msgspec.json.Decoder(AlertEvent).decode
        consumer = AIOKafkaConsumer(
            self.pipe.settings.topics.alerts,
            bootstrap_servers=self.pipe.settings.kafka.bootstrap_servers,
            group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        try:
            while not self._stop.is_set():
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    for m in messages:
                        self.events.append((time.time(), decode(m.value)))
        finally:
            await consumer.stop()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Webhook:
    """A local receiver of JSON posts on ``path`` started by the test (``port`` 0: any
    free port, for a worker told the URL; a fixed one for a config written beforehand)."""

    def __init__(self, port: int = 0, path: str = "/alerts") -> None:
        self.bodies: list[dict] = []
        self.port = port
        self.path = path
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        assert ready.wait(10), "the webhook receiver did not start"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def receive(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post(self.path, receive)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        ready.set()
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def _realtime_traffic(pipe: Pipeline, seconds: float, incident: str) -> int:
    traffic = TrafficModel(seed=5, id_prefix=f"al-{time.time():.0f}", incidents=[incident])
    records = traffic.stream(200, seconds, time.time(), resources=False)
    return asyncio.run(publish(pipe.settings, records, speed=1.0, batch_size=50)).events


def _cli(pipe: Pipeline, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "pipeline", *args], env=pipe.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _alerting_env(rules: Path, **extra: str) -> dict[str, str]:
    """Settings of an alerting pipeline: the rules, short windows, quick idle close."""
    return {
        "INFERWATCH_ALERTS__RULES": str(rules),
        "INFERWATCH_METRICS__WINDOW_SECONDS": str(WINDOW),
        "INFERWATCH_METRICS__LATENESS_SECONDS": str(LATENESS),
        "INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS": "3",
        **extra,
    }


def _wait_resolved(collector: Collector, seconds: float, series: int = 2) -> None:
    """Until ``series`` series have a resolved event, or ``seconds`` pass."""
    deadline = time.time() + seconds
    while time.time() < deadline and len(_by_series(collector.events, "resolved")) < series:
        time.sleep(0.5)


@pytest.fixture
def alerting_pipe(kafka_bootstrap: str, tmp_path: Path):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    webhook = Webhook()
    pipe = Pipeline(kafka_bootstrap, tmp_path, **_alerting_env(
        rules, INFERWATCH_ALERTS__WEBHOOK_URLS=webhook.url,
        INFERWATCH_WORKER__SESSION_TIMEOUT_SECONDS="8"))
    pipe.webhook = webhook  # type: ignore[attr-defined]
    yield pipe
    pipe.close()


def _by_series(events: list[tuple[float, AlertEvent]], state: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for arrived, event in events:
        if event.state == state and not event.repeat:
            out.setdefault(event.series_key, []).append((arrived, event))
    return out


def test_latency_spike_fires_once_resolves_once_notifies_and_respects_silence(
    alerting_pipe: Pipeline,
) -> None:
    pipe = alerting_pipe
    silence_id = _cli(pipe, "silence", "add", "--match", "model_version=2024-09",
                      "--for", "1h", "--comment", "canary under test")
    worker = pipe.start_worker()
    pipe.wait_processor_ready(worker)
    pipe.wait_sink_ready(worker)
    collector = Collector(pipe)
    try:
        _realtime_traffic(pipe, 40, "latency_spike@10+15:model=gpt-chat:factor=6")
        _wait_resolved(collector, 60)
    finally:
        collector.close()

    firing = _by_series(collector.events, "firing")
    resolved = _by_series(collector.events, "resolved")
    affected = {k for k in firing}
    assert len(affected) == 2 and all("model=gpt-chat" in k for k in affected), firing.keys()
    for series, items in firing.items():
        assert len(items) == 1, f"duplicate firing for {series}"
        arrived, event = items[0]
        delay = arrived - (event.window_end + LATENESS)
        assert delay <= WINDOW + 2.0, f"firing arrived {delay:.1f}s after its window closed"
        assert len(resolved.get(series, [])) == 1, f"{series} did not resolve exactly once"
        assert event.annotations["runbook"] == "https://runbooks.example/latency"
        assert event.silenced == ("2024-09" in series)
        if event.silenced:
            assert event.silenced_by == [silence_id]

    # The webhook got Alertmanager-format bodies for the unsilenced series only.
    bodies = pipe.webhook.bodies  # type: ignore[attr-defined]
    assert bodies, "the webhook received nothing"
    for body in bodies:
        assert body["version"] == "4" and body["status"] in ("firing", "resolved")
        assert {"receiver", "groupKey", "groupLabels", "commonLabels", "alerts"} <= set(body)
    notified = {a["labels"]["model_version"] for b in bodies for a in b["alerts"]}
    assert notified == {"2024-06"}, notified
    statuses = {a["status"] for b in bodies for a in b["alerts"]}
    assert statuses == {"firing", "resolved"}

    # Every transition is recorded in ClickHouse, the silenced one marked so.
    stored = pipe.wait_count(4, sql="SELECT count() FROM alerts FINAL WHERE NOT repeat")
    assert stored == 4
    rows = pipe.query("SELECT series_key, state, silenced FROM alerts FINAL WHERE NOT repeat "
                      "ORDER BY series_key, state")
    assert [r["silenced"] for r in rows if "2024-09" in r["series_key"]] == [True, True]
    assert json.loads(json.dumps(rows))  # plain JSON values through the query path

    # `inferwatch alerts tail` shows the same transitions, oldest first, as AlertEvents.
    tailed = _cli(pipe, "alerts", "tail", "--json", "--from-beginning", "--max", "4")
    events = [msgspec.json.decode(line, type=AlertEvent) for line in tailed.splitlines()]
    assert len(events) == 4
    assert sorted((e.series_key, e.state) for e in events) == sorted(
        (series, state) for state, by in (("firing", firing), ("resolved", resolved))
        for series in by)


def test_sigkill_while_firing_neither_duplicates_nor_loses_the_resolve(
    alerting_pipe: Pipeline,
) -> None:
    pipe = alerting_pipe
    worker = pipe.start_worker()
    pipe.wait_processor_ready(worker)
    collector = Collector(pipe)
    try:
        async def traffic_and_kill() -> None:
            sender = asyncio.create_task(asyncio.to_thread(
                _realtime_traffic, pipe, 55, "latency_spike@8+25:model=gpt-chat:factor=6"))
            deadline = time.time() + 60
            while not _by_series(collector.events, "firing") and time.time() < deadline:
                await asyncio.sleep(0.5)
            assert _by_series(collector.events, "firing"), "nothing fired before the kill"
            pipe.kill(worker)
            restarted = pipe.start_worker()
            await asyncio.to_thread(pipe.wait_processor_ready, restarted, 90)
            await sender

        asyncio.run(traffic_and_kill())
        _wait_resolved(collector, 90)
    finally:
        collector.close()
    firing = _by_series(collector.events, "firing")
    resolved = _by_series(collector.events, "resolved")
    assert len(firing) == 2
    for series, items in firing.items():
        # A replay may republish the identical event; it must not be a second alert.
        assert len({(e.fingerprint, e.starts_at) for _, e in items}) == 1, series
        assert len({(e.fingerprint, e.starts_at) for _, e in resolved.get(series, [])}) == 1


def test_alert_of_a_series_that_stops_sending_resolves(kafka_bootstrap: str,
                                                       tmp_path: Path) -> None:
    """No window ever says the spike ended (traffic stops during it): the sweep resolves."""
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    pipe = Pipeline(kafka_bootstrap, tmp_path,
                    **_alerting_env(rules, INFERWATCH_ALERTS__STALE_AFTER_WINDOWS="2"))
    try:
        worker = pipe.start_worker(roles="process")
        pipe.wait_processor_ready(worker)
        collector = Collector(pipe)
        try:
            _realtime_traffic(pipe, 20, "latency_spike@4+30:model=gpt-chat:factor=6")
            stopped = time.time()
            _wait_resolved(collector, 60)
        finally:
            collector.close()
        firing = _by_series(collector.events, "firing")
        resolved = _by_series(collector.events, "resolved")
        assert len(firing) == 2, firing.keys()
        assert set(resolved) == set(firing), "a firing alert of a silent series never resolved"
        for items in resolved.values():
            (arrived, _), = items
            assert arrived >= stopped  # resolved by the sweep, not by a window
    finally:
        pipe.close()
