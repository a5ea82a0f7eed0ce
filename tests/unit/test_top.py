"""``inferwatch top`` in a pseudo-terminal, reading a real store while a "worker" owns it.

This test process plays the worker: it holds the embedded store's lock, serves the
store's ClickHouse HTTP interface and publishes the owner file, so ``top`` (a child
process on a pty, with the pty as its controlling terminal) reads through the owner as it
does in production. The screen must show every series with the Overview SQL's values,
pick up a series written after it started, and give the terminal back on ``q`` and on
Ctrl-C with exit status 0.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.cli.top import _series
from pipeline.config import QuerySettings, Settings
from pipeline.sinks.clickhouse.client import apply_migrations, connect
from pipeline.sinks.clickhouse.http_interface import serve_http
from pipeline.sinks.clickhouse.owner import StoreLock
from pipeline.sinks.clickhouse.query import run_readonly
from pipeline.sinks.clickhouse.rows import METRICS_COLUMNS, struct_columns
from pipeline.views.overview import overview_sql
from schemas.metrics import WindowMetrics
from tests.unit.views.simulated_run import simulated_run, store_run

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LEAVE = "\x1b[?25h\x1b[?1049l"


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Settings]]:
    """The store after a simulated run, owned by this process and served over HTTP."""
    home = tmp_path_factory.mktemp("top")
    settings = Settings(home=str(home), query=QuerySettings(port=0, password="top-test"))
    lock = StoreLock(settings.home_path)
    assert lock.try_acquire()
    client = connect(settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = None
    try:
        apply_migrations(client, settings)
        store_run(client, simulated_run())
        path = settings.clickhouse_dsn.removeprefix("chdb://")
        runner, end = asyncio.run_coroutine_threadsafe(
            serve_http(path, settings), loop).result(30)
        lock.publish(end.host, end.port, end.user, end.password)
        yield client, settings
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        client.close()
        lock.release()


class Screen:
    """``inferwatch top`` on a pty; ``output`` is everything it wrote."""

    def __init__(self, home: str, *args: str, columns: int = 220, lines: int = 40) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.modes = termios.tcgetattr(self.master)
        # a new session whose controlling terminal is the pty (so Ctrl-C is a SIGINT)
        code = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                "os.execv(sys.executable, [sys.executable, '-m', 'pipeline', 'top', "
                "*sys.argv[1:]])")
        env = {**os.environ, "INFERWATCH_HOME": home, "TERM": "xterm"}
        env.pop("INFERWATCH_CLICKHOUSE", None)
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=slave,
                                     stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.output = ""

    def read_until(self, done: Callable[[str], bool], timeout: float = 60.0) -> str:
        """Read until ``done(latest frame)``; the latest frame, escapes removed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self.frame()):
                return self.frame()
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child is gone (EIO)
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    break
                self.output += chunk.decode("utf-8", "replace")
        raise AssertionError(f"screen never matched; last frame:\n{self.frame()}")

    def frame(self) -> str:
        last = self.output.rsplit("\x1b[H", 1)[-1]
        return ESCAPE.sub("", last).replace("\r", "")

    def press(self, keys: bytes) -> int:
        os.write(self.master, keys)
        status = self.proc.wait(30)
        try:  # the rest of what it wrote: the terminal handed back
            while select.select([self.master], [], [], 0.2)[0]:
                chunk = os.read(self.master, 65536)
                if not chunk:
                    break
                self.output += chunk.decode("utf-8", "replace")
        except OSError:
            pass
        return status

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


def expected(client: Any, **kwargs: Any) -> list[dict]:
    result = run_readonly(client, overview_sql(**kwargs))
    return [dict(zip(result.columns, r, strict=True)) for r in result.rows]


def line_of(frame: str, key: str) -> str:
    [line] = [ln for ln in frame.splitlines() if ln.startswith(_series(key) + " ")]
    return line


def test_top_shows_every_series_with_the_sql_values_refreshes_and_quits(worker) -> None:
    client, settings = worker
    rows = expected(client)
    assert len(rows) >= 5
    screen = Screen(settings.home, "--every", "0.5")
    try:
        frame = screen.read_until(lambda f: all(_series(r["series_key"]) in f for r in rows))
        assert "\x1b[?1049h" in screen.output  # the alternate screen
        assert f"{len(rows)} series" in frame
        for r in rows:
            cells = line_of(frame, r["series_key"]).split()
            assert f"{r['requests_per_s']:.2f}" in cells
            assert f"{r['p50_ms']:.1f}" in cells and f"{r['p99_ms']:.1f}" in cells
            assert f"{r['error_rate'] * 100:.2f}%" in cells
            assert f"{r['cost_per_hour_usd']:.2f}" in cells
            assert f"{r['slo_compliance'] * 100:.1f}%" in cells
            if r["firing"]:
                assert ",".join(r["firing"]) in cells
        assert any(r["firing"] for r in rows)  # the alert column was really checked

        # a series stored after top started shows up: it queries again at each refresh
        newest = datetime.fromisoformat(max(r["window_end"] for r in rows))
        end = newest.replace(tzinfo=newest.tzinfo or UTC).timestamp()
        probe = WindowMetrics(series_key="model=probe|model_version=9|operation=chat",
                              labels={"model": "probe", "model_version": "9",
                                      "operation": "chat"},
                              window_start=end - 10, window_end=end, requests=7,
                              request_rate_per_s=0.7, latency_p50_ms=11.0,
                              latency_p99_ms=4321.5)
        client.insert("window_metrics", struct_columns([probe], METRICS_COLUMNS),
                      column_names=METRICS_COLUMNS, column_oriented=True)
        frame = screen.read_until(lambda f: "probe 9 chat" in f)
        assert "4321.5" in line_of(frame, probe.series_key).split()

        modes_while_running = termios.tcgetattr(screen.master)
        assert not modes_while_running[3] & termios.ICANON  # keys unbuffered while it runs
        assert screen.press(b"q") == 0
        assert screen.output.endswith(LEAVE) or screen.output.rstrip("\r\n").endswith(LEAVE)
        assert termios.tcgetattr(screen.master) == screen.modes  # the terminal as it was
    finally:
        screen.close()


def test_ctrl_c_quits_cleanly_too(worker) -> None:
    _, settings = worker
    screen = Screen(settings.home, "--filter", "model=gpt-chat", "--sort", "p99_ms")
    try:
        frame = screen.read_until(lambda f: "gpt-chat" in f and "series" in f)
        assert "embed-small" not in frame
        assert screen.press(b"\x03") == 0
        assert LEAVE in screen.output
        assert termios.tcgetattr(screen.master) == screen.modes
    finally:
        screen.close()


def test_once_prints_one_plain_table(worker) -> None:
    client, settings = worker
    rows = expected(client, sort="p99_ms", limit=2)
    result = CliRunner().invoke(cli, ["top", "--once", "--sort", "p99_ms", "--limit", "2"],
                                env={"INFERWATCH_HOME": settings.home})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    listed = [ln.split()[0] for ln in result.output.splitlines()[3:]]
    assert listed == [_series(r["series_key"]).split()[0] for r in rows]


def test_a_filter_that_is_not_label_equals_value_is_a_usage_error(worker) -> None:
    _, settings = worker
    result = CliRunner().invoke(cli, ["top", "--once", "--filter", "gpt-chat"],
                                env={"INFERWATCH_HOME": settings.home})
    assert result.exit_code == 2 and "LABEL=VALUE" in result.output
