"""Kafka security on the real broker: the local KRaft broker in its secured mode (SASL_SSL
with SCRAM-SHA-512, a CA made here, the standard authorizer with ACLs per role).

A worker as ``inferwatch`` stores what the SDK sends as ``producer``; ``producer`` can
neither read the alerts or metrics topics nor write alerts; wrong credentials and an
untrusted CA fail in seconds with one line naming the user or the CA file and never the
password; ``config show`` masks the password; no secret reaches any log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

from pipeline.config import KafkaSettings, load_settings
from pipeline.dev.kafka import LocalKafka
from pipeline.dev.secure import ADMIN, PRODUCER, WORKER, create_acls, role_acls
from pipeline.dev.tls import write_ca
from pipeline.runtime.kafka import KafkaAccessError, client_options, wait_for_broker
from pipeline.sdk import Producer
from tests.integration.harness import ROOT, Pipeline

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None,
                       reason="needs Java 17+ to run a secured broker of its own"),
]

# a broker of this module's own (its own CA and users), outside the ephemeral range
PORT = int(os.environ.get("INFERWATCH_TEST_SECURE_KAFKA_PORT", "19112"))
WRONG = "not-the-password-" + os.urandom(6).hex()
FAST = 10.0  # seconds a refused client may take to say so


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    kafka = LocalKafka.private(tmp_path_factory.mktemp("secure-kafka"), PORT, secure=True,
                               say=lambda m: None)
    kafka.up(timeout=120)
    try:
        yield kafka
    finally:
        kafka.down()


def env_for(broker: LocalKafka, user: str, password: str | None = None,
            cafile: Path | None = None) -> dict[str, str]:
    kafka = broker.client(user, password)
    return {
        "INFERWATCH_KAFKA": kafka.bootstrap_servers,
        "INFERWATCH_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol,
        "INFERWATCH_KAFKA__SASL_MECHANISM": str(kafka.sasl_mechanism),
        "INFERWATCH_KAFKA__SASL_USERNAME": user,
        "INFERWATCH_KAFKA__SASL_PASSWORD": str(kafka.sasl_password),
        "INFERWATCH_KAFKA__SSL_CAFILE": str(cafile or broker.cafile),
    }


@pytest.fixture(scope="module")
def pipe(broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Topics made by the admin, the roles' ACLs for this pipeline's topic names and app id,
    and one worker (process, sink) connected as ``inferwatch``."""
    pipeline = Pipeline(broker.bootstrap, tmp_path_factory.mktemp("secure-pipe"),
                        **env_for(broker, ADMIN))
    asyncio.run(create_acls(broker.client(ADMIN), role_acls(pipeline.settings)))
    pipeline.start_worker("process,sink", **env_for(broker, WORKER))
    try:
        yield pipeline
    finally:
        pipeline.close()


@pytest.fixture(scope="module")
def untrusted_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ca(tmp_path_factory.mktemp("other-ca"), "someone else's CA").cafile


def cli(env: dict[str, str], *args: str, timeout: float = 60.0) -> tuple[int, str, float]:
    """Run ``inferwatch ARGS``; (exit status, stdout + stderr, seconds)."""
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr, time.monotonic() - started


def secrets_of(broker: LocalKafka) -> list[str]:
    return [*broker.users().values(), WRONG]


def test_the_sdk_as_producer_feeds_a_worker_as_inferwatch_into_clickhouse(
        broker: LocalKafka, pipe: Pipeline) -> None:
    worker = pipe.workers[0]
    pipe.wait_sink_ready(worker)
    pipe.wait_processor_ready(worker)
    settings = load_settings(environ={**pipe.env, **env_for(broker, PRODUCER)})
    with Producer(settings, service="secure-test", batch_size=100) as producer:
        for i in range(300):
            with producer.track("gpt-x", request_id=f"sec-{i}") as span:
                span.set(input_tokens=10 + i % 7, output_tokens=3)
        assert producer.flush(timeout=30), producer.stats
        assert producer.stats.sent == 300 and producer.stats.error is None
    assert pipe.wait_count(300, timeout=60) == 300, pipe.log(worker)
    assert pipe.owner_scalar("SELECT uniqExact(event_id) FROM events") == 300


