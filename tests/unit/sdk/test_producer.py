"""The producer SDK without a broker: a closed port for "Kafka is down", a fake client
standing in for aiokafka where messages must flow (batching, keys, recovery)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

import pipeline.sdk.sender as sender_module
from pipeline.config import IngestLimits, KafkaSettings, Settings
from pipeline.sdk.producer import Producer, ProducerStats, Span
from pipeline.sources.codec import JSON, MSGPACK, decode_events
from schemas.event import InferenceEvent


def _closed_port() -> int:
    """A local port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DOWN = f"127.0.0.1:{_closed_port()}"


def _settings(bootstrap: str = DOWN, **limits: int) -> Settings:
    return Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap), limits=IngestLimits(**limits))


def _event(i: int = 0, **fields: object) -> InferenceEvent:
    return InferenceEvent(
        event_id=f"e{i}", timestamp=time.time(), model="m", latency_ms=1.0, **fields
    )


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def make() -> Iterator[Callable[..., Producer]]:
    """Producers with fast retries, closed (briefly) after the test."""
    made: list[Producer] = []

    def make(settings: Settings | None = None, **kwargs: object) -> Producer:
        producer = Producer(settings or _settings(), **kwargs)  # type: ignore[arg-type]
        producer._BACKOFF_INITIAL = 0.01
        producer._BACKOFF_MAX = 0.05
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close(timeout=0.1)
        assert producer._thread is None or not producer._thread.is_alive()


# -- a fake aiokafka producer -------------------------------------------------------


@dataclass
class Message:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def events(self) -> list[InferenceEvent]:
        out = decode_events(self.value, self.headers, IngestLimits(), now=time.time())
        assert not out.rejections, out.rejections
        return out.events


class FakeBroker:
    """Hands out fake clients; ``up``, ``fail_sends`` and ``max_value`` steer them."""

    def __init__(self) -> None:
        self.up = True
        self.fail_sends = 0
        self.max_value: int | None = None
        self.messages: list[Message] = []
        self.clients: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, **options: object) -> FakeClient:
        self.clients.append(options)
        return FakeClient(self)

    def events(self) -> list[InferenceEvent]:
        with self.lock:
            return [e for m in self.messages for e in m.events()]


class FakeClient:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.started = False

    async def start(self) -> None:
        if not self.broker.up:
            raise KafkaConnectionError("Unable to bootstrap")
        self.started = True

    async def send_and_wait(self, topic, value, key=None, headers=None):
        broker = self.broker
        if not (broker.up and self.started):
            raise KafkaConnectionError("connection lost")
        if broker.fail_sends:
            broker.fail_sends -= 1
            raise KafkaTimeoutError()
        if broker.max_value is not None and len(value) > broker.max_value:
            raise MessageSizeTooLargeError()
        with broker.lock:
            broker.messages.append(Message(topic, key, value, list(headers)))

    async def stop(self) -> None:
        self.started = False


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(sender_module, "AIOKafkaProducer", fake)
    return fake


# -- Kafka down: never block, never raise, bound and count ----------------------------


def test_full_buffer_drops_the_newest_and_counts_them_exactly(make):
    producer = make(buffer_size=100)
    results = [producer.emit(_event(i)) for i in range(150)]
    assert results == [True] * 100 + [False] * 50
    stats = producer.stats
    assert isinstance(stats, ProducerStats)
    assert (stats.buffered, stats.sent, stats.dropped) == (100, 0, 50)
    assert [e.event_id for e in producer._pending()] == [f"e{i}" for i in range(100)]


def test_emit_does_not_wait_on_the_network(make):
    producer = make()
    event = _event()
    started = time.perf_counter()
    for _ in range(20_000):
        producer.emit(event)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0  # sanity guard; a network wait per emit would take far longer
    assert producer.stats.buffered == 10_000
    assert producer.stats.dropped == 10_000
    assert not producer.stats.connected


def test_bad_input_is_dropped_and_counted_not_raised(make):
    producer = make(_settings(max_message_bytes=300))
    assert producer.emit(None) is False  # type: ignore[arg-type]
    assert producer.emit({"event_id": "x"}) is False  # type: ignore[arg-type]
    assert producer.emit(_event(features={"x": object()})) is False  # type: ignore[dict-item]
    assert producer.emit(_event(attributes={"k": "v" * 400})) is False  # > max_message_bytes
    with producer.track("m") as span:
        span.set(no_such_field=1, output_tokens=2)  # the unknown name is ignored
    assert producer.stats.dropped == 4
    assert producer.stats.buffered == 1
    assert producer._pending()[0].output_tokens == 2


def test_close_returns_promptly_while_kafka_is_down(make):
    producer = make()
    for i in range(10):
        producer.emit(_event(i))
    started = time.monotonic()
    assert producer.close(timeout=0.3) is False
    assert time.monotonic() - started < 3.0
    assert producer._thread is not None and not producer._thread.is_alive()
    assert producer.emit(_event(99)) is False
    assert producer.stats.dropped == 1


