"""The worker's telemetry: the HTTP endpoint (exposition format, liveness, readiness, a
clear error for a taken port), the bounded model-metrics collector, and the counts the
runtime, the stages and the sink feed into ``/metrics``. No broker.

Metrics live on one process-wide registry, so every test reads a counter before and
after what it drives and checks the difference.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from aiohttp import ClientSession
from aiokafka import ConsumerRecord, TopicPartition
from clickhouse_connect.driver.exceptions import DataError, OperationalError
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import MetricsSettings, Settings, TelemetrySettings, TopicSettings
from pipeline.runtime.memory import MemoryRunner, MemoryTopics
from pipeline.runtime.state import MemoryChangelog
from pipeline.scoring.stage import MergeStage
from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS
from pipeline.sinks.clickhouse.writer import ClickHouseSink
from pipeline.telemetry import (
    REGISTRY,
    STORE_FRESH_SECONDS,
    Health,
    ModelSeries,
    StageMeter,
    TelemetryError,
    TelemetryServer,
)
from pipeline.windows.partial_stage import PartialStage
from schemas.event import InferenceEvent
from schemas.metrics import WindowMetrics


def sample(name: str, **labels: str) -> float:
    """The current value of one sample of the registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------- the endpoint
async def _get(url: str) -> tuple[int, str, str]:
    async with ClientSession() as http, http.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


def test_metrics_are_served_in_the_exposition_format_without_created_series() -> None:
    async def scenario() -> tuple[int, str, str]:
        server = TelemetryServer("127.0.0.1", 0, Health())
        await server.start()
        try:
            return await _get(f"{server.url}/metrics")
        finally:
            await server.stop()

    status, content_type, body = asyncio.run(scenario())
    assert status == 200
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["inferwatch_events_consumed"].type == "counter"
    assert families["inferwatch_window_close_delay_seconds"].type == "histogram"
    assert families["inferwatch_consumer_lag"].type == "gauge"
    assert "_created" not in body
    assert all(name.startswith("inferwatch_") for name in families)


def test_port_zero_takes_a_free_port_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.telemetry")

    async def scenario() -> int:
        server = TelemetryServer("127.0.0.1", 0, Health())
        await server.start()
        await server.stop()
        return server.port

    port = asyncio.run(scenario())
    assert port > 0
    assert f"telemetry on http://127.0.0.1:{port}" in caplog.text


class _Runner:
    def __init__(self, name: str) -> None:
        self.name = name
        self.assigned_once = asyncio.Event()


def test_healthz_answers_and_readyz_follows_partition_assignment() -> None:
    async def scenario() -> list[tuple[str, int, str]]:
        health = Health()
        health.expect(["process"])
        server = TelemetryServer("127.0.0.1", 0, health)
        await server.start()
        seen = []
        try:
            async def probe(path: str) -> None:
                status, _, text = await _get(server.url + path)
                seen.append((path, status, text))

            await probe("/readyz")  # the stages have not started
            first, second = _Runner("stage1"), _Runner("stage2")
            health.runners += [first, second]
            first.assigned_once.set()
            await probe("/readyz")  # stage 2 still waits for its partitions
            second.assigned_once.set()
            await probe("/readyz")
            await probe("/healthz")
        finally:
            await server.stop()
        return seen

    (_, s0, t0), (_, s1, t1), (_, s2, _), (_, s3, _) = asyncio.run(scenario())
    assert s0 == 503 and "not started" in t0
    assert s1 == 503 and "stage2: no partitions assigned yet" in t1 and "stage1" not in t1
    assert (s2, s3) == (200, 200)


