"""Windowed metrics on real Kafka and the real ClickHouse engine.

Each test simulates traffic, lets the two-stage aggregation run, and checks every
(series, window) result in `window_metrics` against a recomputation from the raw
events the sink stored: request and error counts exactly, p50/p99 latency within
the sketch's relative accuracy of the exact order statistic. With one worker, with
two, and with one of two SIGKILLed mid-run and restarted.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from pipeline.dev.publish import publish
from pipeline.dev.simulate import TrafficModel
from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

METRICS_ENV = {
    "INFERWATCH_METRICS__WINDOW_SECONDS": "10",
    "INFERWATCH_METRICS__LATENESS_SECONDS": "2",
    "INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS": "3",
    "INFERWATCH_WORKER__SESSION_TIMEOUT_SECONDS": "8",
    "INFERWATCH_WORKER__ROLLUP_INTERVAL_SECONDS": "2",
}
ALPHA = 0.01


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    pipeline = Pipeline(kafka_bootstrap, tmp_path, **METRICS_ENV)
    yield pipeline
    pipeline.close()


def simulate(pipe: Pipeline, rate: float, duration: float, speed: float, seed: int,
             resources: bool = False) -> int:
    """Publish simulated traffic; return the number of inference events."""
    start = time.time() - duration - 30  # event time in the recent past
    traffic = TrafficModel(seed=seed, id_prefix=f"wm-{seed}")
    records = traffic.stream(rate, duration, start, resources=resources)
    return asyncio.run(publish(pipe.settings, records, speed=speed, batch_size=200)).events


def wait_windows(pipe: Pipeline, produced: int, timeout: float = 180.0) -> None:
    sql = "SELECT sum(requests) FROM window_metrics FINAL"
    got = pipe.wait_count(produced, timeout=timeout, sql=sql)
    assert got == produced, f"window_metrics hold {got} requests of {produced}"


def assert_matches_raw_events(pipe: Pipeline) -> None:
    """Every window result equals a recomputation from the stored raw events."""
    windows = pipe.query(
        "SELECT model, model_version, operation, toUnixTimestamp64Milli(window_start) AS ws, "
        "requests, errors, latency_p50_ms, latency_p99_ms, version "
        "FROM window_metrics FINAL ORDER BY model, ws")
    raw = pipe.query(
        "SELECT model, model_version, operation, "
        "intDiv(toUnixTimestamp64Milli(timestamp), 10000) * 10000 AS ws, "
        "groupArray(latency_ms) AS latencies, countIf(status = 'error') AS errors "
        "FROM events FINAL GROUP BY model, model_version, operation, ws")
    expected = {(r["model"], r["model_version"], r["operation"], int(r["ws"])): r for r in raw}
    seen = set()
    for w in windows:
        key = (w["model"], w["model_version"], w["operation"], int(w["ws"]))
        assert key in expected, f"a window with no raw events: {key}"
        seen.add(key)
        truth = expected[key]
        lat = np.array(truth["latencies"], dtype=float)
        assert w["requests"] == len(lat), key
        assert w["errors"] == truth["errors"], key
        for q, column in ((0.5, "latency_p50_ms"), (0.99, "latency_p99_ms")):
            exact = float(np.quantile(lat, q, method="lower"))
            assert abs(w[column] - exact) <= ALPHA * exact + 1e-9, (key, column, w[column], exact)
    assert seen == set(expected), f"windows missing: {sorted(set(expected) - seen)[:5]}"


def test_window_results_equal_recomputation_from_raw_events(pipe: Pipeline) -> None:
    produced = simulate(pipe, rate=800, duration=40, speed=0, seed=31, resources=True)
    worker = pipe.start_worker()
    pipe.wait_sink_ready(worker)
    assert pipe.wait_count(produced) == produced
    wait_windows(pipe, produced)
    assert_matches_raw_events(pipe)

    # The roll-ups (merged quantilesDD states) agree with the raw events too.
    rollup = pipe.query(
        "SELECT model, sum(requests) AS n, "
        "quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(latency_ms)[4] AS p99 "
        "FROM rollup_1h FINAL GROUP BY model ORDER BY model")
    direct = pipe.query(
        "SELECT model, count() AS n, quantileExactLow(0.99)(latency_ms) AS p99 "
        "FROM events FINAL GROUP BY model ORDER BY model")
    assert [r["n"] for r in rollup] == [r["n"] for r in direct]
    for a, b in zip(rollup, direct, strict=True):
        assert abs(a["p99"] - b["p99"]) <= 0.02 * b["p99"], (a, b)

    # Resource metrics per host and window agree with the stored samples.
    samples = pipe.scalar("SELECT count() FROM resources")
    assert samples > 0
    stored = pipe.wait_count(samples, sql="SELECT sum(samples) FROM resource_metrics FINAL")
    assert stored == samples
    per_window = pipe.query(
        "SELECT host, toUnixTimestamp64Milli(window_start) AS ws, samples, gpu_util_mean, "
        "queue_length_max FROM resource_metrics FINAL ORDER BY host, ws")
    raw = {(r["host"], int(r["ws"])): r for r in pipe.query(
        "SELECT host, intDiv(toUnixTimestamp64Milli(timestamp), 10000) * 10000 AS ws, "
        "count() AS n, avg(gpu_util) AS gpu, max(queue_length) AS q "
        "FROM resources GROUP BY host, ws")}
    assert len(per_window) == len(raw)
    for w in per_window:
        truth = raw[(w["host"], int(w["ws"]))]
        assert w["samples"] == truth["n"] and w["queue_length_max"] == truth["q"]
        assert abs(w["gpu_util_mean"] - truth["gpu"]) < 1e-9


def test_two_workers_give_the_same_results(pipe: Pipeline) -> None:
    produced = simulate(pipe, rate=800, duration=40, speed=0, seed=32)
    first = pipe.start_worker()
    pipe.wait_sink_ready(first)
    # The second worker joins after the first drained the topic: the partitions it takes
    # over get no new events, yet their watermarks must advance to close the last window.
    assert pipe.wait_count(1, sql="SELECT sum(requests) FROM window_metrics FINAL") > 0
    second = pipe.start_worker(roles="process")
    pipe.wait_processor_ready(second)
    wait_windows(pipe, produced)
    assert_matches_raw_events(pipe)
    assert second.poll() is None and first.poll() is None


def test_sigkilled_worker_restarted_gives_the_same_results(pipe: Pipeline) -> None:
    first = pipe.start_worker()
    second = pipe.start_worker(roles="process")
    pipe.wait_sink_ready(first)
    pipe.wait_processor_ready(second)
    # Traffic arrives over ~15 s while the second worker is killed and restarted.
    produced: dict[str, int] = defaultdict(int)

    async def traffic_and_kill() -> None:
        async def send() -> None:
            produced["n"] = await asyncio.to_thread(simulate, pipe, 800, 60, 4.0, 33)

        sender = asyncio.create_task(send())
        await asyncio.sleep(5)
        pipe.kill(second)
        await asyncio.sleep(2)
        pipe.start_worker(roles="process")
        await sender

    asyncio.run(traffic_and_kill())
    assert pipe.wait_count(produced["n"]) == produced["n"]
    wait_windows(pipe, produced["n"], timeout=240)
    assert_matches_raw_events(pipe)