@pytest.mark.parametrize("which", ["alerts", "metrics"])
def test_the_producer_may_not_read_alerts_or_metrics(broker: LocalKafka, pipe: Pipeline,
                                                     which: str) -> None:
    topic = getattr(pipe.settings.topics, which)
    kafka = broker.client(PRODUCER)

    async def read(group: str | None) -> None:
        consumer = AIOKafkaConsumer(topic, **client_options(kafka), group_id=group,
                                    auto_offset_reset="earliest")
        try:
            await consumer.start()
            await consumer.getmany(timeout_ms=2000)
        finally:
            await consumer.stop()

    for group in (None, f"{pipe.settings.worker.app_id}-sink"):  # alone, or as the sink
        started = time.monotonic()
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(read(group))
        assert time.monotonic() - started < FAST


def test_the_producer_may_not_forge_alerts(broker: LocalKafka, pipe: Pipeline) -> None:
    async def forge() -> None:
        producer = AIOKafkaProducer(**client_options(broker.client(PRODUCER)))
        await producer.start()
        try:
            await producer.send_and_wait(pipe.settings.topics.alerts, b"{}")
        finally:
            await producer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(forge())


def test_alerts_tail_as_the_producer_is_one_line_naming_topic_and_user(
        broker: LocalKafka, pipe: Pipeline) -> None:
    status, output, took = cli({**pipe.env, **env_for(broker, PRODUCER)}, "alerts", "tail")
    assert status == 1 and took < FAST, output
    assert output.strip().splitlines() == [
        f"Error: not authorized: user producer may not use topic {pipe.settings.topics.alerts} "
        f"at {broker.bootstrap} (no ACL allows it; see docs/security.md)"]


@pytest.mark.parametrize("roles", ["process", "sink"])
def test_a_worker_outside_its_acls_stops_with_one_line(broker: LocalKafka, pipe: Pipeline,
                                                        roles: str) -> None:
    """An app id the ACLs do not cover: its state topics and consumer groups are refused."""
    env = {**pipe.env, **env_for(broker, WORKER), "INFERWATCH_WORKER__APP_ID": "stranger",
           "INFERWATCH_HOME": str(pipe.tmp / f"stranger-{roles}")}
    status, output, took = cli(env, "worker", "--roles", roles, timeout=120)
    assert status == 1 and took < 30, (took, output)
    assert re.search(r"worker failed: not authorized: user inferwatch may not use "
                     r"(topic|consumer group) stranger-", output), output
    assert "Traceback" not in output, output


def test_wrong_password_fails_fast_and_clearly_everywhere(broker: LocalKafka,
                                                          pipe: Pipeline) -> None:
    expected = (f"authentication failed for user {WORKER} via SCRAM-SHA-512 at "
                f"{broker.bootstrap} (check kafka.sasl_username and kafka.sasl_password)")
    env = {**pipe.env, **env_for(broker, WORKER, password=WRONG),
           "INFERWATCH_HOME": str(pipe.tmp / "wrong-home")}
    for args in (["worker"], ["alerts", "tail"], ["silence", "add", "--match", "rule=x"],
                 ["simulate", "--duration", "2", "--rate", "50", "--speed", "0"]):
        status, output, took = cli(env, *args)
        lines = output.strip().splitlines()
        assert status == 1, (args, output)
        assert took < FAST, (args, took, output)
        assert lines[-1] == f"Error: {expected}", (args, output)
        # not a retry loop: at most the command's own first line (simulate says what it
        # sends, silence add keeps the failed action's audit event in its log) before it
        assert len(lines) <= 2 and "Traceback" not in output, (args, output)
        assert WRONG not in output, args

    # the library call the worker and `dev up` make
    started = time.monotonic()
    with pytest.raises(KafkaAccessError, match=re.escape(expected)):
        asyncio.run(wait_for_broker(broker.client(WORKER, WRONG), timeout=60))
    assert time.monotonic() - started < FAST


