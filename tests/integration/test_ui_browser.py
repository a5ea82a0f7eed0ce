"""The dashboard in a real browser: Debian's ``chromium`` driven by Playwright (never a
browser download), against a real worker on a real broker with real-time traffic.

Checked: every page loads with no console errors; a table value and a chart's points
equal what SQL returns for the same window; a window that closes while the Series page
is open appears on it within window + lateness + 2 s; a silence created from the Alerts
page is on the silences topic and marks the series' next alert, and expiring it from
the page writes the expiry. Screenshots of each page go to ``tests/artifacts/``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.integration.harness import ROOT, Pipeline

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("INFERWATCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
UI_PORT = 19088  # outside the ephemeral range (32768-60999)
WINDOW, LATENESS = 2.0, 1.0
RULES = """
group_by: [alertname, model, model_version]
rules:
  - name: ChatLatencyHigh
    condition: latency_p50_ms > 12000
    severity: warning
    annotations:
      summary: "p50 {{ value }} ms on {{ labels.model }} {{ labels.model_version }}"
      runbook_url: https://runbooks.example/latency
"""
ENV = {
    "INFERWATCH_METRICS__WINDOW_SECONDS": str(WINDOW),
    "INFERWATCH_METRICS__LATENESS_SECONDS": str(LATENESS),
    "INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS": "3",
    "INFERWATCH_WORKER__SESSION_TIMEOUT_SECONDS": "8",
    "INFERWATCH_DRIFT__TRAILING_WINDOWS": "2",
}


def _browser_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


class Ui:
    """``inferwatch ui`` as a subprocess on a fixed port, with the pipeline's settings."""

    def __init__(self, pipe: Pipeline, port: int = UI_PORT) -> None:
        self.port = port
        self.log_path = pipe.tmp / "ui.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "ui", "--port", str(port)],
                env=pipe.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "dashboard on" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"inferwatch ui did not start:\n{self.log()}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Browser:
    """Headless Chromium with the dashboard's credentials; console errors collected."""

    def __init__(self, user: str, password: str) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM,
                                                args=["--no-sandbox"])
        self.context = self.browser.new_context(
            http_credentials={"username": user, "password": password},
            viewport={"width": 1500, "height": 1000})
        self.errors: list[str] = []

    def page(self, url: str) -> Any:
        page = self.context.new_page()
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        page.goto(url)
        page.wait_for_function("document.body.dataset.loaded", timeout=30_000)
        return page

    def close(self) -> None:
        self.context.close()
        self.browser.close()
        self._pw.stop()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def traffic(pipe: Pipeline, seconds: float, incidents: list[str]) -> threading.Thread:
    """Real-time simulated traffic (event time = wall time) in a background thread."""
    from pipeline.dev.publish import publish
    from pipeline.dev.simulate import TrafficModel

    model = TrafficModel(seed=3, id_prefix=f"ui-{time.time():.0f}", incidents=incidents)
    records = model.stream(200, seconds, time.time(), resources=True)
    thread = threading.Thread(target=lambda: asyncio.run(
        publish(pipe.settings, records, speed=1.0, batch_size=50)), daemon=True)
    thread.start()
    return thread


def credentials(pipe: Pipeline) -> tuple[str, str]:
    from pipeline.sinks.clickhouse.owner import StoreLock

    owner = StoreLock(pipe.settings.home_path).owner()
    assert owner is not None, "the worker published no owner file"
    return owner.user, owner.password


# Records, in the page, the wall time each new newest window was drawn (live updates).
WATCH_LATEST = """() => {
  window.__seen = [];
  const el = document.getElementById("latest");
  new MutationObserver(() => window.__seen.push({ws: +el.dataset.windowStart, at: Date.now()}))
    .observe(el, {attributes: true, attributeFilter: ["data-window-start"]});
}"""


def window_to_screen(page: Any, windows: int, timeout: float) -> list[dict[str, float]]:
    """Wait for ``windows`` new windows drawn live; each with its delay after its end."""
    page.evaluate(WATCH_LATEST)
    deadline = time.monotonic() + timeout
    seen: list[dict[str, float]] = []
    while time.monotonic() < deadline:
        seen = page.evaluate("window.__seen")
        if len({s["ws"] for s in seen}) >= windows:
            break
        time.sleep(0.2)
    first: dict[float, float] = {}
    for s in seen:
        first.setdefault(s["ws"], s["at"] / 1000)
    return [{"window_start": ws, "after_end_s": at - (ws + WINDOW),
             "after_close_s": at - (ws + WINDOW + LATENESS)} for ws, at in sorted(first.items())]


