"""Alerting benchmark: time to alert on real Kafka, and the cost of evaluating many rules.

One run, same machine:

1. Rule-evaluation cost (in-process, pure, no I/O): 1,000 rules (threshold rules with
   varied conditions over ``WindowMetrics`` fields, some with ``for`` / ``keep_firing_for``,
   every tenth an ``error_rate_bound`` rule, half of those ``over`` a lookback) on 1,000
   series, window after window through one :class:`Evaluator`. The first window creates
   the series (and the alert states they need) and is reported on its own; the following
   windows are timed.
   Baselines of the same run: building the variables mapping of every window
   (``window_vars``) and a plain Python loop doing one ``env[name] > threshold``
   comparison per (rule, series). Then the same windows through the stage the worker
   runs (``AlertRuleStage.on_batch`` on the encoded ``WindowMetrics`` records): the
   whole step, and of it the checkpoint (``_emit``: the state changes and the outbox);
   the changes are written to an in-memory changelog (records and bytes counted) and,
   when a broker is at hand (``--parts`` with ``changelog``), to a compacted topic
   with ``KafkaChangelog.write`` (acks=all), as the worker writes them.
2. Time to alert, end to end: one ``inferwatch worker --roles process`` (window 5 s,
   lateness 1 s, idle timeout 3 s) with a threshold rule ``latency_p50_ms > 20000`` that
   only a latency spike crosses; real-time simulated traffic (speed 1) with a
   ``latency_spike`` incident on gpt-chat every 25 s lasting 10 s (each resolves before
   the next). Latency = arrival wall time of the firing event on the alerts topic minus
   the event time of the incident's first event (start + offset). Incidents start on a
   window boundary, so the floor is exactly window + lateness; the rest is split into
   "pipeline" (the alert record's Kafka timestamp minus window end + lateness) and
   "delivery" (arrival minus that timestamp).

Usage:  python benchmarks/alerting.py [--quick] [--bootstrap HOST:PORT]
        [--parts eval,changelog,latency]
Without --bootstrap it starts the project's KRaft broker on 127.0.0.1:19592 (controller
19593) under benchmarks/out/alerting-home and stops it afterwards. Progress goes to
stderr, the markdown block to stdout. Worker log: benchmarks/out/alerting/worker-<tag>.log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.alerting.evaluator import Evaluator  # noqa: E402
from pipeline.alerting.rules import RuleSet, parse_rules  # noqa: E402
from pipeline.alerting.stage import AlertRuleStage  # noqa: E402
from pipeline.alerting.variables import window_vars  # noqa: E402
from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.dev.simulate import Incident, TrafficModel  # noqa: E402
from pipeline.runtime.stage import Record  # noqa: E402
from pipeline.runtime.state import MemoryChangelog  # noqa: E402
from pipeline.windows.profile import series_key as make_series_key  # noqa: E402
from schemas.alert import AlertEvent  # noqa: E402
from schemas.metrics import WindowMetrics  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
PORT = 19592  # the controller listens on PORT + 1

# end-to-end parameters
WINDOW, LATENESS, IDLE = 5.0, 1.0, 3.0
THRESHOLD_MS = 20_000
RULES = f"""
group_by: [alertname, model, model_version]
rules:
  - name: ChatLatencyHigh
    condition: latency_p50_ms > {THRESHOLD_MS}
    severity: critical
    annotations:
      summary: "p50 {{{{ value }}}} ms on {{{{ labels.model }}}} {{{{ labels.model_version }}}}"