def test_wrong_password_stops_the_sdk_sender_with_one_error(
        broker: LocalKafka, pipe: Pipeline, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={**pipe.env, **env_for(broker, PRODUCER, password=WRONG)})
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    caplog.set_level(logging.INFO, logger="pipeline")
    producer = Producer(settings)
    try:
        with producer.track("gpt-x"):
            pass
        started = time.monotonic()
        assert producer.flush(timeout=30) is False
        assert time.monotonic() - started < FAST
        stats = producer.stats
        assert stats.error == (f"authentication failed for user {PRODUCER} via SCRAM-SHA-512 "
                               f"at {broker.bootstrap} (check kafka.sasl_username and "
                               "kafka.sasl_password)")
        assert stats.dropped == 1 and stats.buffered == 0
        assert producer.emit(_event()) is False  # refused from now on, counted
        assert producer.stats.dropped == 2
    finally:
        assert producer.close(timeout=5) is False
    kafka = [r for r in caplog.records if r.levelno >= logging.WARNING
             and r.name.startswith(("aiokafka", "pipeline.sdk.producer"))]
    assert len(kafka) == 1 and kafka[0].levelno == logging.ERROR, kafka  # one line, no loop
    assert all(WRONG not in r.getMessage() for r in caplog.records)


def test_the_dashboards_live_view_says_it_was_refused_once_and_keeps_asking_quietly(
        broker: LocalKafka, pipe: Pipeline, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard keeps serving pages from the store; its live feed names the refusal
    in one line instead of aiokafka's "Unable to bootstrap" every few seconds."""
    import pipeline.runtime.kafka as kafka_module
    from pipeline.ui import live

    settings = load_settings(environ={**pipe.env, **env_for(broker, WORKER, password=WRONG)})
    caplog.set_level(logging.INFO, logger="pipeline")
    # ask again every second, so "once" is proven over several refusals, not one
    monkeypatch.setattr(live, "REFUSED_RETRY_SECONDS", 1.0)
    asked: list[BaseException] = []

    async def diagnose(kafka: KafkaSettings, exc: BaseException, timeout: float = 10.0):
        asked.append(exc)
        return await real_diagnose(kafka, exc, timeout)

    real_diagnose = kafka_module.diagnose
    monkeypatch.setattr(kafka_module, "diagnose", diagnose)

    async def run_for(seconds: float) -> None:
        task = asyncio.create_task(live.consume(settings, live.Hub()))
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_for(FAST / 2))  # an outage would have logged 3 lines by then
    assert len(asked) >= 2, asked  # it kept asking
    ours = [r for r in caplog.records if r.name == "pipeline.ui.live"]
    assert [r.levelname for r in ours] == ["ERROR"], [r.getMessage() for r in ours]
    assert ours[0].getMessage().startswith(
        f"live updates off: Kafka refused the dashboard: authentication failed for user "
        f"{WORKER} via SCRAM-SHA-512 at {broker.bootstrap}")
    assert all(WRONG not in r.getMessage() for r in caplog.records)