def test_one_warning_per_outage_and_no_secrets_in_logs(make, caplog):
    caplog.set_level(logging.WARNING)
    kafka = KafkaSettings(
        bootstrap_servers=DOWN, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN", sasl_username="svc", sasl_password="hunter2-secret",
    )
    producer = make(Settings(kafka=kafka))
    producer.emit(_event())
    assert _wait_until(lambda: producer.stats.send_errors >= 4)
    ours = [r for r in caplog.records if r.name == "pipeline.sdk.producer"]
    theirs = [r for r in caplog.records if r.name.startswith("aiokafka")]
    assert len(ours) == 1 and "unavailable" in ours[0].getMessage()
    assert len(theirs) <= 1  # aiokafka's first "Unable connect", then muted
    assert "hunter2" not in caplog.text


# -- track(): four ways to time an inference ----------------------------------------


def test_track_as_context_manager(make):
    producer = make(service="chat", environment="prod", region="eu", tenant="acme")
    before = time.time()
    with producer.track("gpt-x", request_id="r-1", operation="chat") as span:
        assert Span.current() is span
        time.sleep(0.002)
        span.set(input_tokens=12, output_tokens=3, cost_usd=0.5, features={"len": 42.0})
    assert Span.current() is None
    (event,) = producer._pending()
    assert event.event_id == span.event_id and len(event.event_id) == 32
    assert before <= event.timestamp <= time.time()
    assert event.latency_ms >= 2.0
    assert event.status == "ok" and event.error_type is None
    assert (event.model, event.request_id, event.operation) == ("gpt-x", "r-1", "chat")
    assert (event.service, event.environment, event.region, event.tenant) == (
        "chat", "prod", "eu", "acme",
    )
    assert (event.input_tokens, event.output_tokens, event.cost_usd) == (12, 3, 0.5)
    assert event.features == {"len": 42.0}
    assert event.time_to_first_token_ms is None


def test_track_records_the_error_and_reraises_it(make):
    producer = make()
    boom = ValueError("boom")
    with pytest.raises(ValueError) as caught, producer.track("m"):
        raise boom
    assert caught.value is boom
    (event,) = producer._pending()
    assert (event.status, event.error_type) == ("error", "ValueError")
    assert event.latency_ms > 0


def test_track_as_async_context_manager(make):
    producer = make()

    async def handler() -> None:
        async with producer.track("m", request_id="a-1") as span:
            await asyncio.sleep(0.001)
            span.first_token()
            await asyncio.sleep(0.001)
            span.set(output_tokens=11)
        with pytest.raises(KeyError):
            async with producer.track("m"):
                raise KeyError("k")

    asyncio.run(handler())
    ok, failed = producer._pending()
    assert ok.request_id == "a-1" and ok.status == "ok" and ok.latency_ms > 0
    assert 0 < ok.time_to_first_token_ms <= ok.latency_ms
    expected = (ok.latency_ms - ok.time_to_first_token_ms) / 10
    assert ok.time_per_output_token_ms == pytest.approx(expected)
    assert (failed.status, failed.error_type) == ("error", "KeyError")


def test_track_as_decorator_of_a_function(make):
    producer = make(service="svc")

    @producer.track("clf", operation="classify")
    def classify(text: str) -> str:
        """Docstring kept."""
        Span.current().set(prediction="spam", confidence=0.9)
        if not text:
            raise RuntimeError("empty")
        return text.upper()

    assert classify("hi") == "HI"
    assert classify("yo") == "YO"
    with pytest.raises(RuntimeError):
        classify("")
    assert classify.__name__ == "classify" and classify.__doc__ == "Docstring kept."
    first, second, failed = producer._pending()
    assert first.event_id != second.event_id  # a fresh span per call
    assert (first.prediction, first.confidence, first.service) == ("spam", 0.9, "svc")
    assert first.latency_ms > 0 and first.operation == "classify"
    assert (failed.status, failed.error_type) == ("error", "RuntimeError")


def test_track_as_decorator_of_a_coroutine_function(make):
    producer = make()

    @producer.track("llm")
    async def generate(prompt: str) -> str:
        span = Span.current()
        await asyncio.sleep(0.001)
        span.first_token()
        span.set(input_tokens=len(prompt))
        if prompt == "bad":
            raise TimeoutError
        return "done"

    async def main() -> None:
        assert await generate("hello") == "done"
        with pytest.raises(TimeoutError):
            await generate("bad")

    asyncio.run(main())
    ok, failed = producer._pending()
    assert ok.status == "ok" and ok.input_tokens == 5 and ok.latency_ms > 0
    assert ok.time_to_first_token_ms <= ok.latency_ms
    assert (failed.status, failed.error_type) == ("error", "TimeoutError")


def test_track_as_decorator_of_generators_marks_the_first_token(make):
    producer = make()

    @producer.track("stream")
    def tokens():
        time.sleep(0.002)
        yield "a"
        yield "b"
        yield "c"

    @producer.track("astream")
    async def atokens():
        await asyncio.sleep(0.002)
        yield "a"
        yield "b"

    assert list(tokens()) == ["a", "b", "c"]
    early = tokens()
    next(early)
    early.close()  # the client went away: not an inference error

    async def consume() -> list[str]:
        return [t async for t in atokens()]

    assert asyncio.run(consume()) == ["a", "b"]
    full, stopped, asynchronous = producer._pending()
    for event in (full, stopped, asynchronous):
        assert event.status == "ok"
        assert 2.0 <= event.time_to_first_token_ms <= event.latency_ms
    assert asynchronous.model == "astream"