"""
FIRST_INCIDENT, SPACING, INCIDENT_SECONDS, FACTOR = 10.0, 25.0, 10.0, 6.0
TAIL = 15.0  # traffic after the last incident ends, so it resolves on event-driven windows

# evaluation parameters
EVAL_WINDOW = 10.0  # seconds between windows of one series in the pure benchmark


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (no interpolation): p99 of fewer than 100 values is the max."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


# =============================================================================== 1. evaluation

# (field, direction): ">" fires on high values, "<" on low ones
_FIELDS = [
    ("latency_p50_ms", ">"), ("latency_p90_ms", ">"), ("latency_p95_ms", ">"),
    ("latency_p99_ms", ">"), ("p99_latency_ms", ">"), ("latency_max_ms", ">"),
    ("ttft_p50_ms", ">"), ("ttft_p99_ms", ">"), ("queue_wait_p99_ms", ">"),
    ("tpot_p99_ms", ">"), ("error_rate", ">"), ("cost_per_request_usd", ">"),
    ("output_tokens_per_s", "<"), ("cache_hit_rate", "<"), ("slo_compliance", "<"),
    ("request_rate_per_s", "<"), ("input_tokens_p99", ">"), ("late_events", ">"),
]


def synthetic_windows(series: int, windows: int, seed: int) -> list[list[dict[str, Any]]]:
    """``windows`` lists of ``series`` WindowMetrics mappings (as the agent's decoded
    struct becomes with ``asdict``): a steady base per series, noise per window, and about
    2 % of (series, window) pairs in an incident (latency x5, error rate 20 %)."""
    rng = np.random.default_rng(seed)
    base_p50 = rng.lognormal(math.log(400), 0.8, series)
    base_rate = rng.lognormal(math.log(20), 1.0, series)
    cache = rng.uniform(0.1, 0.6, series)
    price = rng.lognormal(math.log(0.002), 0.7, series)
    out: list[list[dict[str, Any]]] = []
    for w in range(windows):
        end = 1_800_000_000.0 + (w + 1) * EVAL_WINDOW
        noise = rng.lognormal(0.0, 0.15, series)
        incident = rng.random(series) < 0.02
        lat = np.where(incident, 5.0, 1.0)
        p_err = np.where(incident, 0.2, 0.01)
        requests = rng.poisson(base_rate * EVAL_WINDOW)
        errors = rng.binomial(requests, p_err)
        timeouts = rng.binomial(errors, 0.3)
        p50 = base_p50 * noise * lat
        tail = rng.lognormal(math.log(3.5), 0.3, series)
        rows = []
        for i in range(series):
            labels = {"model": f"model-{i // 4:03d}", "model_version": f"v{i % 4}",
                      "operation": "chat"}
            n = int(requests[i])
            m = WindowMetrics(
                series_key=make_series_key(labels), labels=labels, window_start=end - EVAL_WINDOW,
                window_end=end, requests=n, request_rate_per_s=n / EVAL_WINDOW,
                errors=int(errors[i]), errors_by_type={"timeout": int(timeouts[i])}
                if timeouts[i] else {}, error_rate=errors[i] / n if n else 0.0,
                latency_p50_ms=float(p50[i]), latency_p90_ms=float(p50[i] * 1.8),
                latency_p95_ms=float(p50[i] * 2.2), latency_p99_ms=float(p50[i] * tail[i]),
                latency_max_ms=float(p50[i] * tail[i] * 1.5), ttft_p50_ms=float(p50[i] * 0.3),
                ttft_p99_ms=float(p50[i] * 0.3 * tail[i]),
                queue_wait_p50_ms=float(5 * noise[i] * lat[i]),
                queue_wait_p99_ms=float(40 * noise[i] * lat[i]),
                tpot_p50_ms=float(20 * noise[i] * lat[i]),
                tpot_p99_ms=float(60 * noise[i] * lat[i]),
                input_tokens_sum=n * 900, input_tokens_p50=900.0,
                input_tokens_p99=float(4000 * noise[i]), output_tokens_sum=n * 180,
                output_tokens_p50=180.0, output_tokens_p99=900.0,
                output_tokens_per_s=float(n * 180 / EVAL_WINDOW / lat[i]),
                cache_hit_rate=float(min(1.0, cache[i] * noise[i])), cost_usd_sum=n * price[i],
                cost_per_request_usd=float(price[i] * noise[i]), slo_latency_ms=1000.0,
                slo_compliance=float(max(0.0, 1.0 - 0.02 * noise[i] * lat[i] ** 2)),
                late_events=int(rng.poisson(0.2)),
            ) if n else WindowMetrics(
                series_key=make_series_key(labels), labels=labels,
                window_start=end - EVAL_WINDOW, window_end=end)
            rows.append(msgspec.structs.asdict(m))
        out.append(rows)
    return out


def synthetic_rules(count: int, windows: list[list[dict[str, Any]]], seed: int
                    ) -> tuple[str, list[tuple[str, float, bool]]]:
    """A rule file (JSON, which is YAML) of ``count`` rules, thresholds at high quantiles of
    the data so each rule holds on roughly 0.1-5 % of (series, window) pairs; and the
    plain (name, threshold, greater) comparisons for the baseline loop."""
    rng = np.random.default_rng(seed)
    envs = [window_vars(m) for rows in windows for m in rows]
    values = {f: np.array([e[f] for e in envs if f in e]) for f, _ in _FIELDS}
    rules: list[dict[str, Any]] = []
    plain: list[tuple[str, float, bool]] = []
    for i in range(count):
        rule: dict[str, Any] = {
            "name": f"Rule{i:04d}", "severity": ("critical", "warning", "info")[i % 3],
            "labels": {"team": f"team-{i % 5}"},
            "annotations": {"summary": "{{ labels.model }} {{ labels.model_version }}: "
                                       "{{ value }} (threshold {{ threshold }})"},
        }
        if i % 3 == 0:
            rule["for"] = "30s"
        elif i % 7 == 1:
            rule["for"] = "1m"
        if i % 11 == 0:
            rule["keep_firing_for"] = "20s"
        if i % 10 == 9:
            q = float(np.quantile(values["error_rate"], rng.uniform(0.95, 0.999)))
            rule.update(type="error_rate_bound", threshold=round(min(q, 0.9), 4),
                        z=1.96 if i % 20 == 9 else 2.576, min_requests=20)
            if i % 20 == 19:
                rule["over"] = "1m"
            plain.append(("error_rate", q, True))
        else:
            field, op = _FIELDS[i % len(_FIELDS)]
            q = rng.uniform(0.95, 0.999)
            t = float(np.quantile(values[field], q if op == ">" else 1 - q))
            t = round(t, 6)
            n = int(rng.integers(5, 50))
            form = i % 5
            if form == 0:
                cond = f"{field} {op} {t}"
            elif form == 1:
                cond = f"{field} {op} {t} and requests >= {n}"
            elif form == 2:
                cond = f"{field} {op} {t} or errors_by_type.timeout > {n}"
            elif form == 3:
                cond = f"{field} * 1.0 {op} {t} and error_rate < 0.5"
            else:
                cond = f"max({field}, 0) {op} {t} and not (requests < {n})"
            rule["condition"] = cond
            plain.append((field, t, op == ">"))
        rules.append(rule)
    return json.dumps({"group_by": ["alertname", "model"], "rules": rules}), plain


def eval_bench(rules_n: int, series_n: int, timed_windows: int, seed: int = 7,
               tuned: bool = True) -> dict[str, Any]:
    """Seconds per window and microseconds per (rule x series) for the evaluator and the
    two baselines, plus the state checkpoint and the memory of the alert states. With
    ``tuned``, the GC settings the worker applies at start-up (before the data is built,
    so the synthetic windows are not frozen out of collection)."""
    if tuned:
        from pipeline.runtime.memory_tuning import tune_gc

        tune_gc()
    say(f"evaluation: building {series_n} series x {timed_windows + 1} windows, "
        f"{rules_n} rules …")
    windows = synthetic_windows(series_n, timed_windows + 1, seed)
    text, plain = synthetic_rules(rules_n, windows, seed)
    rules = parse_rules(text, "bench.rules.json")
    assert len(rules.rules) == rules_n, len(rules.rules)
    kinds = {t: sum(1 for r in rules if r.condition.type == t)
             for t in ("threshold", "error_rate_bound")}
    pairs = rules_n * series_n
    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss

    ev = Evaluator(rules)
    say("evaluation: first window (creates the series and the alert states they need) …")
    t0, c0 = time.perf_counter(), time.process_time()
    events = sum(len(ev.evaluate(m, now=m["window_end"])) for m in windows[0])
    first = (time.perf_counter() - t0, time.process_time() - c0)
    gc.collect()
    state_bytes = proc.memory_info().rss - rss0

    walls, cpus = [], []
    for w, rows in enumerate(windows[1:], 1):
        say(f"evaluation: window {w}/{timed_windows} …")
        t0, c0 = time.perf_counter(), time.process_time()
        for m in rows:
            events += len(ev.evaluate(m, now=m["window_end"]))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    firing = len(ev.firing())

    say("evaluation: baselines …")
    var_walls, plain_walls = [], []
    hits = 0
    for rows in windows[1:]:
        t0 = time.perf_counter()
        for m in rows:
            window_vars(m)
        var_walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for m in rows:
            env = window_vars(m)
            get = env.get
            for name, threshold, greater in plain:
                v = get(name)
                if v is not None and (v > threshold if greater else v < threshold):
                    hits += 1
        plain_walls.append(time.perf_counter() - t0)

    del ev  # the stage starts from nothing, like the evaluator did
    gc.collect()
    say("evaluation: the same windows through the stage (decode, evaluate, checkpoint) …")
    stage = stage_bench(rules, windows)

    eval_s, eval_cpu = float(np.median(walls)), float(np.median(cpus))
    vars_s, plain_s = float(np.median(var_walls)), float(np.median(plain_walls))
    return {
        "rules": rules_n, "series": series_n, "timed_windows": timed_windows, "kinds": kinds,
        "for_rules": sum(1 for r in rules if r.for_), "pairs": pairs,
        "first_s": first[0], "first_cpu_s": first[1], "state_mb": state_bytes / 2**20,
        "state_bytes_per_alert": state_bytes / pairs,
        "eval_s": eval_s, "eval_cpu_s": eval_cpu, "eval_max_s": max(walls),
        "eval_us": eval_s / pairs * 1e6, "eval_cpu_us": eval_cpu / pairs * 1e6,
        "vars_s": vars_s, "plain_s": plain_s,
        "plain_us": plain_s / pairs * 1e6, "events": events, "firing_at_end": firing,
        "plain_hit_rate": hits / (pairs * timed_windows),
        **stage,
    }


def stage_bench(rules: RuleSet, windows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Feed each window's records to ``AlertRuleStage.on_batch`` (one batch per window of
    every series, as the worker gets them); time the step and its checkpoint part."""
    settings = Settings()
    topic = settings.topics.metrics
    stage = AlertRuleStage(settings, rules)
    spent = [0.0, 0.0]  # wall, CPU
    emit = stage._emit

    def timed_emit(*args: Any, **kwargs: Any) -> None:  # the stage's own checkpoint code
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            emit(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0
            spent[1] += time.process_time() - c0

    stage._emit = timed_emit  # type: ignore[method-assign]
    stage.on_assign(topic, 0, {})
    changelog = MemoryChangelog()
    encode = msgspec.json.Encoder(enc_hook=float).encode  # numpy numbers in the rows
    offset, steps = 0, []
    for rows in windows:
        records = [Record(topic, 0, offset + i, m["series_key"].encode(), encode(m),
                          ()) for i, m in enumerate(rows)]
        offset += len(records)
        gc.collect()
        spent[:] = [0.0, 0.0]
        t0, c0 = time.perf_counter(), time.process_time()
        step = stage.on_batch(topic, 0, records, rows[0]["window_end"])
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        changes = step.changes.get(0, {})
        size = sum(len(k) + len(v or b"") for k, v in changes.items())
        asyncio.run(changelog.write(0, changes))
        for done in step.done:  # Kafka acknowledged the outputs
            done()
        steps.append({"total_s": total, "total_cpu_s": total_cpu, "emit_s": spent[0],
                      "emit_cpu_s": spent[1], "records": len(changes),
                      "bytes": size, "events": len(step.outputs), "changes": changes,
                      "series": sum(k.startswith("series|") for k in changes),
                      "alerts": sum(k.startswith("alert|") for k in changes),
                      "clocks": sum(k.startswith("clock|") for k in changes),
                      "histories": sum(k.startswith("history|") for k in changes),
                      "outbox": sum(k.startswith("out|") for k in changes)})
    timed = steps[1:]

    def median(name: str) -> float:
        return float(np.median([s[name] for s in timed]))

    return {"stage_first_s": steps[0]["total_s"], "stage_first_records": steps[0]["records"],
            "stage_s": median("total_s"), "emit_s": median("emit_s"),
            "stage_cpu_s": median("total_cpu_s"), "emit_cpu_s": median("emit_cpu_s"),
            "emit_max_s": max(s["emit_s"] for s in timed),
            "records": median("records"), "alert_records": median("alerts"),
            "clock_records": median("clocks"), "series_records": median("series"),
            "history_records": median("histories"), "outbox_records": median("outbox"),
            "changelog_mb": median("bytes") / 2**20, "stage_events": median("events"),
            "change_sets": [s["changes"] for s in steps]}


def changelog_bench(bootstrap: str, change_sets: list[dict[str, bytes | None]]
                    ) -> dict[str, Any]:
    """Write each window's change set to a fresh compacted topic with the worker's
    ``KafkaChangelog`` (acks=all, the runner's producer settings); seconds per window."""
    from aiokafka import AIOKafkaProducer

    from pipeline.config import KafkaSettings
    from pipeline.runtime.kafka import client_options, ensure_changelog
    from pipeline.runtime.state import KafkaChangelog

    settings = Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap))
    topic = f"bench-alert-{uuid.uuid4().hex[:8]}-state"

    async def go() -> list[float]:
        await ensure_changelog(settings, topic)
        producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all",
                                    linger_ms=5, max_request_size=8 << 20,
                                    max_batch_size=1 << 20)  # as KafkaRunner's
        await producer.start()
        try:
            changelog = KafkaChangelog(settings.kafka, topic, producer)
            out = []
            for changes in change_sets:
                t0 = time.perf_counter()
                await changelog.write(0, changes)
                out.append(time.perf_counter() - t0)
            return out
        finally:
            await producer.stop()

    say(f"changelog: writing {len(change_sets)} windows' changes to {topic} …")
    walls = asyncio.run(go())
    return {"write_first_s": walls[0], "write_s": float(np.median(walls[1:])),
            "write_max_s": max(walls[1:])}


