"""Broker outages on a real KRaft broker of the test's own (stopped and restarted mid-run):
``inferwatch simulate`` rides one out and delivers every event it generated, a worker
stores every event exactly once afterwards, and both keep their logs short meanwhile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.dev.simulate import TrafficModel
from schemas.event import InferenceEvent
from tests.conftest import ROOT, local_kafka
from tests.integration.harness import Pipeline, event_ids_on

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None,
                       reason="needs Java 17+ to run a broker of its own"),
]

# A broker of this test's own, so stopping it disturbs no other test.
PORT = int(os.environ.get("INFERWATCH_TEST_OUTAGE_PORT", "19492"))
RATE, DURATION, SEED = 100.0, 30.0, 11
OUTAGE_AT, OUTAGE = 6.0, 10.0  # seconds into the run, seconds down (plus the restart)


def _expected_ids(start: float) -> set[str]:
    """The events ``simulate --seed SEED --start START`` generates (the same code)."""
    traffic = TrafficModel(seed=SEED, id_prefix=f"sim-{SEED}-{start:.0f}")
    return {r.event_id for _, r in traffic.stream(RATE, DURATION, start)
            if isinstance(r, InferenceEvent)}


def _simulate(pipe: Pipeline, start: float) -> subprocess.Popen:
    err = open(pipe.tmp / "simulate.err", "wb")  # noqa: SIM115 - handed to the child
    out = open(pipe.tmp / "simulate.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "simulate", "--rate", str(RATE), "--duration",
         str(DURATION), "--seed", str(SEED), "--start", str(start), "--batch-size", "10",
         "--drain-timeout", "120"],
        env=pipe.env, stdout=out, stderr=err, cwd=ROOT)
    out.close()
    err.close()
    return proc


def _outage(kafka, procs: list[subprocess.Popen]) -> tuple[float, float]:
    """Stop the broker OUTAGE_AT seconds in, start it OUTAGE seconds later; the wall-clock
    span it was down. Every process in ``procs`` must live through it."""
    time.sleep(OUTAGE_AT)
    assert kafka.down(), "the test's broker was not running"
    down_at = time.time()
    time.sleep(OUTAGE)
    for proc in procs:
        assert proc.poll() is None, f"exited {proc.returncode} during the outage"
    kafka.up(timeout=120)
    return down_at, time.time()


@pytest.fixture
def broker(tmp_path: Path):
    kafka = local_kafka(tmp_path / "kafka-home", PORT)
    kafka.up(timeout=120)
    try:
        yield kafka
    finally:
        kafka.down()


def test_simulate_rides_out_a_broker_outage(broker, tmp_path: Path) -> None:
    pipe = Pipeline(broker.bootstrap, tmp_path)
    start = float(int(time.time()))
    expected = _expected_ids(start)
    proc = _simulate(pipe, start)
    try:
        _outage(broker, [proc])
        assert proc.wait(timeout=240) == 0, (pipe.tmp / "simulate.err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (pipe.tmp / "simulate.out").read_text()
    err = (pipe.tmp / "simulate.err").read_text()
    assert f"sent {len(expected)} events" in out, out + err
    assert "NOT sent" not in err
    ids = event_ids_on(broker.bootstrap, pipe.settings.topics.events, len(expected))
    assert set(ids) == expected  # every generated event reached the topic, nothing else
    # Bounded log volume: progress every 5 s plus a few lines for the outage, not a flood.
    lines = err.splitlines()
    assert len(lines) < 50, err
    assert any("unavailable" in line for line in lines) or \
        any("unreachable" in line for line in out.splitlines()), (out, err)


def test_worker_stores_every_event_through_an_outage_and_logs_little(broker,
                                                                     tmp_path: Path) -> None:
    pipe = Pipeline(broker.bootstrap, tmp_path)
    worker = pipe.start_worker()
    start = float(int(time.time()))
    expected = _expected_ids(start)
    try:
        pipe.wait_sink_ready(worker, timeout=90)
        proc = _simulate(pipe, start)
        log = Path(worker.log_path)  # type: ignore[attr-defined]
        before = len(log.read_text(errors="replace").splitlines())
        down_at, up_at = _outage(broker, [proc, worker])
        during = log.read_text(errors="replace").splitlines()[before:]
        assert proc.wait(timeout=240) == 0, (pipe.tmp / "simulate.err").read_text()
        stored = pipe.wait_count(len(expected), timeout=180,
                                 sql="SELECT count() FROM events FINAL")
        assert stored == len(expected), pipe.log(worker)
        distinct = pipe.owner_scalar("SELECT uniqExact(event_id) FROM events FINAL")
        assert int(distinct) == len(expected)
        assert worker.poll() is None, pipe.log(worker)
        # the worker's log while the broker was down (and restarting, ~20 s): one warning
        # per kind of failure and a summary per 30 s, where it used to write thousands of
        # lines a second. Status lines (INFO: a sink batch a second, faust's start-up and
        # recovery tables) are not failures and are never limited: bounded, not counted.
        assert up_at - down_at < 90
        failures = [line for line in during
                    if any(f"[{level}]" in line for level in ("WARNING", "ERROR", "CRITICAL"))]
        assert len(failures) < 30, "\n".join(failures)
        assert len(during) < 400, "\n".join(during[-200:])
    finally:
        pipe.close()