def test_caller_fields_win_and_unknown_track_fields_are_ignored(make):
    producer = make(service="default")
    with producer.track("m", service="override", bogus=1) as span:
        span.set(latency_ms=123.0, error_type="Upstream503")
    (event,) = producer._pending()
    assert (event.service, event.latency_ms, event.error_type) == ("override", 123.0, "Upstream503")


# -- with a (fake) broker: batching, keys, encodings, recovery -----------------------


def test_batches_are_json_arrays_with_content_type_and_no_key(make, broker):
    producer = make(batch_size=500)
    for i in range(1200):
        assert producer.emit(_event(i))
    assert producer.flush(timeout=5)
    assert [e.event_id for e in broker.events()] == [f"e{i}" for i in range(1200)]
    assert all(m.key is None for m in broker.messages)
    assert all(m.headers == [("content-type", JSON.encode())] for m in broker.messages)
    assert all(m.value.startswith(b"[") for m in broker.messages)
    assert max(len(m.events()) for m in broker.messages) == 500
    assert len(broker.messages) >= 3
    assert broker.messages[0].topic == "inferwatch.events"
    options = broker.clients[0]
    assert (options["acks"], options["compression_type"]) == ("all", "gzip")
    assert options["bootstrap_servers"] == DOWN
    stats = producer.stats
    assert (stats.sent, stats.buffered, stats.dropped, stats.connected) == (1200, 0, 0, True)


def test_msgpack_topic_and_compression_are_configurable(make, broker):
    producer = make(content_type=MSGPACK, compression=None, topic="custom.events")
    for i in range(3):
        producer.emit(_event(i))
    assert producer.close(timeout=5) is True
    assert not producer._thread.is_alive()
    (message,) = broker.messages
    assert message.topic == "custom.events"
    assert message.headers == [("content-type", MSGPACK.encode())]
    assert [e.event_id for e in message.events()] == ["e0", "e1", "e2"]
    assert broker.clients[0]["compression_type"] is None


def test_unbatched_messages_carry_one_event_keyed_by_event_id(make, broker):
    producer = make(batch_size=1)
    for i in range(3):
        producer.emit(_event(i))
    assert producer.flush(timeout=5)
    assert [m.key for m in broker.messages] == [b"e0", b"e1", b"e2"]
    assert all(not m.value.startswith(b"[") for m in broker.messages)
    assert [e.event_id for e in broker.events()] == ["e0", "e1", "e2"]


def test_linger_sends_a_partial_batch_without_flush(make, broker):
    producer = make(batch_size=500, linger=0.02)
    producer.emit(_event(1))
    assert _wait_until(lambda: producer.stats.sent == 1, timeout=2)


def test_recovers_by_itself_when_kafka_comes_back(make, broker):
    broker.up = False
    producer = make(buffer_size=20)
    for i in range(25):
        producer.emit(_event(i))
    assert _wait_until(lambda: producer.stats.send_errors >= 3)
    stats = producer.stats
    assert (stats.buffered, stats.sent, stats.dropped, stats.connected) == (20, 0, 5, False)
    broker.up = True
    assert producer.flush(timeout=5)
    assert [e.event_id for e in broker.events()] == [f"e{i}" for i in range(20)]
    assert producer.stats.connected
    assert len(broker.clients) > 1  # a new client after the failed ones
    producer.emit(_event(100))
    assert producer.flush(timeout=5)
    assert producer.stats.sent == 21


def test_a_failed_send_is_retried_not_lost(make, broker):
    broker.fail_sends = 2
    producer = make()
    for i in range(5):
        producer.emit(_event(i))
    assert producer.flush(timeout=5)
    assert [e.event_id for e in broker.events()] == [f"e{i}" for i in range(5)]
    assert producer.stats.send_errors == 2


def test_messages_stay_within_the_consumers_size_limit(make, broker):
    producer = make(_settings(max_message_bytes=2_000))
    for i in range(60):
        producer.emit(_event(i, attributes={"note": "x" * 50}))
    assert producer.flush(timeout=5)
    assert all(len(m.value) <= 2_000 for m in broker.messages)
    assert len(broker.events()) == 60


def test_a_smaller_broker_limit_shrinks_batches(make, broker):
    broker.max_value = 1_000
    producer = make()
    for i in range(40):
        producer.emit(_event(i))
    assert producer.flush(timeout=5)
    assert [e.event_id for e in broker.events()] == [f"e{i}" for i in range(40)]
    assert all(len(m.value) <= 1_000 for m in broker.messages)


def test_async_context_manager_and_aflush(make, broker):
    async def main() -> Producer:
        async with make() as producer:
            with producer.track("m"):
                pass
            assert await producer.aflush(timeout=5)
        return producer

    producer = asyncio.run(main())
    assert producer.stats.sent == 1
    assert producer.emit(_event()) is False  # closed on exit
