"""The secured broker's configuration, without a broker: its properties, the SCRAM users
given to the storage format, the ACLs of each role, the users' files, and a CA whose
broker certificate really verifies (a TLS handshake in this process)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.dev.kafka import LocalKafka
from pipeline.dev.secure import (
    ADMIN,
    ALTER,
    CREATE,
    DESCRIBE,
    GROUP,
    PREFIXED,
    PRODUCER,
    READ,
    TOPIC,
    WORKER,
    WRITE,
    broker_properties,
    client_settings,
    env_file,
    load_users,
    role_acls,
    scram_arguments,
)
from pipeline.dev.tls import write_ca, write_pki
from pipeline.runtime.kafka import access_error


def _props(**kw: object) -> dict[str, str]:
    return broker_properties(port=19112, controller_port=19113, cafile=Path("/s/ca.pem"),
                             keystore=Path("/s/broker.pem"), admin_password="pw-admin", **kw)


def test_broker_properties_one_sasl_ssl_listener_and_a_controller_listener() -> None:
    props = _props()
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19112,CONTROLLER://127.0.0.1:19113"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19112"
    assert props["listener.security.protocol.map"] == \
        "CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == \
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == "User:admin"  # no ANONYMOUS super user
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["auto.create.topics.enable"] == "false"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert props["ssl.truststore.location"] == "/s/ca.pem"
    # the broker logs in as admin on both of its own listeners
    assert 'username="admin" password="pw-admin";' in \
        props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert 'user_admin="pw-admin"' in props["listener.name.controller.plain.sasl.jaas.config"]


def test_a_plaintext_listener_only_when_asked() -> None:
    props = _props(plaintext_port=19114)
    assert props["listeners"].endswith(",PLAINTEXT://127.0.0.1:19114")
    assert props["advertised.listeners"] == \
        "SASL_SSL://127.0.0.1:19112,PLAINTEXT://127.0.0.1:19114"
    assert "PLAINTEXT:PLAINTEXT" in props["listener.security.protocol.map"]
    assert "PLAINTEXT://" not in _props()["listeners"]


def test_scram_arguments_refuse_what_would_break_the_format_syntax() -> None:
    assert scram_arguments({"a": "x-Y_1", "b": "z"}) == [
        "--add-scram", "SCRAM-SHA-512=[name=a,password=x-Y_1]",
        "--add-scram", "SCRAM-SHA-512=[name=b,password=z]"]
    for bad in ({"a": "p,w"}, {"a": "p]w"}, {"a b": "pw"}, {"a": ""}, {"a": 'p"w'}):
        with pytest.raises(ValueError, match="limited to letters"):
            scram_arguments(bad)


def test_role_acls_follow_the_configured_topics_and_app_id() -> None:
    settings = load_settings(environ={"INFERWATCH_TOPICS__EVENTS": "team.events",
                                      "INFERWATCH_TOPICS__ALERTS": "team.alerts",
                                      "INFERWATCH_WORKER__APP_ID": "iw-prod",
                                      "INFERWATCH_OTLP__ENABLED": "true"})
    acls = role_acls(settings)
    worker = {(a.operation, a.resource, a.name, a.pattern)
              for a in acls if a.principal == f"User:{WORKER}"}
    producer = {(a.operation, a.resource, a.name, a.pattern)
                for a in acls if a.principal == f"User:{PRODUCER}"}
    assert len(set(acls)) == len(acls)  # no duplicates
    for topic in [*settings.topics.all(), "otlp_spans"]:
        for op in (READ, WRITE, DESCRIBE, CREATE):
            assert (op, TOPIC, topic, 3) in worker
    for op in (READ, WRITE, DESCRIBE, CREATE, ALTER):  # state topics, grown with the source
        assert (op, TOPIC, "iw-prod-", PREFIXED) in worker
    assert {(op, GROUP, "iw-prod-", PREFIXED) for op in (READ, DESCRIBE)} <= worker
    assert producer == {(WRITE, TOPIC, "team.events", 3), (DESCRIBE, TOPIC, "team.events", 3),
                        (WRITE, TOPIC, settings.topics.feedback, 3),
                        (DESCRIBE, TOPIC, settings.topics.feedback, 3)}
    assert not any(a.principal == f"User:{ADMIN}" for a in acls)  # a super user


def test_users_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "secure" / "users.json"
    first = load_users(path)
    assert set(first) == {ADMIN, WORKER, PRODUCER}
    assert len(set(first.values())) == 3 and all(len(p) >= 24 for p in first.values())
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_users(path) == first  # a restart keeps the passwords the storage holds
    assert json.loads(path.read_text()) == first
    more = load_users(path, [*first, "reader"])
    assert {k: more[k] for k in first} == first and "reader" in more


def test_client_settings_and_env_file_say_the_same() -> None:
    kafka = client_settings(Settings().kafka, "127.0.0.1:19112", WORKER, "pw", Path("/ca.pem"))
    env = dict(line.split("=", 1) for line in
               env_file("127.0.0.1:19112", WORKER, "pw", Path("/ca.pem")).splitlines())
    from_env = load_settings(environ=env).kafka
    assert from_env == kafka


def test_a_secured_local_kafka_keeps_its_data_and_files_apart(tmp_path: Path) -> None:
    plain = LocalKafka.private(tmp_path, 19112, say=lambda m: None)
    secure = LocalKafka.private(tmp_path, 19112, secure=True, plaintext_port=19114,
                                say=lambda m: None)
    assert plain.data != secure.data and plain.pid_file == secure.pid_file
    assert plain.plaintext_port is None and secure.plaintext_port == 19114
    secure.data.mkdir(parents=True)
    (secure.data / "meta.properties").write_text("formatted")
    with pytest.raises(RuntimeError, match=r"users\.json is missing but .* was formatted"):
        secure.users()  # the SCRAM users live in that storage: say so, not "auth failed"


def test_the_broker_certificate_verifies_against_the_ca_and_no_other(tmp_path: Path) -> None:
    pki = write_pki(tmp_path / "pki")
    other = write_ca(tmp_path / "other", "another CA")
    assert _handshake(pki.keystore, pki.cafile, "127.0.0.1") is None
    assert _handshake(pki.keystore, pki.cafile, "localhost") is None
    error = _handshake(pki.keystore, other.cafile, "127.0.0.1")
    assert isinstance(error, ssl.SSLCertVerificationError)
    kafka = client_settings(Settings().kafka, "127.0.0.1:19112", PRODUCER, "pw", other.cafile)
    assert str(access_error(kafka, error)).startswith(
        f"TLS: the broker's certificate at 127.0.0.1:19112 is not trusted by "
        f"ssl_cafile={other.cafile} (")
    mismatch = _handshake(pki.keystore, pki.cafile, "kafka.example.com")
    assert isinstance(mismatch, ssl.SSLCertVerificationError)
    assert "not valid for that host name" in str(access_error(kafka, mismatch))


def _handshake(keystore: Path, cafile: Path, host: str) -> Exception | None:
    """A TLS handshake over a socket pair: the broker's PEM keystore on one side, a client
    trusting ``cafile`` and expecting ``host`` on the other; the client's error or None."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(keystore)  # key and chain in one file, as Kafka reads it
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    left, right = socket.socketpair()

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(right, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(left, server_hostname=host) as tls:
            tls.sendall(b"x")
        return None
    except ssl.SSLError as exc:
        return exc
    finally:
        left.close()
        thread.join(5)


def test_create_acls_needs_nothing_when_there_is_nothing_to_create() -> None:
    from pipeline.dev.secure import create_acls

    assert asyncio.run(create_acls(Settings().kafka, [])) == 0
