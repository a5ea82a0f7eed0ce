"""Real Kafka → `inferwatch worker` → embedded store → any ClickHouse client over HTTP.

A running worker owns the chDB store; clickhouse-connect's HTTP client, curl and
``inferwatch query`` read the events sent through the broker from its ClickHouse HTTP
interface, with the address from the worker's log and the password from the owner file.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import clickhouse_connect
import pytest

from pipeline.dev.publish import publish
from pipeline.dev.simulate import synthetic
from pipeline.sinks.clickhouse.owner import OwnerInfo, StoreLock
from schemas import InferenceEvent
from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

COUNT_SQL = "SELECT count() FROM events FINAL"
CURL = shutil.which("curl") or "/usr/bin/curl"


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    pipeline = Pipeline(kafka_bootstrap, tmp_path)
    if not pipeline.settings.embedded:
        pipeline.close()
        pytest.skip("INFERWATCH_CLICKHOUSE names a server: no embedded store to serve")
    yield pipeline
    pipeline.close()


def send(pipe: Pipeline, n: int) -> int:
    """Publish about ``n`` simulated events through the broker; return the exact count."""
    records = (r for r in synthetic(5, rate=n / 10, duration=10.0, start=time.time() - 20)
               if isinstance(r[1], InferenceEvent))
    return asyncio.run(publish(pipe.settings, records, speed=0, batch_size=200)).events


def endpoint(pipe: Pipeline, worker) -> OwnerInfo:
    """The address the worker logged, checked against the owner file (which has the
    password; the log must not)."""
    log = Path(worker.log_path).read_text(errors="replace")
    found = re.search(r"answers ClickHouse HTTP on http://([\d.]+):(\d+)", log)
    assert found, log
    owner = StoreLock(pipe.settings.home_path).owner()
    assert owner is not None
    assert (owner.host, owner.port) == (found.group(1), int(found.group(2)))
    assert owner.password and owner.password not in log
    return owner


def curl(owner: OwnerInfo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CURL, "-sS", *args], capture_output=True, text=True, timeout=60)


def test_clickhouse_clients_read_what_the_worker_stored(pipe: Pipeline) -> None:
    sent = send(pipe, 3000)
    assert sent > 0
    worker = pipe.start_worker()
    pipe.wait_sink_ready(worker)
    assert pipe.wait_count(sent) == sent, pipe.log(worker)
    owner = endpoint(pipe, worker)
    base = f"http://{owner.host}:{owner.port}"

    client = clickhouse_connect.get_client(host=owner.host, port=owner.port,
                                           username=owner.user, password=owner.password)
    try:
        assert client.command(COUNT_SQL) == sent
        assert client.query(COUNT_SQL).result_rows == [(sent,)]
        df = client.query_df("SELECT model, count() AS n FROM events FINAL GROUP BY model")
        assert int(df["n"].sum()) == sent
        table = client.query_arrow("SELECT event_id FROM events FINAL")
        assert table.num_rows == sent
    finally:
        client.close()

    url = f"{base}/?query={urllib.parse.quote(COUNT_SQL)}"
    assert curl(owner, "-u", f"{owner.user}:{owner.password}", url).stdout == f"{sent}\n"
    by_headers = curl(owner, "-H", f"X-ClickHouse-User: {owner.user}",
                      "-H", f"X-ClickHouse-Key: {owner.password}",
                      "--data-binary", f"{COUNT_SQL} FORMAT JSONEachRow", f"{base}/")
    assert int(json.loads(by_headers.stdout)["count()"]) == sent, by_headers
    compressed = curl(owner, "--compressed", "-u", f"{owner.user}:{owner.password}",
                      f"{url}&enable_http_compression=1", "-D", "-")
    assert "content-encoding:" in compressed.stdout.lower(), compressed
    assert compressed.stdout.endswith(f"\n{sent}\n")
    assert curl(owner, f"{base}/ping").stdout == "Ok.\n"

    refused = curl(owner, "-u", f"{owner.user}:{owner.password}", "-o", "/dev/null",
                   "-w", "%{http_code}", "--data-binary", "TRUNCATE TABLE events", f"{base}/")
    assert refused.stdout == "403"
    wrong = curl(owner, "-u", f"{owner.user}:wrong", "-w", "\n%{http_code}", url)
    assert wrong.stdout.startswith("Code: 516.") and wrong.stdout.endswith("\n401")

    assert pipe.scalar(COUNT_SQL) == sent  # `inferwatch query`, through the same interface
    assert worker.poll() is None, pipe.log(worker)
