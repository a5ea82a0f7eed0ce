"""The real Prometheus scrapes a running worker: what PromQL says over the HTTP API is
what the test sent (events accepted, rejections by reason, dead letters, rows stored,
and with the opt-in model metrics the requests of each series' window), and the
worker's ``/readyz`` turns 200 once its partitions are assigned and the store answers.

Prometheus (the Debian ``prometheus`` package) runs on a fixed loopback port outside the
ephemeral range, with its storage in the test's temporary directory, scraping the
worker's telemetry port (any free one, read from the worker's log) every second.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
PROMETHEUS_PORT = 19090
PROMETHEUS_URL = f"http://127.0.0.1:{PROMETHEUS_PORT}"


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    pipeline = Pipeline(kafka_bootstrap, tmp_path)
    yield pipeline
    pipeline.close()


def start_prometheus(tmp: Path, target: str) -> subprocess.Popen:
    """Prometheus scraping ``target`` (host:port) every second, ready to answer queries."""
    if not _port_free(PROMETHEUS_PORT):
        pytest.fail(f"port {PROMETHEUS_PORT} (this test's Prometheus) is taken")
    config = tmp / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "inferwatch", "scrape_interval": "1s",
                            "static_configs": [{"targets": [target]}]}],
    }))
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'prom-data'}",
         f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited {proc.returncode}:\n"
                                 + (tmp / "prometheus.log").read_text()[-4000:])
        try:
            if _get(f"{PROMETHEUS_URL}/-/ready")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("prometheus not ready after 60 s")


def query(promql: str) -> float | None:
    """The value of an instant PromQL query returning at most one sample (None: none)."""
    url = f"{PROMETHEUS_URL}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    status, body = _get(url)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def wait_query(promql: str, expected: float, timeout: float = 120.0) -> float | None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = query(promql)
        if seen == expected:
            return seen
        time.sleep(0.5)
    return seen


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package "
                    "'prometheus'; `make system-deps` installs it as root)")
def test_prometheus_scrapes_a_worker_and_counts_what_was_sent(pipe: Pipeline,
                                                              tmp_path: Path) -> None:
    worker = pipe.start_worker(INFERWATCH_TELEMETRY__MODEL_METRICS="true",
                               INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS="2",
                               INFERWATCH_METRICS__LATENESS_SECONDS="1")
    telemetry = pipe.telemetry_url(worker)
    prometheus = start_prometheus(tmp_path, telemetry.removeprefix("http://"))
    try:
        deadline = time.monotonic() + 90
        ready = (0, "")
        while time.monotonic() < deadline and ready[0] != 200:
            ready = _get(f"{telemetry}/readyz")
            time.sleep(0.3)
        assert ready[0] == 200, f"{ready}\n{pipe.log(worker)}"
        assert _get(f"{telemetry}/healthz")[0] == 200

        now = math.floor(time.time() / 10) * 10 + 1  # every event in one 10 s window
        single = [(None, msgspec.json.encode({"event_id": f"p-{i}", "timestamp": now,
                                              "model": f"m{i % 3}", "latency_ms": 20.0 + i}),
                   [("content-type", b"application/json")]) for i in range(150)]
        batches = [(None, msgspec.json.encode([
            {"event_id": f"b-{b}-{i}", "timestamp": now, "model": "m0", "latency_ms": 5.0}
            for i in range(10)]), [("content-type", b"application/json")]) for b in range(10)]
        bad = [(None, b"{not json", [("content-type", b"application/json")])
               for _ in range(3)]
        sent = len(single) + 10 * len(batches)
        pipe.produce([*single, *batches, *bad])

        consumed = 'sum(inferwatch_events_consumed_total{stage="stage1"})'
        assert wait_query(consumed, sent) == sent, pipe.log(worker)
        assert wait_query('sum(inferwatch_events_rejected_total{reason="malformed"})', 3) == 3
        assert wait_query('sum(inferwatch_dlq_deliveries_total{stage="stage1"})', 3) == 3
        assert wait_query('sum(inferwatch_sink_rows_total{table="events"})', sent) == sent
        assert query('up{job="inferwatch"}') == 1
        assert query('sum(inferwatch_messages_consumed_total{stage="stage1"})') == (
            len(single) + len(batches) + len(bad))
        # the window closes (idle partitions advance with the wall clock): one window per
        # series, its requests exposed with the series labels
        assert wait_query("sum(inferwatch_model_requests)", sent) == sent, pipe.log(worker)
        assert query("count(inferwatch_model_requests)") == 3
        assert query('inferwatch_model_requests{model="m1"}') == 50
        # observed once per first emission of a series' window: one window, three series
        assert query("sum(inferwatch_window_close_delay_seconds_count)") == 3
        time.sleep(3)  # a few more scrapes: nothing counted twice
        assert query(consumed) == sent
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()
