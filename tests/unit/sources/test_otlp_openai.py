"""What users run: the ``openai`` client instrumented by ``opentelemetry-instrumentation-
openai-v2``, talking to a stub OpenAI-compatible server on loopback (no internet); its
spans exported, encoded as the Collector would put them on Kafka, and mapped to events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.config import IngestLimits
from pipeline.sources.codec import decode_events
from pipeline.sources.otlp import ENCODINGS, map_spans
from tests.unit.sources.test_otlp import encode

openai = pytest.importorskip("openai")
openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")

USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30,
         "prompt_tokens_details": {"cached_tokens": 16}}


class _Stub(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: a fixed answer, streamed when asked; model
    ``broken`` gets a 500."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body["model"] == "broken":
            self._send(500, {"error": {"message": "down", "type": "server_error"}})
            return
        model = body["model"] + "-0613"  # the response names the exact version
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            for chunk in _chunks(model):
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            return
        self._send(200, {
            "id": "chatcmpl-stub", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi"}}],
            "usage": USAGE,
        })

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _chunks(model: str) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1,
            "model": model}
    return [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "h"},
                              "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "i"},
                              "finish_reason": "length"}]},
        {**base, "choices": [], "usage": USAGE},
    ]


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)  # loopback, any free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def traced(stub_url: str) -> Iterator[tuple[Any, InMemorySpanExporter]]:
    """An instrumented client against the stub, and the exporter its spans go to."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot",
                                                        "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield openai.OpenAI(base_url=stub_url, api_key="test", max_retries=0), exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def _events(exporter: InMemorySpanExporter, encoding: str) -> list[dict[str, Any]]:
    spans = list(exporter.get_finished_spans())
    assert spans, "the instrumentation recorded no span"
    out = map_spans(encode(spans, encoding), encoding)
    assert out.rejection is None and out.skipped == 0
    valid = decode_events(msgspec.json.encode(out.events), {}, IngestLimits(), time.time())
    assert not valid.rejections, valid.rejections  # events stage 1 accepts as they are
    return out.events


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_instrumented_chat_call_becomes_an_event(traced: Any, encoding: str) -> None:
    client, exporter = traced
    started = time.time()
    client.chat.completions.create(model="gpt-4o-mini",
                                   messages=[{"role": "user", "content": "hello"}])
    [event] = _events(exporter, encoding)
    [span] = exporter.get_finished_spans()
    assert event["event_id"] == f"{span.context.trace_id:032x}{span.context.span_id:016x}"
    assert (event["model"], event["operation"], event["provider"]) == (
        "gpt-4o-mini-0613", "chat", "openai")
    assert (event["input_tokens"], event["output_tokens"]) == (21, 9)
    assert (event["finish_reason"], event["request_id"]) == ("stop", "chatcmpl-stub")
    assert (event["service"], event["environment"]) == ("support-bot", "test")
    assert started <= event["timestamp"] <= time.time()
    assert 0 < event["latency_ms"] < 30_000 and "status" not in event


def test_a_streamed_call_becomes_an_event(traced: Any) -> None:
    client, exporter = traced
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "hi"
    [event] = _events(exporter, "otlp_proto")
    # this instrumentation records no finish reason for a stream: none is made up here
    assert (event["model"], event.get("finish_reason")) == ("gpt-4o-mini-0613", None)
    assert (event["input_tokens"], event["output_tokens"]) == (21, 9)
    assert event["request_id"] == "chatcmpl-stream"


def test_a_failed_call_becomes_an_error_event(traced: Any) -> None:
    client, exporter = traced
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken",
                                       messages=[{"role": "user", "content": "hello"}])
    [event] = _events(exporter, "otlp_json")
    assert (event["status"], event["model"]) == ("error", "broken")
    [span] = exporter.get_finished_spans()  # it writes str(type(exc)): the class name is kept
    assert span.attributes["error.type"] == "<class 'openai.InternalServerError'>"
    assert event["error_type"] == "openai.InternalServerError"
