"""The producer SDK when Kafka refuses it (a fake aiokafka client raising what aiokafka
raises on a secured broker): wrong credentials end the sender at once with one error and
``stats.error``; a topic the ACLs forbid drops that topic's records only."""

from __future__ import annotations

import logging
import time
from typing import ClassVar

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)

import pipeline.runtime.kafka as kafka_module
import pipeline.sdk.sender as sender_module
from pipeline.config import KafkaSettings, Settings
from pipeline.runtime.kafka import access_error
from pipeline.sdk.producer import Producer
from schemas.event import InferenceEvent

SECRET = "pa55-not-for-logs"
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="SCRAM-SHA-512", sasl_username="producer",
                      sasl_password=SECRET)


class Fake:
    """Stands in for AIOKafkaProducer: ``refuse`` fails start() as aiokafka does for a
    wrong password (a bare "Unable to bootstrap": the cause goes only to its log, and our
    own probe, ``check_access``, finds it); ``denied`` topics fail sends as a missing ACL
    does."""

    refuse = False
    denied: ClassVar[set[str]] = set()
    starts = 0
    sent: ClassVar[list[str]] = []

    def __init__(self, **options: object) -> None:
        pass

    async def start(self) -> None:
        type(self).starts += 1
        if self.refuse:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, <AF_INET>)]")

    async def send_and_wait(self, topic, value, key=None, headers=None):
        if topic in self.denied:
            raise TopicAuthorizationFailedError(topic)
        self.sent.append(topic)

    async def stop(self) -> None:
        pass


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[Fake]:
    cls = type("F", (Fake,), {"refuse": False, "denied": set(), "starts": 0, "sent": []})
    monkeypatch.setattr(sender_module, "AIOKafkaProducer", cls)

    async def probe(kafka: KafkaSettings, timeout: float = 10.0) -> None:  # the broker's answer
        if cls.refuse:
            raise access_error(kafka, SaslAuthenticationFailed(  # type: ignore[misc]
                "invalid credentials with SASL mechanism SCRAM-SHA-512"))

    monkeypatch.setattr(kafka_module, "check_access", probe)
    return cls


def _event(i: int = 0) -> InferenceEvent:
    return InferenceEvent(event_id=f"e{i}", timestamp=time.time(), model="m", latency_ms=1.0)


def test_wrong_credentials_stop_the_sender_with_one_error(fake, caplog) -> None:
    fake.refuse = True
    caplog.set_level(logging.DEBUG, logger="pipeline.sdk.producer")
    producer = Producer(Settings(kafka=KAFKA))
    producer._BACKOFF_INITIAL = producer._BACKOFF_MAX = 0.01
    for i in range(5):
        producer.emit(_event(i))
    started = time.monotonic()
    assert producer.flush(timeout=5) is False
    assert time.monotonic() - started < 2.0
    stats = producer.stats
    assert stats.error == ("authentication failed for user producer via SCRAM-SHA-512 at "
                           "127.0.0.1:1 (check kafka.sasl_username and kafka.sasl_password)")
    assert (stats.buffered, stats.dropped, stats.sent) == (0, 5, 0)
    assert producer.emit(_event(9)) is False and producer.stats.dropped == 6
    assert producer.close(timeout=1) is False
    assert fake.starts == 1  # no outage retries (a re-probe waits _REPROBE_SECONDS)
    records = [r for r in caplog.records if r.name == "pipeline.sdk.producer"]
    assert [r.levelname for r in records] == ["ERROR"]
    assert "Kafka refused this producer: authentication failed" in records[0].getMessage()
    assert SECRET not in caplog.text


def test_a_refused_producer_asks_again_quietly_and_resumes_once_accepted(fake, caplog) -> None:
    """A user created late on the broker, a certificate fixed: no restart needed. While
    refused, every re-probe is a DEBUG line only; the recovery is one WARNING."""
    fake.refuse = True
    caplog.set_level(logging.DEBUG, logger="pipeline.sdk.producer")
    producer = Producer(Settings(kafka=KAFKA), linger=0)
    producer._REPROBE_SECONDS = 0.05
    try:
        producer.emit(_event(1))
        assert producer.flush(timeout=5) is False and producer.stats.error is not None
        deadline = time.monotonic() + 5
        while fake.starts < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake.starts >= 4  # asked again, and again
        assert producer.emit(_event(2)) is False  # still refused: dropped, counted
        fake.refuse = False
        deadline = time.monotonic() + 5
        while producer.stats.error is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert producer.stats.error is None
        assert producer.emit(_event(3)) and producer.flush(timeout=5)
        stats = producer.stats
        assert (stats.sent, stats.dropped, stats.buffered) == (1, 2, 0)
    finally:
        producer.close(timeout=1)
    loud = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "pipeline.sdk.producer" and r.levelno >= logging.INFO]
    assert [level for level, _ in loud] == ["ERROR", "WARNING"], loud
    assert loud[1][1].startswith("Kafka accepts this producer again after ")
    assert SECRET not in caplog.text


def test_a_forbidden_topic_drops_its_records_and_the_rest_flows(fake, caplog) -> None:
    settings = Settings(kafka=KAFKA)
    fake.denied = {settings.topics.feedback}
    caplog.set_level(logging.WARNING, logger="pipeline.sdk.producer")
    producer = Producer(settings, batch_size=2, linger=0)
    try:
        producer.emit(_event(1))
        assert producer.flush(timeout=5)
        for round_ in range(3):
            producer.feedback(request_id=f"r{round_}", satisfaction=1.0)
            producer.emit(_event(10 + round_))
            producer.flush(timeout=5)
        stats = producer.stats
        assert stats.error is None and stats.buffered == 0
        assert stats.sent == 4 and stats.dropped == 3
        assert set(fake.sent) == {settings.topics.events}
    finally:
        producer.close(timeout=1)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"dropping records for {settings.topics.feedback}: not authorized: user "
                      f"producer may not use topic {settings.topics.feedback} at 127.0.0.1:1 "
                      "(no ACL allows it; see docs/security.md) (further drops are counted in "
                      "stats.dropped)"]


def test_a_refusal_mid_session_is_a_refusal_not_an_outage(fake, caplog) -> None:
    """Credentials revoked while connected (a re-authentication fails inside a send): one
    ERROR and the refused state, not outage warnings and retries."""
    caplog.set_level(logging.DEBUG, logger="pipeline.sdk.producer")
    producer = Producer(Settings(kafka=KAFKA), linger=0)
    try:
        producer.emit(_event(1))
        assert producer.flush(timeout=5)

        async def revoked(*args, **kwargs):
            raise SaslAuthenticationFailed("re-authentication failed")

        fake.send_and_wait = revoked
        producer.emit(_event(2))
        assert producer.flush(timeout=5) is False
        assert (producer.stats.error or "").startswith("authentication failed for user producer")
        assert producer.stats.dropped == 1
    finally:
        producer.close(timeout=1)
    loud = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "pipeline.sdk.producer" and r.levelno >= logging.WARNING]
    assert [level for level, _ in loud] == ["ERROR"], loud
    assert loud[0][1].startswith("Kafka refused this producer: authentication failed")