def test_the_sink_is_ready_only_while_the_store_answers() -> None:
    health = Health()
    health.expect(["sink"])
    assert health.problems() == ["sink not started"]

    answers: list[bool] = [True, False]

    def select_one() -> None:
        if not answers.pop(0):
            raise OperationalError("connection refused")

    health.store_probe = select_one
    assert health.problems() == ["store not reachable"]
    asyncio.run(health.probe_store())  # answers
    assert health.problems() == []
    answered = health.store_ok_at
    assert answered is not None
    asyncio.run(health.probe_store())  # fails: the last answer stands, for a while
    assert health.store_ok_at == answered
    assert health.problems(now=answered + STORE_FRESH_SECONDS - 1) == []
    assert health.problems(now=answered + STORE_FRESH_SECONDS + 1) == ["store not reachable"]


def test_a_taken_port_is_a_clear_error_naming_the_setting() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(TelemetryError) as error:
            asyncio.run(TelemetryServer("127.0.0.1", port, Health()).start())
    finally:
        taken.close()
    message = str(error.value)
    assert f"port {port}" in message and "already in use" in message
    assert "INFERWATCH_TELEMETRY__PORT" in message


def test_the_worker_stops_with_one_line_when_its_port_is_taken(
        caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.runtime.worker import _run_roles

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    settings = Settings(telemetry=TelemetrySettings(port=port))
    try:
        code = asyncio.run(_run_roles(settings, ["process"]))
    finally:
        taken.close()
    assert code == 1
    [line] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "INFERWATCH_TELEMETRY__PORT" in line.getMessage()
    assert line.exc_info is None  # a sentence, not a traceback


# ---------------------------------------------------------------------- model metrics
def window(model: str, start: float, requests: int = 10, version: int = 1,
           **fields: Any) -> WindowMetrics:
    return WindowMetrics(series_key=f"model={model}", labels={"model": model, "op": "chat"},
                         window_start=start, window_end=start + 10, version=version,
                         requests=requests, **fields)


def exposed(models: ModelSeries) -> dict[str, dict[tuple, float]]:
    return {family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
            for family in models.collect()}


def test_model_series_are_bounded_and_the_overflow_is_counted() -> None:
    models = ModelSeries(["model", "op"], max_series=3)
    before = sample("inferwatch_model_series_overflow_total")
    admitted = [models.add(window(f"m{i}", 0.0)) for i in range(5)]
    assert admitted == [True, True, True, False, False]
    assert len(models) == 3
    assert sample("inferwatch_model_series_overflow_total") - before == 2
    requests = exposed(models)["inferwatch_model_requests"]
    assert {dict(k)["model"] for k in requests} == {"m0", "m1", "m2"}
    # a series already exposed keeps its place, windows after windows
    assert models.add(window("m1", 10.0, requests=4))
    assert len(models) == 3


def test_model_series_expose_the_window_figures_with_the_series_labels() -> None:
    models = ModelSeries(["model", "op"], max_series=10)
    models.add(window("a", 0.0, requests=20, errors=3, latency_p50_ms=110.0,
                      latency_p99_ms=900.0, ttft_p50_ms=30.0, input_tokens_sum=500,
                      output_tokens_sum=80, cost_usd_sum=0.25))
    got = exposed(models)
    series = (("model", "a"), ("op", "chat"))
    assert got["inferwatch_model_requests"] == {series: 20}
    assert got["inferwatch_model_errors"] == {series: 3}
    assert got["inferwatch_model_latency_ms"] == {(*series, ("quantile", "0.5")): 110.0,
                                                  (*series, ("quantile", "0.99")): 900.0}
    assert got["inferwatch_model_ttft_ms"] == {(*series, ("quantile", "0.5")): 30.0}
    assert got["inferwatch_model_tokens"] == {(("direction", "input"), *series): 500,
                                              (("direction", "output"), *series): 80}
    assert got["inferwatch_model_cost_usd"] == {series: 0.25}
    assert got["inferwatch_model_window_end_seconds"] == {series: 10.0}


def test_a_late_correction_of_an_older_window_does_not_replace_the_newest() -> None:
    models = ModelSeries(["model", "op"], max_series=10)
    models.add(window("a", 10.0, requests=5))
    models.add(window("a", 0.0, requests=99, version=2))  # a correction of the window before
    assert exposed(models)["inferwatch_model_requests"] == {(("model", "a"), ("op", "chat")): 5}
    models.add(window("a", 10.0, requests=6, version=2))  # a correction of this one
    assert exposed(models)["inferwatch_model_requests"] == {(("model", "a"), ("op", "chat")): 6}


def test_quiet_series_expire_and_free_their_place() -> None:
    models = ModelSeries(["model", "op"], max_series=2, stale_windows=3)
    models.add(window("old", 0.0))
    models.add(window("busy", 0.0))
    for start in (10.0, 20.0, 30.0):
        models.add(window("busy", start))
    assert len(models) == 2  # "old" ended at 10, the newest at 40: 3 windows, not more
    assert not models.add(window("new", 30.0))
    assert models.add(window("new", 40.0))  # the newest end is 50: "old" is gone
    names = {dict(k)["model"] for k in exposed(models)["inferwatch_model_requests"]}
    assert names == {"busy", "new"}


def test_series_label_names_become_valid_prometheus_label_names() -> None:
    models = ModelSeries(["model.version", "quantile", "__x", "9lives"], max_series=1)
    assert models.label_names == ["model_version", "series_quantile", "series_x",
                                  "series_9lives"]


# ---------------------------------------------------------------------- instrumentation
PARTITIONS = 2
WALL = 1_700_000_000.0
SETTINGS = Settings(
    topics=TopicSettings(partitions=PARTITIONS),
    metrics=MetricsSettings(window_seconds=10, lateness_seconds=2, idle_timeout_seconds=5,
                            series_labels=["model"], feature_usage_attributes=[],
                            max_series_per_worker=2),
    telemetry=TelemetrySettings(model_metrics=True, max_model_series=2),
)


def _event(i: int, ts: float, model: str) -> bytes:
    return msgspec.json.encode({"event_id": f"e{i}", "timestamp": ts, "model": model,
                                "latency_ms": 50.0 + i})


class _Recording:
    """A MemoryRunner whose stage is metered the way KafkaRunner meters its own."""

    def __init__(self, runner: MemoryRunner, name: str) -> None:
        self.runner = runner
        self.meter = StageMeter(name, runner.stage)
        stage = runner.stage
        original = stage.on_batch

        def on_batch(topic: str, partition: int, records: Sequence[Any], wall: float) -> Any:
            step = original(topic, partition, records, wall)
            self.meter.batch(topic, len(records), step.dead_letters)
            return step

        stage.on_batch = on_batch  # type: ignore[method-assign]


def test_stage_one_counts_messages_accepted_events_rejections_and_overflow() -> None:
    topics = MemoryTopics(PARTITIONS)
    events = SETTINGS.topics.events
    t0 = WALL - 3600
    models = ["a", "b", "c", "d", "e"]  # 2 series fit; the other 3 fold into overflow
    for i in range(10):
        topics.append(events, _event(i, t0 + i, models[i % 5]), partition=i % PARTITIONS)
    topics.append(events, b"{not json", partition=0)
    topics.append(events, msgspec.json.encode([msgspec.json.decode(_event(20, t0, "a")),
                                               {"event_id": "x", "timestamp": "soon"}]),
                  partition=1)
    runner = MemoryRunner(lambda: PartialStage(SETTINGS), topics, MemoryChangelog(), {},
                          SETTINGS.topics.dlq)
    recording = _Recording(runner, "unit-stage1")
    def counts() -> dict[str, float]:
        return {
            "messages": sample("inferwatch_messages_consumed_total", stage="unit-stage1",
                               topic=events),
            "events": sample("inferwatch_events_consumed_total", stage="unit-stage1"),
            "malformed": sample("inferwatch_events_rejected_total", stage="unit-stage1",
                                reason="malformed"),
            "schema": sample("inferwatch_events_rejected_total", stage="unit-stage1",
                             reason="schema"),
            "overflow": sample("inferwatch_series_overflow_total"),
        }

    before = counts()

    async def go() -> None:
        await runner.assign([(events, p) for p in range(PARTITIONS)])
        await runner.drain(wall=WALL)

    asyncio.run(go())
    after = counts()
    delta = {k: after[k] - before[k] for k in before}
    assert delta == {"messages": 12, "events": 11, "malformed": 1, "schema": 1,
                     "overflow": 6}  # c, d, e twice each
    assert len(topics.records(SETTINGS.topics.dlq)) == 2  # what was counted is on the DLQ
    assert runner.stage.active_series() == 3  # a, b and the overflow series
    recording.meter.watch()
    assert sample("inferwatch_active_series", stage="unit-stage1") == 3
    recording.meter.close()
    assert REGISTRY.get_sample_value("inferwatch_active_series",
                                     {"stage": "unit-stage1"}) is None


def test_stage_two_records_the_close_delay_and_fills_the_bounded_model_series() -> None:
    topics = MemoryTopics(PARTITIONS)
    events, partials = SETTINGS.topics.events, SETTINGS.topics.partials
    t0 = WALL - 3600  # windows [t0, t0+10) ... : every one closes by the idle advance
    for i in range(30):
        topics.append(events, _event(i, t0 + i, "abc"[i % 3]), partition=i % PARTITIONS)
    first = MemoryRunner(lambda: PartialStage(SETTINGS), topics, MemoryChangelog(), {},
                         SETTINGS.topics.dlq)
    second = MemoryRunner(lambda: MergeStage(SETTINGS), topics, MemoryChangelog(), {},
                          SETTINGS.topics.dlq)
    emit_wall = WALL + 10_000
    count_before = sample("inferwatch_window_close_delay_seconds_count")
    sum_before = sample("inferwatch_window_close_delay_seconds_sum")
    overflow_before = sample("inferwatch_model_series_overflow_total")

    held: list[int] = []

    async def go() -> None:
        await first.assign([(t, p) for t in (events, SETTINGS.topics.resources)
                            for p in range(PARTITIONS)])
        await second.assign([(partials, p) for p in range(PARTITIONS)])
        await first.drain(wall=WALL)  # the first windows close, the last stays open
        await second.drain(wall=emit_wall)
        held.append(second.stage.active_series())  # type: ignore[attr-defined]
        await first.tick(WALL + 10_000)  # the idle advance closes the rest
        await second.drain(wall=emit_wall)

    asyncio.run(go())
    assert held == [3]  # a, b and c have windows in stage 2
    emitted = [msgspec.json.decode(r.value, type=WindowMetrics)
               for r in topics.records(SETTINGS.topics.metrics)]
    windows = [w for w in emitted if w.series_key.startswith("model=")]
    assert len(windows) >= 6 and all(w.version == 1 for w in windows)
    delays = sum(emit_wall - w.window_end for w in windows)
    assert sample("inferwatch_window_close_delay_seconds_count") - count_before == len(windows)
    assert sample("inferwatch_window_close_delay_seconds_sum") - sum_before == (
        pytest.approx(delays))
    stage = second.stage
    assert isinstance(stage, MergeStage) and stage.model_series is not None
    assert len(stage.model_series) == 2  # the bound (max_model_series=2) of 3 series
    assert sample("inferwatch_model_series_overflow_total") > overflow_before


def test_model_metrics_are_off_unless_asked() -> None:
    stage = MergeStage(Settings())
    assert stage.model_series is None


def test_the_meter_keeps_lag_for_owned_partitions_only() -> None:
    meter = StageMeter("unit-lag", SimpleNamespace())
    meter.lag({("t", 0): 5, ("t", 1): 0})
    assert sample("inferwatch_consumer_lag", stage="unit-lag", topic="t", partition="0") == 5
    meter.lag({("t", 1): 7})  # partition 0 moved away
    assert REGISTRY.get_sample_value("inferwatch_consumer_lag",
                                     {"stage": "unit-lag", "topic": "t", "partition": "0"}) \
        is None
    assert sample("inferwatch_consumer_lag", stage="unit-lag", topic="t", partition="1") == 7
    meter.delivered(3)
    assert sample("inferwatch_dlq_deliveries_total", stage="unit-lag") == 3
    meter.close()
    assert REGISTRY.get_sample_value("inferwatch_consumer_lag",
                                     {"stage": "unit-lag", "topic": "t", "partition": "1"}) \
        is None


def test_a_metered_model_series_collector_is_registered_while_the_stage_runs() -> None:
    models = ModelSeries(["model", "op"], max_series=5)
    models.add(window("registered", 0.0, requests=3))
    meter = StageMeter("unit-models", SimpleNamespace(model_series=models))
    meter.watch()
    try:
        assert sample("inferwatch_model_requests", model="registered", op="chat") == 3
    finally:
        meter.close()
    assert REGISTRY.get_sample_value("inferwatch_model_requests",
                                     {"model": "registered", "op": "chat"}) is None


class _Store:
    """A ClickHouse client that refuses any insert holding the row with event_id ``bad``
    (as a column that cannot hold a value does); counts inserts that failed and not."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.failed = self.succeeded = 0

    def insert(self, table: str, columns: list[list], column_names: list[str],
               column_oriented: bool) -> None:
        ids = columns[EVENT_COLUMNS.index("event_id")]
        if "bad" in ids:
            self.failed += 1
            raise DataError("Unable to create native array for column `latency_ms`")
        self.succeeded += 1
        self.stored.extend(ids)


def test_the_sink_counts_messages_rows_inserts_and_failures_per_table() -> None:
    settings = Settings()
    store = _Store()
    sink = ClickHouseSink(settings, store)
    tp = TopicPartition(settings.topics.events, 0)
    now = time.time()
    events = [InferenceEvent(event_id=f"ok-{i}", timestamp=now, model="m", latency_ms=5.0)
              for i in range(7)]
    events.insert(3, InferenceEvent(event_id="bad", timestamp=now, model="m",
                                    latency_ms=5.0))
    value = msgspec.msgpack.encode(events)
    record = ConsumerRecord(tp.topic, 0, 0, 0, 0, None, value, None, 0, len(value),
                            [("content-type", b"application/msgpack")])
    before = {
        "messages": sample("inferwatch_messages_consumed_total", stage="sink", topic=tp.topic),
        "rows": sample("inferwatch_sink_rows_total", table="events"),
        "failures": sample("inferwatch_sink_insert_failures_total", table="events"),
        "inserts": sample("inferwatch_sink_insert_seconds_count", table="events"),
    }
    batch = Batch()
    sink.collect({tp: [record]}, batch)
    sink.insert(batch)
    after = {
        "messages": sample("inferwatch_messages_consumed_total", stage="sink", topic=tp.topic),
        "rows": sample("inferwatch_sink_rows_total", table="events"),
        "failures": sample("inferwatch_sink_insert_failures_total", table="events"),
        "inserts": sample("inferwatch_sink_insert_seconds_count", table="events"),
    }
    delta = {k: after[k] - before[k] for k in before}
    assert len(store.stored) == 7 and [r.row.event_id for r in batch.refused] == ["bad"]
    assert delta["messages"] == 1 and delta["rows"] == 7
    # the bisection: every insert holding "bad" failed, every other one was timed
    assert store.failed >= 2 and store.succeeded >= 2
    assert (delta["failures"], delta["inserts"]) == (store.failed, store.succeeded)


def test_the_sink_reports_what_is_left_to_read_after_a_commit() -> None:
    from pipeline.sinks.clickhouse.writer import _observe_lag

    tp = TopicPartition("unit-sink-lag", 2)
    _observe_lag(SimpleNamespace(highwater={tp: 130}.get), {tp: 100})
    assert sample("inferwatch_consumer_lag", stage="sink", topic="unit-sink-lag",
                  partition="2") == 30