def consume(pipe: Pipeline, topic: str, expected: int, timeout: float) -> list[Any]:
    """``pipe.consume_all`` in a thread: Playwright's sync API keeps an event loop
    running on this one, so ``asyncio.run`` cannot be called here."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(pipe.consume_all, topic, expected, timeout).result()


def published_at(pipe: Pipeline, series_key: str, starts: set[float]) -> dict[float, float]:
    """Kafka timestamps (s) of the metrics records of ``series_key``'s windows."""
    records = consume(pipe, pipe.settings.topics.metrics, 10**9, timeout=5)
    out = {}
    for r in records:
        data = msgspec.json.decode(r.value)
        if data.get("series_key") == series_key and data.get("window_start") in starts:
            out.setdefault(data["window_start"], r.timestamp / 1000)
    return out


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[Pipeline, Ui, Browser]]:
    if not _browser_available():
        pytest.skip("needs Debian's chromium and playwright (make system-deps install)")
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    pipe = Pipeline(kafka_bootstrap, tmp_path, INFERWATCH_ALERTS__RULES=str(rules), **ENV)
    ui = browser = None
    try:
        worker = pipe.start_worker()
        pipe.wait_processor_ready(worker)
        pipe.wait_sink_ready(worker)
        ui = Ui(pipe)
        browser = Browser(*credentials(pipe))
        yield pipe, ui, browser
    finally:
        if browser is not None:
            browser.close()
        if ui is not None:
            ui.close()
        pipe.close()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_dashboard_pages_values_live_windows_and_silences(
        stack: tuple[Pipeline, Ui, Browser]) -> None:
    pipe, ui, browser = stack
    sender = traffic(pipe, 60, ["latency_spike@6+8:model=gpt-chat:factor=6",
                                "latency_spike@45+10:model=gpt-chat:factor=6"])

    # Overview: rows arrive as windows close; a cell equals SQL for the window it shows.
    overview = browser.page(ui.url + "/?range=15m&sort=series_key&desc=0")
    overview.wait_for_function(
        "document.querySelectorAll('#series tbody tr').length >= 4", timeout=30_000)
    row = overview.locator("#series tbody tr", has_text="gpt-chat").first
    key = row.get_attribute("data-key")
    shown_p99 = row.locator("td").nth(3)
    value, text, window_end = (shown_p99.get_attribute("data-value"), shown_p99.inner_text(),
                               row.get_attribute("data-window-end"))
    sql = pipe.query(
        f"SELECT latency_p99_ms, request_rate_per_s FROM window_metrics FINAL "
        f"WHERE series_key = '{key}' AND window_end = parseDateTime64BestEffort('{window_end}', 3)")
    assert len(sql) == 1, sql
    assert float(value) == sql[0]["latency_p99_ms"]
    p99 = sql[0]["latency_p99_ms"]
    assert text == (f"{p99:.0f}" if abs(p99) >= 100 else f"{p99:.2f}" if abs(p99) >= 1
                    else f"{p99:.4f}")
    screenshot(overview, "overview")

    # Series: the chart's points are the windows SQL returns; new windows arrive live.
    series = browser.page(ui.url + f"/series?key={key}&range=15m")
    timings = window_to_screen(series, windows=4, timeout=30)
    assert len(timings) >= 4, timings
    for t in timings:
        assert t["after_end_s"] <= WINDOW + LATENESS + 2.0, timings
    # the points the p99 line draws (a null is a break where windows are missing)
    chart = [(t, p) for t, p in series.evaluate(
        "(() => { const d = window.iwCharts['c-latency'].data;"
        " return d[0].map((t, i) => [t, d[3][i]]); })()") if p is not None]

    def stored() -> dict[float, float] | None:  # live points may be ahead of the sink
        got = {r["t"]: r["p99"] for r in pipe.query(
            f"SELECT toUnixTimestamp64Milli(window_start) / 1000 AS t, latency_p99_ms AS p99 "
            f"FROM window_metrics FINAL WHERE series_key = '{key}'")}
        return got if all(t in got for t, _ in chart) else None
    in_store = _wait(stored, 15, "the charted windows in the store")
    assert len(chart) >= 4 and {t: p for t, p in chart} == {t: in_store[t] for t, _ in chart}
    published = published_at(pipe, key, {t["window_start"] for t in timings})
    for t in timings:
        if t["window_start"] in published:
            t["after_publish_s"] = (t["window_start"] + WINDOW + t["after_end_s"]
                                    - published[t["window_start"]])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "ui_timings.json").write_text(json.dumps(timings, indent=1))
    screenshot(series, "series")

    # Alerts: the first spike fires; a silence made from the page lands on the topic and
    # marks the next alert of that series (the second spike), not the other series'.
    alerts = browser.page(ui.url + "/alerts?range=1h")
    firing = alerts.locator("#timeline tbody tr[data-state=firing]", has_text="gpt-chat")
    firing.first.wait_for(timeout=45_000)
    silenced_series = firing.first.locator("td").nth(4).inner_text()
    firing.first.locator("button.silence-this").click()
    alerts.fill("#comment", "from the browser test")
    alerts.click("#create")
    silence_id = _wait(lambda: alerts.get_attribute("#silence-form", "data-created"), 10,
                       "the silence to be created")
    alerts.locator(f"#silences tbody tr[data-id='{silence_id}']").wait_for(timeout=10_000)
    from schemas.alert import AlertEvent, Silence
    on_topic = [msgspec.json.decode(r.value, type=Silence)
                for r in consume(pipe, pipe.settings.topics.silences, 1, timeout=20)]
    assert [s.id for s in on_topic] == [silence_id]
    assert {m.name for m in on_topic[0].matchers} >= {"alertname", "model", "model_version"}

    # A series near its threshold may fire, resolve and fire again within one spike: the
    # first firing is not marked, every firing that started after the silence is.
    silence = on_topic[0]

    def around_silence() -> tuple[list[AlertEvent], list[AlertEvent]] | None:
        events = [msgspec.json.decode(r.value, type=AlertEvent) for r in consume(
            pipe, pipe.settings.topics.alerts, 10**9, timeout=2)]
        fired = [e for e in events if e.state == "firing" and not e.repeat
                 and e.series_key == silenced_series]
        before = [e for e in fired if e.starts_at < silence.starts_at]
        after = [e for e in fired if e.starts_at >= silence.starts_at]
        return (before, after) if before and after else None
    before, after = _wait(around_silence, 90, "the silenced series' next alert")
    assert not before[0].silenced, before  # the one the page showed, before the silence
    assert all(e.silenced and e.silenced_by == [silence_id] for e in after), after
    alerts.locator("#timeline tbody tr[data-state=firing] .b-silenced").first.wait_for(
        timeout=20_000)
    screenshot(alerts, "alerts")
    alerts.locator(f"#silences tbody tr[data-id='{silence_id}'] button.expire").click()
    expired = _wait(lambda: [s for s in (msgspec.json.decode(r.value, type=Silence) for r in
                             consume(pipe, pipe.settings.topics.silences, 2, timeout=2))
                             if s.ends_at <= time.time() + 1], 20, "the expiry on the topic")
    assert expired[-1].id == silence_id

    # Query: the SQL box shows what the query path returns; exports are offered.
    query = browser.page(ui.url + "/query")
    query.fill("#sql", f"SELECT count() AS n FROM window_metrics FINAL WHERE series_key = '{key}'"
                       f" AND window_start < toDateTime64({int(timings[0]['window_start'])}, 3)")
    query.click("#run")
    query.wait_for_function("!document.getElementById('csv').disabled")
    expected = pipe.query("SELECT count() AS n FROM window_metrics FINAL WHERE series_key = "
                          f"'{key}' AND window_start < toDateTime64("
                          f"{int(timings[0]['window_start'])}, 3)")[0]["n"]
    assert query.inner_text("#result tbody td") == str(expected)
    with query.expect_download() as download:
        query.click("#csv")
    assert Path(download.value.path()).read_text() == f"n\n{expected}\n"
    screenshot(query, "query")

    sender.join(timeout=120)
    with contextlib.suppress(Exception):
        overview.close()
    assert browser.errors == [], browser.errors
    assert "Traceback" not in ui.log(), ui.log()
