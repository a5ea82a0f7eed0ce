"""Real Kafka → OTLP bridge → stage 1 and the sink → ClickHouse: spans made by the real
OpenTelemetry SDK, on OTLP topics of both encodings as the Collector's Kafka exporter
writes them, stored as events with the expected fields; bad records on the DLQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import Pipeline
from tests.unit.sources.test_otlp import CURRENT, encode, sdk_spans

pytestmark = pytest.mark.integration

COLUMNS = ("event_id, trace_id, span_id, service, environment, model, provider, operation, "
           "status, error_type, finish_reason, latency_ms, time_to_first_token_ms, "
           "input_tokens, output_tokens, cache_read_tokens, cache_hit, request_id")


@pytest.fixture
def otlp_pipe(kafka_bootstrap: str, tmp_path: Path):
    """A pipeline with the OTLP source on, one topic per encoding (set in a TOML file:
    ``otlp.topics`` is a table, which the environment cannot express)."""
    uid = uuid.uuid4().hex[:8]
    topics = {f"iwtest.{uid}.otlp_proto": "otlp_proto", f"iwtest.{uid}.otlp_json": "otlp_json"}
    config = tmp_path / "inferwatch.toml"
    config.write_text("[otlp]\nenabled = true\npartitions = 2\ntopics = { "
                      + ", ".join(f'"{t}" = "{e}"' for t, e in topics.items()) + " }\n")
    pipeline = Pipeline(kafka_bootstrap, tmp_path, INFERWATCH_CONFIG=str(config))
    pipeline.otlp_topics = {e: t for t, e in topics.items()}  # type: ignore[attr-defined]
    yield pipeline
    pipeline.close()


def produce(pipe: Pipeline, messages: list[tuple[str, bytes]]) -> None:
    """(topic, value) records without key or headers, as the Collector's exporter sends."""
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=pipe.settings.kafka.bootstrap_servers,
                                    acks="all", max_request_size=8 << 20)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(t, v) for t, v in messages])
        finally:
            await producer.stop()
    asyncio.run(go())


def test_genai_spans_of_both_encodings_are_stored_as_events(otlp_pipe: Pipeline) -> None:
    pipe, topics = otlp_pipe, otlp_pipe.otlp_topics  # type: ignore[attr-defined]
    start = time.time() - 30
    http = {"name": "GET /", "attrs": {"http.request.method": "GET"}}
    proto_spans = sdk_spans({"attrs": CURRENT, "duration": 0.8}, http,
                            {"attrs": {**CURRENT, "gen_ai.response.model": "m" * 200}},
                            start=start)
    older = {"gen_ai.operation.name": "text_completion", "gen_ai.request.model": "llama-3",
             "gen_ai.system": "vllm", "gen_ai.usage.prompt_tokens": 12,
             "gen_ai.usage.completion_tokens": 4}
    json_spans = sdk_spans({"attrs": older, "error": True, "duration": 1.5}, http,
                           resource={"service.name": "batch", "deployment.environment": "dev"},
                           start=start)
    malformed = b"\x0a\xff\xff not a TracesData"
    produce(pipe, [(topics["otlp_proto"], encode(proto_spans, "otlp_proto")),
                   (topics["otlp_json"], encode(json_spans, "otlp_json")),
                   (topics["otlp_proto"], malformed)])

    worker = pipe.start_worker()
    pipe.wait_processor_ready(worker, timeout=90)
    assert pipe.wait_count(2) == 2, pipe.log(worker)
    time.sleep(1.0)  # anything extra would show up now
    rows = pipe.query(f"SELECT {COLUMNS} FROM events FINAL ORDER BY service")
    assert len(rows) == 2, rows

    batch, chat = rows
    context = proto_spans[0].get_span_context()
    assert chat["event_id"] == f"{context.trace_id:032x}{context.span_id:016x}"
    assert (chat["trace_id"], chat["span_id"]) == (f"{context.trace_id:032x}",
                                                   f"{context.span_id:016x}")
    assert (chat["service"], chat["environment"]) == ("chatbot", "prod")
    assert (chat["model"], chat["provider"], chat["operation"]) == (
        "gpt-4o-2024-08-06", "openai", "chat")
    assert (chat["status"], chat["finish_reason"], chat["request_id"]) == (
        "ok", "length", "chatcmpl-1")
    assert chat["latency_ms"] == pytest.approx(800.0)
    assert chat["time_to_first_token_ms"] == pytest.approx(250.0)
    assert (chat["input_tokens"], chat["output_tokens"], chat["cache_read_tokens"]) == (
        120, 30, 100)
    assert chat["cache_hit"] in (True, 1)

    assert (batch["service"], batch["environment"], batch["model"]) == (
        "batch", "dev", "llama-3")
    assert (batch["provider"], batch["operation"]) == ("vllm", "text_completion")
    assert (batch["status"], batch["error_type"]) == ("error", "_OTHER")
    assert (batch["input_tokens"], batch["output_tokens"]) == (12, 4)
    assert batch["latency_ms"] == pytest.approx(1500.0)
    assert batch["trace_id"] == f"{json_spans[0].get_span_context().trace_id:032x}"

    letters = pipe.consume_all(pipe.settings.topics.dlq, expected=2)
    reasons = sorted(dict(r.headers)["inferwatch-error-reason"] for r in letters)
    assert reasons == [b"otlp_malformed", b"schema"], letters  # each once, nothing more
    by_reason = {dict(r.headers)["inferwatch-error-reason"]: r for r in letters}
    bad = by_reason[b"otlp_malformed"]
    assert bad.value == malformed
    assert dict(bad.headers)["inferwatch-source-topic"] == topics["otlp_proto"].encode()
    too_long = by_reason[b"schema"]  # the one bad element of the bridged batch
    assert dict(too_long.headers)["inferwatch-source-topic"] == \
        pipe.settings.topics.events.encode()
    assert b'"model":"' + b"m" * 200 in too_long.value

    log = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
    assert "otlp consuming" in log
