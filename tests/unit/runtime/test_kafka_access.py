"""What a Kafka refusal means, without a broker: each kind of error aiokafka raises for a
refused login, certificate or ACL becomes one line naming the user, the CA file or the
topic, and never the password; outages stay outages; aiokafka's own lines about it are
quiet; a closed port is not mistaken for a refusal."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from types import SimpleNamespace

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

from pipeline.config import KafkaSettings
from pipeline.runtime.kafka import (
    KafkaAccessError,
    _check_created,
    access_error,
    check_access,
    diagnose,
    wait_for_broker,
)

SECRET = "s3cret-Pa55word"
KAFKA = KafkaSettings(bootstrap_servers="kafka-1:9093,kafka-2:9093", security_protocol="SASL_SSL",
                      sasl_mechanism="SCRAM-SHA-512", sasl_username="svc-ingest",
                      sasl_password=SECRET, ssl_cafile="/etc/inferwatch/ca.pem")


def _cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code, error.verify_message, error.reason = code, message, \
        "CERTIFICATE_VERIFY_FAILED"
    return error


@pytest.mark.parametrize(("error", "expected"), [
    (SaslAuthenticationFailed("Authentication failed during authentication due to invalid "
                              "credentials with SASL mechanism SCRAM-SHA-512"),
     "authentication failed for user svc-ingest via SCRAM-SHA-512 at kafka-1:9093,kafka-2:9093 "
     "(check kafka.sasl_username and kafka.sasl_password)"),
    (_cert_error(19, "self-signed certificate in certificate chain"),
     "TLS: the broker's certificate at kafka-1:9093,kafka-2:9093 is not trusted by "
     "ssl_cafile=/etc/inferwatch/ca.pem (self-signed certificate in certificate chain)"),
    (_cert_error(62, "Hostname mismatch, certificate is not valid for 'kafka-1'."),
     "TLS: the broker's certificate at kafka-1:9093,kafka-2:9093 is not valid for that host "
     "name (Hostname mismatch, certificate is not valid for 'kafka-1'.)"),
    (TopicAuthorizationFailedError("inferwatch.metrics"),
     "not authorized: user svc-ingest may not use topic inferwatch.metrics at "
     "kafka-1:9093,kafka-2:9093 (no ACL allows it; see docs/security.md)"),
    (TopicAuthorizationFailedError({"b.topic", "a.topic"}),
     "not authorized: user svc-ingest may not use topic a.topic, b.topic at "
     "kafka-1:9093,kafka-2:9093 (no ACL allows it; see docs/security.md)"),
    (GroupAuthorizationFailedError("inferwatch-sink"),
     "not authorized: user svc-ingest may not use consumer group inferwatch-sink at "
     "kafka-1:9093,kafka-2:9093 (see docs/security.md)"),
])
def test_each_refusal_is_one_line_naming_what_to_fix(error: Exception, expected: str) -> None:
    found = access_error(KAFKA, error)
    assert isinstance(found, KafkaAccessError)
    assert str(found) == expected
    assert SECRET not in str(found) and "\n" not in str(found)


def test_the_cause_is_found_behind_a_wrapping_error() -> None:
    try:
        try:
            raise SaslAuthenticationFailed("bad")
        except SaslAuthenticationFailed as inner:
            raise RuntimeError("starting the consumer") from inner
    except RuntimeError as outer:
        assert str(access_error(KAFKA, outer)).startswith("authentication failed for user")


def test_other_refusals_still_name_the_user_and_never_the_password() -> None:
    for error, expected in (
        (ClusterAuthorizationFailedError("CreateAcls"),
         "not authorized: user svc-ingest at kafka-1:9093,kafka-2:9093: [Error 31] "
         "ClusterAuthorizationFailedError: CreateAcls (see docs/security.md)"),
        (UnsupportedSaslMechanismError("enabled mechanisms are: ['PLAIN']"),
         "SASL at kafka-1:9093,kafka-2:9093: [Error 33] UnsupportedSaslMechanismError: "
         "enabled mechanisms are: ['PLAIN'] (kafka.sasl_mechanism)"),
    ):
        found = access_error(KAFKA, error)
        assert isinstance(found, KafkaAccessError)
        assert str(found) == expected  # the error's type named once, not twice
        assert SECRET not in str(found)
    assert "user svc-ingest" in str(access_error(KAFKA, ClusterAuthorizationFailedError()))
    plain = KafkaSettings(security_protocol="SSL", ssl_cafile="/ca.pem")
    assert "the anonymous principal" in str(access_error(plain, TopicAuthorizationFailedError("t")))
    system = KafkaSettings(security_protocol="SSL")
    assert "the system's CAs (kafka.ssl_cafile is not set)" in \
        str(access_error(system, _cert_error(19, "self-signed")))


@pytest.mark.parametrize("error", [KafkaConnectionError("Unable to bootstrap"), KafkaTimeoutError(),
                                   NotLeaderForPartitionError(), ConnectionRefusedError(),
                                   TimeoutError()])
def test_outages_are_not_refusals(error: Exception) -> None:
    assert access_error(KAFKA, error) is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_broker_is_an_outage_quickly() -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    asyncio.run(check_access(kafka))  # returns: nothing refused us
    assert asyncio.run(diagnose(kafka, KafkaConnectionError("Unable to bootstrap"))) is None
    assert time.monotonic() - started < 2.0


def test_a_refused_topic_creation_raises_instead_of_logging_success() -> None:
    refused = SimpleNamespace(topic_errors=[("ok.topic", 0, None), ("there.already", 36, "exists"),
                                            ("not.mine", 29, "Authorization failed.")])
    with pytest.raises(KafkaAccessError, match=r"may not use topic not\.mine at"):
        _check_created(KAFKA, refused)
    broken = SimpleNamespace(topic_errors=[
        ("t", 38, "Replication factor: 3 larger than available brokers: 1.")])
    with pytest.raises(Exception, match="creating topic t: Replication factor"):
        _check_created(KAFKA, broken)


def _aiokafka_lines() -> None:
    error = SaslAuthenticationFailed("invalid credentials")
    logging.getLogger("aiokafka").error('Unable connect to "%s:%s": %s', "h", 9093, error)
    logging.getLogger("aiokafka.cluster").error("Topic %s is not authorized for this client",
                                                "inferwatch.alerts")
    logging.getLogger("aiokafka.conn").info("Authenticated as %s via %s", "svc", "SCRAM-SHA-512")
    logging.getLogger("aiokafka").error('Unable connect to "%s:%s": %s', "h", 9093,
                                        ConnectionRefusedError("refused"))


def test_aiokafkas_own_lines_about_a_refusal_go_to_debug(caplog: pytest.LogCaptureFixture) -> None:
    # INFO, so "Authenticated as" (an INFO record) would be kept if the filter let it through
    caplog.set_level(logging.INFO)
    _aiokafka_lines()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", 'Unable connect to "h:9093": refused')]  # an outage is still logged
    caplog.clear()
    caplog.set_level(logging.DEBUG)  # demoted, not lost
    _aiokafka_lines()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", 'Unable connect to "h:9093": [Error 58] SaslAuthenticationFailed: invalid '
                  "credentials"),
        ("DEBUG", "Topic inferwatch.alerts is not authorized for this client"),
        ("DEBUG", "Authenticated as svc via SCRAM-SHA-512"),
        ("ERROR", 'Unable connect to "h:9093": refused')]


def test_a_dropped_tls_link_is_an_outage_but_a_failed_handshake_is_not() -> None:
    assert access_error(KAFKA, ssl.SSLEOFError(8, "EOF occurred in violation of protocol")) \
        is None
    failed = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    failed.reason = "WRONG_VERSION_NUMBER"
    assert str(access_error(KAFKA, failed)) == (
        "TLS handshake with kafka-1:9093,kafka-2:9093 failed (WRONG_VERSION_NUMBER); is that a "
        "TLS listener, and kafka.security_protocol=SASL_SSL right?")


def test_waiting_on_a_tls_listener_with_plaintext_says_so() -> None:
    """A listener that hangs up on a plaintext request (as a TLS one does): the timeout
    says what is likely wrong."""
    async def run() -> str:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await wait_for_broker(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"),
                                  timeout=1.0)
        except TimeoutError as exc:
            return str(exc)
        finally:
            server.close()
        return "answered"

    assert asyncio.run(run()).endswith(
        "closed the connection: a TLS listener? (kafka.security_protocol=PLAINTEXT)")


def test_waiting_on_a_listener_that_never_answers_keeps_to_its_timeout() -> None:
    """A listener that takes the connection and says nothing (a hung broker, a proxy):
    each attempt and the probe of why it failed stop at the deadline. Before, one attempt
    (5 s request timeout) and its probe (10 s SASL handshake) ran past it."""
    async def run() -> tuple[float, str]:
        held: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}",
                              security_protocol="SASL_PLAINTEXT",
                              sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
                              sasl_password="pw")
        started = time.monotonic()
        try:
            await wait_for_broker(kafka, timeout=1.0)
        except TimeoutError as exc:
            return time.monotonic() - started, str(exc)
        finally:
            for writer in held:
                writer.close()
            server.close()
        return 0.0, "answered"

    elapsed, message = asyncio.run(run())
    assert re.match(r"Kafka at 127\.0\.0\.1:\d+ did not answer: TimeoutError(;|$)", message), \
        message  # the attempt cut at the deadline, named (its message is empty)
    assert elapsed < 1.0 + 3.0 + 2.0, elapsed  # the timeout, the TLS hint's 3 s, a margin