# =============================================================================== 2. time to alert


class Collector:
    """Reads the alerts topic from the start in a thread: (arrival wall, Kafka ts, event)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: list[tuple[float, float, AlertEvent]] = []
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        decode = msgspec.json.Decoder(AlertEvent).decode
        consumer = AIOKafkaConsumer(
            self.settings.topics.alerts, bootstrap_servers=self.settings.kafka.bootstrap_servers,
            group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        self.ready.set()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for messages in batch.values():
                    for m in messages:
                        self.events.append((now, m.timestamp / 1000, decode(m.value)))
        finally:
            await consumer.stop()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def broker() -> Any:
    from pipeline.dev.kafka import LocalKafka

    local = LocalKafka.private(OUT / "alerting-home", PORT, say=say)
    local.up()
    return local


def wait_log(proc: subprocess.Popen, log: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}:\n"
                               f"{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready after {timeout:.0f}s:\n"
                       f"{log.read_text(errors='replace')[-4000:]}")


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def paced(records: Iterable[tuple[float, Any]], start: float) -> Iterator[tuple[float, Any]]:
    """Shift offsets so ``publish`` sends each record at wall time ``start + offset``.

    ``publish`` starts its pacing clock just before it asks for the first record, i.e.
    when this generator's body first runs: the shift is the time from then to ``start``.
    """
    delta = start - time.time()
    if delta < 0:
        raise RuntimeError(f"traffic prepared {-delta:.1f}s too late; raise the margin")
    for offset, record in records:
        yield offset + delta, record


def incidents_for(count: int, start: float) -> list[Incident]:
    """``count`` gpt-chat latency spikes starting on window boundaries (start is aligned)."""
    assert start % WINDOW == 0
    return [Incident("latency_spike", FIRST_INCIDENT + k * SPACING, INCIDENT_SECONDS,
                     "gpt-chat", FACTOR) for k in range(count)]


def latency_bench(bootstrap: str, incidents_n: int, rate: float, batch: int) -> dict[str, Any]:
    from pipeline.dev.publish import publish
    from pipeline.runtime.kafka import ensure_topics

    tag = uuid.uuid4().hex[:8]
    run_dir = OUT / "alerting"
    run_dir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=f"home-{tag}-", dir=run_dir))
    rules_path = home / "rules.yml"
    rules_path.write_text(RULES)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH_")},
        "INFERWATCH_KAFKA": bootstrap,
        "INFERWATCH_HOME": str(home),
        "INFERWATCH_WORKER__APP_ID": f"bench-alert-{tag}",
        **{f"INFERWATCH_TOPICS__{t.upper()}": f"bench.alert.{tag}.{t}" for t in
           ("events", "dlq", "resources", "partials", "metrics", "scores", "alerts",
            "silences")},
        "INFERWATCH_ALERTS__RULES": str(rules_path),
        "INFERWATCH_METRICS__WINDOW_SECONDS": str(WINDOW),
        "INFERWATCH_METRICS__LATENESS_SECONDS": str(LATENESS),
        "INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS": str(IDLE),
    }
    settings = load_settings(environ=env)
    asyncio.run(ensure_topics(settings))
    log = run_dir / f"worker-{tag}.log"
    proc: subprocess.Popen | None = None
    collector: Collector | None = None
    duration = FIRST_INCIDENT + (incidents_n - 1) * SPACING + INCIDENT_SECONDS + TAIL
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "worker", "--roles", "process"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        say(f"time to alert: worker pid {proc.pid} starting (log {log}) …")
        wait_log(proc, log, "processing ready", 180)
        collector = Collector(settings)
        collector.ready.wait(30)
        if collector.error is not None:
            raise RuntimeError(f"alerts consumer failed: {collector.error!r}")

        # Event time == wall time: the traffic starts on a window boundary a few seconds
        # from now (time to generate it), and publish sends each event at its timestamp.
        start = math.ceil((time.time() + 3.0) / WINDOW) * WINDOW
        incidents = incidents_for(incidents_n, start)
        traffic = TrafficModel(incidents=incidents, seed=5, id_prefix=f"al-{tag}")
        records = list(traffic.stream(rate, duration, start, resources=False))
        say(f"time to alert: {len(records):,} events over {duration:.0f}s in real time, "
            f"{incidents_n} incidents (first at +{FIRST_INCIDENT:.0f}s, every "
            f"{SPACING:.0f}s, {INCIDENT_SECONDS:.0f}s each) …")

        def progress(stats: Any) -> None:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}; see {log}")
            say(f"  +{stats.seconds:.0f}s: {stats.events:,} events sent, "
                f"{len(collector.events) if collector else 0} alert events")

        stats = asyncio.run(publish(settings, paced(records, start), speed=1.0,
                                    batch_size=batch, progress=progress, progress_every=30.0))
        sent_end = time.time()
        # the last resolve: window end + lateness + a little; the idle timeout past that
        deadline = time.time() + WINDOW + LATENESS + IDLE + 10.0
        while time.time() < deadline:
            resolved = {e.series_key for _, _, e in collector.events if e.state == "resolved"
                        and e.window_end > start + incidents[-1].end - WINDOW}
            if len(resolved) >= 2:
                break
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}; see {log}")
    finally:
        if collector is not None:
            collector.close()
        if proc is not None:
            stop(proc)
        shutil.rmtree(home, ignore_errors=True)
    result = match(collector.events if collector else [], start, incidents)
    result.update(events=stats.events, rate=rate, batch=batch, duration=duration,
                  publish_overrun=sent_end - (start + duration), log=str(log))
    return result


def match(received: list[tuple[float, float, AlertEvent]], start: float,
          incidents: list[Incident]) -> dict[str, Any]:
    """Assign each non-repeat firing / resolved event to the incident it belongs to."""
    firing: dict[tuple[int, str], tuple[float, float, AlertEvent]] = {}
    resolved: dict[tuple[int, str], tuple[float, float, AlertEvent]] = {}
    false_firing, duplicates = 0, 0
    for arrived, stamp, e in sorted(received, key=lambda r: r[0]):
        if e.repeat:
            continue
        # the incident whose span (plus one window for the resolve) holds the window
        k = next((k for k, inc in enumerate(incidents)
                  if start + inc.offset < e.window_end <= start + inc.end + 2 * WINDOW), None)
        if k is None or "model=gpt-chat" not in e.series_key:
            false_firing += e.state == "firing"
            continue
        box = firing if e.state == "firing" else resolved
        if (k, e.series_key) in box:
            duplicates += 1
            continue
        box[(k, e.series_key)] = (arrived, stamp, e)
    series = sorted({s for _, s in firing} | {s for _, s in resolved})
    latencies, pipeline_s, delivery, alignment, first_per_incident = [], [], [], [], []
    for (k, _s), (arrived, stamp, e) in sorted(firing.items()):
        t0 = start + incidents[k].offset
        latencies.append(arrived - t0)
        alignment.append(e.window_end - t0)
        pipeline_s.append(stamp - (e.window_end + LATENESS))
        delivery.append(arrived - stamp)
    for k in range(len(incidents)):
        mine = [a for (j, _), (a, _, _) in firing.items() if j == k]
        if mine:
            first_per_incident.append(min(mine) - (start + incidents[k].offset))
    resolve = [arrived - (start + incidents[k].end) for (k, _), (arrived, _, _)
               in resolved.items()]
    expected = len(incidents) * max(len(series), 2)
    return {
        "incidents": len(incidents), "series": series, "firing": len(firing),
        "missed": expected - len(firing), "false_firing": false_firing,
        "duplicates": duplicates, "resolved": len(resolved),
        "latency": latencies, "first": first_per_incident, "alignment": alignment,
        "pipeline": pipeline_s, "delivery": delivery, "resolve": resolve,
    }


# =============================================================================== report


def report(args: argparse.Namespace, command: str, started: float, load: tuple[float, ...],
           ev: dict[str, Any] | None, lat: dict[str, Any] | None, failure: str | None) -> None:
    mem = psutil.virtual_memory().total / 2**30
    print()
    print(f"### Alerting{' (--quick)' if args.quick else ''}")
    print()
    print(f"- Date: {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}. Machine: "
          f"`{platform.node()}`, {os.cpu_count()} cores, {mem:.0f} GiB, Python "
          f"{platform.python_version()}, load average at start {load[0]:.2f}, "
          f"run took {time.time() - started:.0f} s.")
    print(f"- Command: `{command}`")
    if failure:
        print(f"- **Run failed:** {failure}")
    if ev:
        print(f"- Evaluation: {ev['rules']:,} rules ({ev['kinds']['threshold']} threshold, "
              f"{ev['kinds']['error_rate_bound']} error_rate_bound; {ev['for_rules']} with "
              f"`for`) x {ev['series']:,} series = {ev['pairs']:,} evaluations per window; "
              f"one Evaluator, in-process; median of {ev['timed_windows']} timed windows "
              f"after a first window that creates the alert states.")
        print()
        print("| rule evaluation, per window of every series | s / window | "
              "µs / (rule x series) | vs plain loop |")
        print("|---|---|---|---|")
        print(f"| `Evaluator.evaluate` (steady state; CPU {fmt(ev['eval_cpu_s'])} s = "
              f"{fmt(ev['eval_cpu_us'])} µs / pair, max {fmt(ev['eval_max_s'])} s) | "
              f"{fmt(ev['eval_s'])} | {fmt(ev['eval_us'])} "
              f"| {ev['eval_us'] / ev['plain_us']:.0f}x |")
        print(f"| first window (creates the series and the alert states they need, "
              f"+{ev['state_mb']:,.0f} MB RSS) "
              f"| {fmt(ev['first_s'])} | {fmt(ev['first_s'] / ev['pairs'] * 1e6)} | |")
        print(f"| baseline: variables mapping only (`window_vars`, {ev['series']:,} per "
              f"window) | {fmt(ev['vars_s'], 3)} | | |")
        print(f"| baseline: plain loop (`window_vars` + one comparison per rule) | "
              f"{fmt(ev['plain_s'])} | {fmt(ev['plain_us'], 3)} | 1x |")
        print()
        print(f"The same windows through `AlertRuleStage.on_batch` (one batch per window of "
              f"all {ev['series']:,} series, JSON records decoded), median of the timed "
              f"windows:")
        print()
        print("| stage step per window | s / window | vs `Evaluator.evaluate` | CPU s | "
              "CPU vs `Evaluator.evaluate` |")
        print("|---|---|---|---|---|")
        print(f"| whole step (decode, evaluate, checkpoint) | {fmt(ev['stage_s'])} | "
              f"{ev['stage_s'] / ev['eval_s']:.2f}x | {fmt(ev['stage_cpu_s'])} | "
              f"{ev['stage_cpu_s'] / ev['eval_cpu_s']:.2f}x |")
        print(f"| of which the checkpoint (`_emit`: state changes, clock, outbox; max "
              f"{fmt(ev['emit_max_s'], 3)} s) | {fmt(ev['emit_s'], 3)} | "
              f"{ev['emit_s'] / ev['eval_s']:.1%} | {fmt(ev['emit_cpu_s'], 3)} | "
              f"{ev['emit_cpu_s'] / ev['eval_cpu_s']:.1%} |")
        if ev.get("write_s") is not None:
            print(f"| writing those changes to Kafka (`KafkaChangelog.write`, acks=all, "
                  f"loopback broker; max {fmt(ev['write_max_s'], 3)} s) | "
                  f"{fmt(ev['write_s'], 3)} | {ev['write_s'] / ev['eval_s']:.1%} | | |")
        print()
        print(f"Changelog per timed window: {ev['records']:,.0f} records "
              f"({ev['alert_records']:,.0f} `alert|`, {ev['history_records']:,.0f} "
              f"`history|`, {ev['clock_records']:,.0f} `clock|`, {ev['series_records']:,.0f} "
              f"`series|`, {ev['outbox_records']:,.0f} outbox puts and deletes for "
              f"{ev['stage_events']:,.0f} events, the offset), "
              f"{ev['changelog_mb']:,.2f} MB; the first window wrote "
              f"{ev['stage_first_records']:,} records in {fmt(ev['stage_first_s'])} s.")
        print()
        print(f"Alert events produced: {ev['events']:,} over {ev['timed_windows'] + 1} "
              f"windows; {ev['firing_at_end']:,} alerts firing at the end; the plain "
              f"comparisons held on {ev['plain_hit_rate']:.1%} of (rule, series) pairs.")
    if lat:
        print()
        print(f"- Time to alert: one `inferwatch worker --roles process`, window "
              f"{WINDOW:g} s, lateness {LATENESS:g} s, idle timeout {IDLE:g} s; rule "
              f"`latency_p50_ms > {THRESHOLD_MS}`; {lat['events']:,} simulated events at "
              f"{lat['rate']:g}/s in real time ({lat['batch']} event(s) per message) over "
              f"{lat['duration']:.0f} s; {lat['incidents']} `latency_spike` incidents on "
              f"gpt-chat (x{FACTOR:g}, {INCIDENT_SECONDS:g} s each, every {SPACING:g} s, "
              f"starting on window boundaries); affected series: "
              f"{', '.join(lat['series']) or 'none'}.")
        print()
        print("| time to alert (s) | n | p50 | p99 | min | max |")
        print("|---|---|---|---|---|---|")
        rows = [
            ("incident start → firing event arrives, per (incident, series)", lat["latency"]),
            ("incident start → first firing event of the incident", lat["first"]),
            ("  of which: incident start → end of the first window over the threshold",
             lat["alignment"]),
            ("  of which: allowed lateness (window end → window end + lateness)",
             [LATENESS] * len(lat["latency"])),
            ("  of which: window end + lateness → alert record written (Kafka timestamp)",
             lat["pipeline"]),
            ("  of which: alert record → read by a consumer", lat["delivery"]),
            ("incident end → resolved event arrives", lat["resolve"]),
        ]
        for label, values in rows:
            print(f"| {label} | {len(values)} | {fmt(quantile(values, 0.5))} | "
                  f"{fmt(quantile(values, 0.99))} | {fmt(min(values, default=math.nan))} | "
                  f"{fmt(max(values, default=math.nan))} |")
        print(f"| floor: window + lateness (earliest a window-based alert can fire) | | "
              f"{WINDOW + LATENESS:g} | | | |")
        print()
        print(f"Firing events matched: {lat['firing']} of {lat['incidents']} incidents x "
              f"{max(len(lat['series']), 2)} series (missed {lat['missed']}); false firings "
              f"{lat['false_firing']}; duplicate transitions {lat['duplicates']}; resolved "
              f"{lat['resolved']}. Publisher finished {lat['publish_overrun']:+.2f} s after "
              f"the last event's time. Worker log: `{lat['log']}`.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 incidents, 200 series x 2 timed windows")
    parser.add_argument("--bootstrap", default=None, help="use this broker, start none")
    parser.add_argument("--incidents", type=int, default=None, help="default 10 (quick 2)")
    parser.add_argument("--rate", type=float, default=200.0, help="simulated events/s")
    parser.add_argument("--batch", type=int, default=1, help="events per Kafka message")
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--series", type=int, default=None, help="default 1000 (quick 200)")
    parser.add_argument("--windows", type=int, default=None,
                        help="timed evaluation windows (default 3, quick 2)")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's default GC thresholds (the worker raises them)")
    parser.add_argument("--parts", default="eval,changelog,latency",
                        help="subset of eval,changelog,latency (changelog needs eval)")
    args = parser.parse_args()
    incidents_n = args.incidents or (2 if args.quick else 10)
    series_n = args.series or (200 if args.quick else 1000)
    windows_n = args.windows or (2 if args.quick else 3)
    parts = {p.strip() for p in args.parts.split(",")}
    command = " ".join(["python benchmarks/alerting.py", *sys.argv[1:]])
    started, load = time.time(), os.getloadavg()
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the worker and broker are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ev = lat = None
    failure = None
    local = None
    try:
        if "eval" in parts:
            ev = eval_bench(args.rules, series_n, windows_n, tuned=not args.default_gc)
            gc.collect()
        bootstrap = args.bootstrap
        if bootstrap is None and ("latency" in parts or ("changelog" in parts and ev)):
            local = broker()
            bootstrap = local.bootstrap
        if ev and "changelog" in parts:
            ev.update(changelog_bench(bootstrap, ev["change_sets"]))
        if ev:
            del ev["change_sets"]
        if "latency" in parts:
            lat = latency_bench(bootstrap, incidents_n, args.rate, args.batch)
    except (Exception, KeyboardInterrupt) as exc:
        failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        say(f"FAILED: {exc}")
    finally:
        if local is not None:
            with contextlib.suppress(Exception):
                say("stopping the broker …")
                local.down()
                shutil.rmtree(local.data, ignore_errors=True)  # a fresh broker next run
    report(args, command, started, load, ev, lat, failure)
    if failure:
        sys.exit(1)


if __name__ == "__main__":
    main()
