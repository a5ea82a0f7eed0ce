"""Dashboard benchmark (issue 11): Overview load time with 1,000 series, and the time
from a window closing to its value on the open Series page. Real browser: Debian's
``chromium`` driven by Playwright (never a browser download).

1. Overview: an embedded store seeded with ``--series`` series × 90 ten-second windows
   (the last 15 minutes, ``WindowMetrics`` rows written as the sink writes them) plus one
   anomaly-score row per window, owned by a helper process that serves ClickHouse's HTTP
   interface as the sink does; ``inferwatch ui`` reads it through the query path. Timed
   in the page: navigation start to the first page of the table rendered (50 rows,
   sorted by requests/s, total counted in SQL), then a re-sort by p99 and the last page
   (click to rendered). ``--runs`` navigations, fresh page each.
2. Window close → screen: a real worker (window 2 s, lateness 1 s) on a real broker,
   real-time simulated traffic, the Series page of one series open; for each window the
   page draws from the live stream, the wall time it appeared minus the window's close
   (window end + lateness: the earliest the pipeline may publish it), and minus the
   metrics record's Kafka timestamp (the dashboard's own share).

Usage:  python benchmarks/ui.py [--series 1000] [--runs 5] [--parts overview,live]
        [--bootstrap HOST:PORT]
Without --bootstrap part 2 starts the project's KRaft broker on 127.0.0.1:19992.
Progress to stderr, a markdown block to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
UI_PORT = 19089


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def seed(home: Path, series: int, windows: int = 90, window: float = 10.0) -> None:
    """Write ``series`` × ``windows`` closed windows ending now into a fresh store."""
    import random

    from pipeline.config import Settings
    from pipeline.sinks.clickhouse.client import apply_migrations, connect
    from pipeline.sinks.clickhouse.rows import ANOMALY_COLUMNS, METRICS_COLUMNS, struct_columns
    from pipeline.windows.profile import series_key
    from schemas.metrics import WindowMetrics
    from schemas.scores import WindowScores

    settings = Settings(home=str(home))
    client = connect(settings)
    apply_migrations(client, settings)
    rng = random.Random(7)
    end = time.time() // window * window
    for chunk in range(0, series, 100):
        metrics, scores = [], []
        for i in range(chunk, min(series, chunk + 100)):
            labels = {"model": f"model-{i // 10:03d}", "model_version": f"v{i % 10}",
                      "operation": "chat"}
            key = series_key(labels)
            for w in range(windows):
                start = end - (windows - w) * window
                n = rng.randint(20, 400)
                p50 = rng.uniform(100, 900)
                metrics.append(WindowMetrics(
                    series_key=key, labels=labels, window_start=start, window_end=start + window,
                    requests=n, request_rate_per_s=n / window, errors=n // 50,
                    errors_by_type={"timeout": n // 50}, error_rate=(n // 50) / n,
                    latency_p50_ms=p50, latency_p90_ms=p50 * 1.8, latency_p99_ms=p50 * 3,
                    ttft_p50_ms=p50 / 4, ttft_p99_ms=p50, output_tokens_sum=n * 200,
                    output_tokens_per_s=n * 20.0, cost_usd_sum=n * 0.001,
                    slo_latency_ms=1000.0, slo_compliance=0.97))
                scores.append(WindowScores(series_key=key, labels=labels, window_start=start,
                                           window_end=start + window, requests=n,
                                           anomaly_score=rng.random(), anomaly_warm_up=False))
        client.insert("window_metrics", struct_columns(metrics, METRICS_COLUMNS),
                      column_names=METRICS_COLUMNS, column_oriented=True)
        client.insert("anomaly_scores", struct_columns(scores, ANOMALY_COLUMNS),
                      column_names=ANOMALY_COLUMNS, column_oriented=True)
    client.close()


async def own_store(home: Path) -> None:
    """Hold the embedded store and answer ClickHouse HTTP on it, as the sink does."""
    from pipeline.config import Settings
    from pipeline.sinks.clickhouse.client import connect
    from pipeline.sinks.clickhouse.http_interface import serve_http
    from pipeline.sinks.clickhouse.owner import StoreLock

    settings = Settings(home=str(home))
    lock = StoreLock(settings.home_path)
    await lock.acquire(10.0)
    keeper = connect(settings)
    runner, end = await serve_http(settings.clickhouse_dsn.removeprefix("chdb://"),
                                   msgspec_replace_port(settings))
    lock.publish(end.host, end.port, end.user, end.password)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        keeper.close()
        lock.release()


def msgspec_replace_port(settings):  # -> Settings with the query endpoint on any free port
    import msgspec

    return msgspec.structs.replace(settings, query=msgspec.structs.replace(settings.query, port=0))


def start_ui(env: dict[str, str], port: int, log: Path, live: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "pipeline", "ui", "--port", str(port)]
    if not live:
        args.append("--no-live")
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "dashboard on" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"inferwatch ui did not start:\n{log.read_text()}")
        time.sleep(0.2)
    return proc


def overview(series: int, runs: int) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    from pipeline.sinks.clickhouse.owner import StoreLock

    tmp = Path(tempfile.mkdtemp(prefix="iw-ui-bench-"))
    home = tmp / "home"
    say(f"seeding {series} series × 90 windows into {home}")
    t0 = time.perf_counter()
    seed(home, series)
    say(f"  seeded in {time.perf_counter() - t0:.1f} s")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH_")},
           "INFERWATCH_HOME": str(home), "INFERWATCH_KAFKA": "127.0.0.1:1"}
    owner_proc = subprocess.Popen([sys.executable, __file__, "--own-store", str(home)], cwd=ROOT)
    ui = None
    try:
        deadline = time.monotonic() + 60
        while (owner := StoreLock(home).owner()) is None:
            if owner_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the store owner did not start")
            time.sleep(0.2)
        ui = start_ui(env, UI_PORT, tmp / "ui.log", live=False)
        url = f"http://127.0.0.1:{UI_PORT}/"
        loads, sorts, pages = [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            ctx = browser.new_context(http_credentials={"username": owner.user,
                                                        "password": owner.password},
                                      viewport={"width": 1600, "height": 1000})
            for i in range(runs + 1):  # the first navigation warms the caches: not counted
                page = ctx.new_page()
                page.goto(url)
                page.wait_for_function("document.body.dataset.loaded && "
                                       "document.querySelectorAll('#series tbody tr').length == 50")
                ms = page.evaluate("performance.now()")
                total = page.inner_text("#summary")
                assert f"{series} series" in total, total
                for target, sink in (("th[data-sort=p99_ms]", sorts), ("#next", pages)):
                    before = page.evaluate("document.body.dataset.loaded")
                    start = page.evaluate("performance.now()")
                    page.click(target)
                    page.wait_for_function(f"document.body.dataset.loaded != '{before}'")
                    if i:
                        sink.append(page.evaluate("performance.now()") - start)
                if i:
                    loads.append(ms)
                page.close()
            browser.close()
        return {"series": series, "load_ms": loads, "sort_ms": sorts, "page_ms": pages}
    finally:
        for proc in (ui, owner_proc):
            if proc is not None:
                proc.terminate()
                proc.wait(30)


def live(bootstrap: str | None, windows: int = 10) -> dict[str, object]:
    """Window close → value on the open Series page, through a real worker and broker
    (the browser test's machinery: tests/integration/test_ui_browser.py)."""
    from tests.conftest import local_kafka
    from tests.integration import test_ui_browser as t
    from tests.integration.harness import Pipeline

    kafka = None
    if bootstrap is None:
        kafka = local_kafka(ROOT / ".inferwatch" / "test-kafka-19992", 19992)
        kafka.up(timeout=120)
        bootstrap = kafka.bootstrap
    tmp = Path(tempfile.mkdtemp(prefix="iw-ui-live-"))
    pipe = Pipeline(bootstrap, tmp, **t.ENV)
    ui = browser = None
    try:
        worker = pipe.start_worker()
        pipe.wait_processor_ready(worker)
        pipe.wait_sink_ready(worker)
        ui = t.Ui(pipe, UI_PORT + 1)
        browser = t.Browser(*t.credentials(pipe))
        t.traffic(pipe, windows * t.WINDOW + 30, [])
        overview = browser.page(ui.url + "/?sort=series_key&desc=0")
        overview.wait_for_function("document.querySelectorAll('#series tbody tr').length > 0",
                                   timeout=30_000)
        key = overview.locator("#series tbody tr", has_text="gpt-chat").first.get_attribute(
            "data-key")
        page = browser.page(ui.url + f"/series?key={key}&range=15m")
        timings = t.window_to_screen(page, windows, timeout=windows * t.WINDOW + 20)
        published = t.published_at(pipe, key, {x["window_start"] for x in timings})
        return {
            "window_s": t.WINDOW, "lateness_s": t.LATENESS,
            "after_close_ms": [x["after_close_s"] * 1000 for x in timings],
            "after_end_ms": [x["after_end_s"] * 1000 for x in timings],
            "after_publish_ms": [(x["window_start"] + t.WINDOW + x["after_end_s"]
                                 - published[x["window_start"]]) * 1000
                                 for x in timings if x["window_start"] in published],
        }
    finally:
        if browser is not None:
            browser.close()
        if ui is not None:
            ui.close()
        pipe.close()
        if kafka is not None:
            kafka.down()


def stats(values: list[float]) -> str:
    if not values:
        return "–"
    return (f"median {statistics.median(values):.0f}, min {min(values):.0f}, "
            f"max {max(values):.0f} (n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parts", default="overview,live")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--own-store", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.own_store:
        asyncio.run(own_store(Path(args.own_store)))
        return
    parts = set(args.parts.split(","))
    out: dict[str, object] = {}
    if "overview" in parts:
        out["overview"] = ov = overview(args.series, args.runs)
        say(json.dumps(ov))
        print(f"Overview, {ov['series']} series (navigation start → first 50 rows rendered), ms: "
              f"{stats(ov['load_ms'])}\n"
              f"re-sort by p99 (click → rendered), ms: {stats(ov['sort_ms'])}\n"
              f"next page (click → rendered), ms: {stats(ov['page_ms'])}")
    if "live" in parts:
        out["live"] = lv = live(args.bootstrap)
        say(json.dumps(lv))
        print(f"window {lv['window_s']} s, lateness {lv['lateness_s']} s; "
              f"window end → value on the Series page, ms: {stats(lv['after_end_ms'])}\n"
              f"window close (end + lateness) → value on the Series page, ms: "
              f"{stats(lv['after_close_ms'])}\n"
              f"metrics record published → value on screen, ms: {stats(lv['after_publish_ms'])}")


if __name__ == "__main__":
    main()