def test_an_untrusted_broker_certificate_fails_fast(broker: LocalKafka, pipe: Pipeline,
                                                    untrusted_ca: Path) -> None:
    expected = (f"TLS: the broker's certificate at {broker.bootstrap} is not trusted by "
                f"ssl_cafile={untrusted_ca}")
    env = {**pipe.env, **env_for(broker, WORKER, cafile=untrusted_ca),
           "INFERWATCH_HOME": str(pipe.tmp / "untrusted-home")}
    for args in (["worker"], ["alerts", "tail"]):
        status, output, took = cli(env, *args)
        assert status == 1 and took < FAST, (args, output)
        assert output.strip().splitlines() == [f"Error: {expected} (self-signed certificate "
                                               "in certificate chain)"], (args, output)

    kafka = msgspec.structs.replace(broker.client(PRODUCER), ssl_cafile=str(untrusted_ca))
    producer = Producer(msgspec.structs.replace(pipe.settings, kafka=kafka))
    try:
        producer.emit(_event())
        started = time.monotonic()
        assert producer.flush(timeout=30) is False
        assert time.monotonic() - started < FAST
        assert (producer.stats.error or "").startswith(expected)
    finally:
        producer.close(timeout=5)


def test_tls_to_a_plaintext_listener_and_back_say_which_after_the_timeout(
        broker: LocalKafka, kafka_bootstrap: str) -> None:
    """The hints docs/security.md quotes, on real listeners: this module's TLS broker and
    the session's plaintext one. Neither mismatch is an access error (a listener that
    hangs up also does so while it restarts), so the wait times out, then says why."""
    secured = broker.client(WORKER)
    to_plaintext = msgspec.structs.replace(secured, bootstrap_servers=kafka_bootstrap)
    with pytest.raises(TimeoutError) as tls_on_plain:
        asyncio.run(wait_for_broker(to_plaintext, timeout=2.0))
    assert re.search(rf"{re.escape(kafka_bootstrap)} (reset the TLS handshake|gave no TLS "
                     r"handshake within 3s): a plaintext listener\? "
                     r"\(kafka.security_protocol=SASL_SSL\)$", str(tls_on_plain.value)), \
        str(tls_on_plain.value)

    plain = KafkaSettings(bootstrap_servers=broker.bootstrap)
    with pytest.raises(TimeoutError) as plain_on_tls:
        asyncio.run(wait_for_broker(plain, timeout=2.0))
    assert str(plain_on_tls.value).endswith(
        f"{broker.bootstrap} closed the connection: a TLS listener? "
        "(kafka.security_protocol=PLAINTEXT)"), str(plain_on_tls.value)
    assert secured.sasl_password not in str(tls_on_plain.value)


def test_config_show_masks_the_password(broker: LocalKafka, pipe: Pipeline) -> None:
    env = {**pipe.env, **env_for(broker, WORKER)}
    status, output, _ = cli(env, "config", "show")
    assert status == 0, output
    assert '"sasl_password": "***"' in output
    assert broker.users()[WORKER] not in output


def test_no_secret_in_any_log_of_the_run(broker: LocalKafka, pipe: Pipeline) -> None:
    """Last in the module: the worker's whole log, the broker's logs and its command line."""
    worker = pipe.workers[0]
    assert worker.poll() is None, pipe.log(worker)  # still running, through all of the above
    logs = {Path(worker.log_path): Path(worker.log_path).read_text(errors="replace")}
    for path in broker.logs.iterdir():
        logs[path] = path.read_text(errors="replace")
    logs[Path("cmdline")] = Path(f"/proc/{broker.status().pid}/cmdline").read_bytes().decode(
        errors="replace")
    assert "sink consuming" in logs[Path(worker.log_path)]  # the log covers the run
    # the worker's ACLs let it keep the DLQ's retention as privacy says (every start)
    assert "could not set retention.ms" not in logs[Path(worker.log_path)]
    for secret in secrets_of(broker):
        for path, text in logs.items():
            assert secret not in text, f"a password is in {path}"
    for name in ("users.json", f"{WORKER}.env", "server.properties", "broker.pem", "ca.key"):
        assert (broker.secure_dir / name).stat().st_mode & 0o077 == 0, name


def _event():  # -> InferenceEvent
    from schemas.event import InferenceEvent

    return InferenceEvent(event_id=os.urandom(8).hex(), timestamp=time.time(), model="gpt-x",
                          latency_ms=12.0)
