"""``Producer.feedback()`` without a broker: the same fake aiokafka client as the event
path (tests/unit/sdk/test_producer.py), the bytes checked with the worker's own decoder."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

import pipeline.sdk.sender as sender_module
from pipeline.config import IngestLimits, Settings, TopicSettings
from pipeline.sdk.producer import Producer
from pipeline.sources.codec import JSON, MSGPACK, decode_events
from schemas.feedback import FeedbackEvent
from tests.unit.sdk.test_producer import DOWN, FakeBroker, Message, _event, _settings


@pytest.fixture
def make() -> Iterator[Callable[..., Producer]]:
    """Producers with fast retries, closed (briefly) after the test."""
    made: list[Producer] = []

    def make(settings: Settings | None = None, **kwargs: object) -> Producer:
        producer = Producer(settings or _settings(), **kwargs)  # type: ignore[arg-type]
        producer._BACKOFF_INITIAL, producer._BACKOFF_MAX = 0.01, 0.05
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close(timeout=0.1)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(sender_module, "AIOKafkaProducer", fake)
    return fake


def feedback_of(message: Message) -> list[FeedbackEvent]:
    out = decode_events(message.value, message.headers, IngestLimits(), time.time(),
                        FeedbackEvent)
    assert not out.rejections, out.rejections
    return out.events


# -- what is sent ------------------------------------------------------------------------


def test_each_kind_goes_to_the_feedback_topic_as_the_contract(make, broker):
    producer = make()
    before = time.time()
    assert producer.feedback("e1", label="spam", source="human_review")
    assert producer.feedback(request_id="r1", label=3)
    assert producer.feedback(request_id="r2", satisfaction=0.0, source="thumbs",
                             attributes={"ui": "v2"})
    given = float(int(time.time()) - 3600)
    assert producer.feedback("e2", "r2", value=49.9, source="checkout",
                             timestamp=given, feedback_id="order-7")
    assert producer.flush(timeout=5)
    (message,) = broker.messages  # one batch, like events
    assert message.topic == "inferwatch.feedback"
    assert message.key is None
    assert message.headers == [("content-type", JSON.encode())]
    a, b, c, d = feedback_of(message)
    assert (a.kind, a.label, a.event_id, a.request_id, a.source) == (
        "label", "spam", "e1", None, "human_review")
    assert (b.kind, b.label, b.request_id) == ("label", 3.0, "r1")
    assert (c.kind, c.satisfaction, c.attributes) == ("satisfaction", 0.0, {"ui": "v2"})
    assert (d.kind, d.value, d.event_id, d.request_id) == ("business", 49.9, "e2", "r2")
    assert (d.timestamp, d.feedback_id) == (given, "order-7")
    assert before <= a.timestamp <= time.time()  # defaults to now
    ids = {f.feedback_id for f in (a, b, c)}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)  # generated, unique
    assert producer.stats.sent == 4


def test_events_and_feedback_share_the_buffer_but_never_a_message(make, broker):
    producer = make()
    producer.emit(_event(0))
    producer.feedback("e0", satisfaction=1.0)
    producer.emit(_event(1))
    producer.emit(_event(2))
    producer.feedback("e2", label="ok")
    assert [type(r).__name__ for r in producer._pending()] == [
        "InferenceEvent", "FeedbackEvent", "InferenceEvent", "InferenceEvent", "FeedbackEvent"]
    assert producer.flush(timeout=5)
    assert [m.topic for m in broker.messages] == [
        "inferwatch.events", "inferwatch.feedback", "inferwatch.events", "inferwatch.feedback"]
    assert [len(m.events()) for m in broker.messages[::2]] == [1, 2]
    assert [f.event_id for m in broker.messages[1::2] for f in feedback_of(m)] == ["e0", "e2"]


def test_unbatched_feedback_is_keyed_by_the_inference_it_refers_to(make, broker):
    producer = make(batch_size=1, content_type=MSGPACK)
    producer.feedback("e1", request_id="r1", satisfaction=1.0)
    producer.feedback(request_id="r2", satisfaction=0.5)
    assert producer.flush(timeout=5)
    assert [m.key for m in broker.messages] == [b"e1", b"r2"]
    assert all(m.headers == [("content-type", MSGPACK.encode())] for m in broker.messages)
    assert [f.satisfaction for m in broker.messages for f in feedback_of(m)] == [1.0, 0.5]


def test_the_feedback_topic_comes_from_the_settings(make, broker):
    settings = _settings()
    settings = Settings(kafka=settings.kafka, topics=TopicSettings(feedback="acme.feedback"))
    producer = make(settings, topic="acme.events")
    producer.feedback("e1", label="x")
    assert producer.close(timeout=5)
    assert [m.topic for m in broker.messages] == ["acme.feedback"]


# -- never blocks, never raises (except on a call that cannot be right) -------------------


@pytest.mark.parametrize("values", [
    {}, {"label": "a", "satisfaction": 1.0}, {"satisfaction": 1.0, "value": 2.0},
    {"label": None, "satisfaction": None, "value": None},
])
def test_not_exactly_one_value_is_a_programming_error(make, values):
    producer = make()
    with pytest.raises(ValueError, match="exactly one of label, satisfaction or value"):
        producer.feedback("e1", **values)
    assert producer.stats.buffered == producer.stats.dropped == 0


def test_what_the_consumers_would_dead_letter_is_dropped_and_counted(make, caplog):
    producer = make(_settings(max_message_bytes=400))
    assert producer.feedback(label="spam") is False  # neither id (a missing header, say)
    assert producer.feedback(request_id=None, satisfaction=1.0) is False
    assert producer.feedback("e1", satisfaction=1.5) is False  # out of bounds
    assert producer.feedback("e1", value=float("nan")) is False
    assert producer.feedback("", label="x") is False  # an empty id
    assert producer.feedback("e1", label="x" * 300) is False
    assert producer.feedback("e1", label=True) is False  # type: ignore[arg-type]
    assert producer.feedback("e1", label="x", attributes={"k": 1}) is False  # type: ignore
    assert producer.feedback("e1", label="x", timestamp=-5.0) is False
    assert producer.feedback("e1", label="x", attributes={  # > max_message_bytes
        f"k{i}": "v" * 100 for i in range(5)}) is False
    assert producer.feedback("e1", label="ok") is True
    assert (producer.stats.dropped, producer.stats.buffered) == (10, 1)
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.sdk.producer"]
    assert any("invalid feedback" in w and "event_id or the request_id" in w for w in warnings)


def test_full_buffer_and_closed_producer_drop_feedback_like_events(make):
    producer = make(buffer_size=2)
    assert producer.emit(_event(0)) is True
    assert producer.feedback("e0", satisfaction=1.0) is True
    assert producer.feedback("e0", satisfaction=0.0) is False  # full
    assert producer.stats.dropped == 1
    assert producer.close(timeout=0.2) is False  # Kafka is down (DOWN): nothing delivered
    assert producer.feedback("e0", satisfaction=0.0) is False  # closed
    assert producer.stats.dropped == 2


def test_feedback_does_not_wait_on_the_network(make):
    producer = make(_settings(bootstrap=DOWN))
    started = time.perf_counter()
    for i in range(2_000):
        producer.feedback(f"e{i}", satisfaction=1.0)
    assert time.perf_counter() - started < 2.0  # sanity guard, not a benchmark
    assert producer.stats.buffered == 2_000
