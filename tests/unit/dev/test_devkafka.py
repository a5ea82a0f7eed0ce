"""``inferwatch dev up`` says why a start failed: a port in use (and by whom), or the
broker's own error lines. No Java or jars needed: the checks run before anything starts,
and a failed start is played by a shell command."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.dev.kafka import LocalKafka, _relevant


def _free_port_pair() -> int:
    """A port whose successor is free too (broker, controller)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65535:
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    local = LocalKafka.private(tmp_path / "home", _free_port_pair(), say=lambda m: None)
    yield local
    local.down()


def _occupy(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.parametrize("role", ["broker", "controller"])
def test_up_fails_naming_the_port_in_use_and_its_owner(kafka: LocalKafka, role: str) -> None:
    port = kafka.dev.port if role == "broker" else kafka.dev.controller_port
    with _occupy(port), pytest.raises(RuntimeError) as info:
        kafka.up(timeout=5)
    message = str(info.value)
    assert f"port {port} (the {role} port) is in use" in message
    if sys.platform == "linux":
        assert f"by pid {os.getpid()}" in message  # this test process holds it
    assert "INFERWATCH_DEV__PORT" in message
    assert not kafka.status().running


def test_a_failed_start_shows_the_brokers_error_lines(kafka: LocalKafka,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    kafka.logs.mkdir(parents=True)
    old = "[2024-01-01 00:00:00,000] ERROR an error of an earlier run (kafka.Kafka$)\n"
    (kafka.logs / "server.log").write_text(old)
    script = (
        f"echo '[2024-06-01 10:00:00,000] INFO starting (kafka.Kafka$)' >> {kafka.logs}/server.log;"
        f"echo '[2024-06-01 10:00:01,000] ERROR Exiting Kafka due to fatal exception during "
        f"startup. (kafka.Kafka$)' >> {kafka.logs}/server.log;"
        f"echo 'org.apache.kafka.common.KafkaException: Socket server failed to bind to "
        f"127.0.0.1:{kafka.dev.port}: Address already in use.' >> {kafka.logs}/server.log;"
        f"echo '	at kafka.network.Acceptor.openServerSocket(SocketServer.scala:700)' "
        f">> {kafka.logs}/server.log;"
        "exit 1"
    )
    monkeypatch.setattr(kafka, "fetch", lambda: None)
    monkeypatch.setattr(kafka, "_format", lambda config: None)
    monkeypatch.setattr(kafka, "_java", lambda main, *args: ["sh", "-c", script])
    with pytest.raises(RuntimeError) as info:
        kafka.up(timeout=20)
    message = str(info.value)
    assert "the Kafka process exited during start-up" in message
    assert "ERROR Exiting Kafka due to fatal exception" in message
    assert f"failed to bind to 127.0.0.1:{kafka.dev.port}: Address already in use" in message
    assert "earlier run" not in message  # only this start's lines
    assert "SocketServer.scala" not in message  # stack frames left out
    assert "INFO starting" not in message


def test_relevant_lines_are_the_last_errors(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"[t] ERROR problem {i} (x)\n[t] INFO fine {i}\n" for i in range(40)))
    lines = _relevant(log, lines=3)
    assert lines == ["[t] ERROR problem 37 (x)", "[t] ERROR problem 38 (x)",
                     "[t] ERROR problem 39 (x)"]
    assert _relevant(tmp_path / "missing.log") == []
