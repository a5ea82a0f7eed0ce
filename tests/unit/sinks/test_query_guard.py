"""Guarded queries on the embedded store's endpoint: per-query limits enforced by the real
engine (chDB), credentials on every path but the health check, HTTPS with a certificate
made here, and every statement in the audit trail.

The endpoint runs in-process (its own event loop in a thread) over the module's store,
with small limits so a runaway statement is stopped in seconds. The audit trail's
publisher is replaced by a list (its Kafka path is the integration test's).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pipeline.config import QuerySettings
from pipeline.sinks.clickhouse.http_interface import (
    Endpoint,
    TlsError,
    tls_context,
)
from pipeline.sinks.clickhouse.owner import OwnerInfo, StoreLock
from pipeline.sinks.clickhouse.query import QueryError, owner_client, run_query
from schemas.audit import AuditEvent
from tests.unit.sinks.endpoint import serving

PASSWORD = "guarded-s3cret"
SECONDS = 2.0  # max_execution_seconds of the guarded endpoint
MARGIN = 3.0  # how much later than the limit a stopped statement may answer
LIMITS = QuerySettings(port=0, password=PASSWORD, max_execution_seconds=SECONDS,
                       max_memory_bytes=256 << 20, max_result_rows=1000,
                       max_result_bytes=1 << 20)


class Trail:
    """The audit publisher, replaced by a list."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def __call__(self, events: Any) -> None:
        self.events.extend(events)

    def wait(self, count: int, timeout: float = 10.0) -> list[AuditEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.events)


@pytest.fixture(scope="module")
def trail() -> Trail:
    return Trail()


@pytest.fixture(scope="module")
def guarded(store: Any, trail: Trail) -> Iterator[Endpoint]:
    with serving(store, LIMITS, trail) as end:
        yield end


def http(end: Endpoint, params: dict[str, str] | None = None, *, auth: bool = True,
         path: str = "/", body: bytes | None = None, user: str | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    url = f"{end.scheme}://{end.host}:{end.port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, data=body)
    if auth:
        token = base64.b64encode(f"{user or end.user}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ---------------------------------------------------------------- limits


RUNAWAYS = [
    "SELECT count() FROM numbers(1e12)",
    "SELECT count() FROM numbers(1e6) AS a CROSS JOIN numbers(1e6) AS b",
]


@pytest.mark.parametrize("sql", RUNAWAYS, ids=["count-1e12", "cross-join"])
def test_a_runaway_query_is_stopped_at_the_time_limit_and_the_endpoint_answers_meanwhile(
        guarded: Endpoint, sql: str) -> None:
    answer: dict[str, Any] = {}

    def runaway() -> None:
        started = time.monotonic()
        answer["response"] = http(guarded, {"query": sql})
        answer["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=runaway)
    thread.start()
    time.sleep(0.3)  # the runaway holds a slot now
    assert http(guarded, {"query": "SELECT 42"})[::2] == (200, b"42\n")
    assert thread.is_alive(), "the runaway ended before the second query was answered"
    thread.join(SECONDS + MARGIN + 30)
    status, headers, body = answer["response"]
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (408, "159"), body
    assert SECONDS <= answer["seconds"] < SECONDS + MARGIN
    text = body.decode()
    assert text.startswith("Code: 159. DB::Exception: Timeout exceeded")
    assert "the endpoint's limit max_execution_time = 2 s ([query] max_execution_seconds)" \
        in text
    assert "(TIMEOUT_EXCEEDED)" in text


def test_more_rows_than_max_result_rows_are_refused_not_cut(guarded: Endpoint) -> None:
    assert http(guarded, {"query": "SELECT count() FROM (SELECT number FROM numbers(999))"}
                )[::2] == (200, b"999\n")
    status, headers, body = http(guarded, {"query": "SELECT number FROM numbers(1e6)"})
    assert headers["X-ClickHouse-Exception-Code"] == "396" and status >= 400
    assert b"max rows" in body
    assert b"the endpoint's limit max_result_rows = 1000 ([query] max_result_rows)" in body
    # a client asking for a cut result ('break') still gets the refusal
    status, headers, _ = http(guarded, {"query": "SELECT number FROM numbers(1e6)",
                                        "result_overflow_mode": "break"})
    assert headers["X-ClickHouse-Exception-Code"] == "396"


@pytest.mark.parametrize("sql", [
    "SELECT repeat(toString(number), 5000) FROM numbers(500)",  # the engine's own check
    "SELECT repeat('x', 10000) FROM numbers(500)",  # a constant column: 20 KB in memory
], ids=["engine", "formatted"])
def test_a_result_past_max_result_bytes_is_refused(guarded: Endpoint, sql: str) -> None:
    status, headers, body = http(guarded, {"query": sql})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "396"), body[:200]
    assert b"max bytes: 1.00 MiB" in body
    assert b"the endpoint's limit max_result_bytes = 1048576 ([query] max_result_bytes)" in body
    assert http(guarded, {"query": sql.replace("500", "50")})[0] == 200  # 0.5 MB: fine


def test_a_query_past_max_memory_bytes_is_refused(guarded: Endpoint) -> None:
    status, headers, body = http(guarded, {"query": "SELECT groupArray(number) FROM numbers(1e8)"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "241"), body
    assert b"Query memory limit exceeded" in body
    assert (b"the endpoint's limit max_memory_usage = 268435456 ([query] max_memory_bytes)"
            in body)
    assert http(guarded, {"query": "SELECT 7"})[::2] == (200, b"7\n")  # and it goes on


def test_a_client_may_lower_a_limit_never_raise_or_lift_it(guarded: Endpoint) -> None:
    sql = ("SELECT getSetting('max_execution_time'), getSetting('max_memory_usage'), "
           "getSetting('max_result_rows'), getSetting('max_result_bytes'), "
           "getSetting('result_overflow_mode'), getSetting('timeout_overflow_mode')")
    assert http(guarded, {"query": sql})[2] == b"2\t268435456\t1000\t1048576\tthrow\tthrow\n"
    lifted = {"max_execution_time": "0", "max_memory_usage": "0", "max_result_rows": "0",
              "max_result_bytes": "999999999999", "timeout_overflow_mode": "break"}
    assert http(guarded, {"query": sql, **lifted})[2] == \
        b"2\t268435456\t1000\t1048576\tthrow\tthrow\n"
    lowered = {"max_execution_time": "1.5", "max_result_rows": "10"}
    assert http(guarded, {"query": sql, **lowered})[2] == \
        b"1.5\t268435456\t10\t1048576\tthrow\tthrow\n"
    status, _, body = http(guarded, {"query": "SELECT number FROM numbers(100)",
                                     "max_result_rows": "10"})
    assert b"max_result_rows = 10 as the client asked (the endpoint allows at most 1000" \
        in body
    status, headers, body = http(guarded, {"query": "SELECT 1", "max_result_rows": "many"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "72")
    assert b"max_result_rows" in body


# ---------------------------------------------------------------- credentials


def test_only_the_health_check_answers_without_credentials(guarded: Endpoint) -> None:
    assert http(guarded, path="/ping", auth=False)[::2] == (200, b"Ok.\n")
    assert http(guarded, path="/replicas_status", auth=False)[::2] == (200, b"Ok.\n")
    for params, body in (({}, None), ({"query": "SELECT 1"}, None), ({}, b"SELECT 1"),
                         ({"query": ""}, None)):
        status, headers, text = http(guarded, params, body=body, auth=False)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (401, "516"), text
    assert http(guarded)[::2] == (200, b"Ok.\n")  # ClickHouse's answer to an empty GET /
    assert http(guarded, path="/play", auth=False)[0] == 404
    status, _, _ = http(guarded, {"query": "SELECT 1"}, user="default")
    assert status == 401


# ---------------------------------------------------------------- audit


def test_every_statement_is_in_the_audit_trail(store: Any) -> None:
    trail = Trail()
    with serving(store, LIMITS, trail) as end:
        http(end, {"query": "SELECT number FROM numbers(5)", "query_id": "q-ok"})
        http(end, {"query": "SELECT number FROM numbers(1e6)", "query_id": "q-rows"})
        http(end, {"query": "DROP TABLE events", "query_id": "q-ro"})
        http(end, {"query": "SELECT * FROM no_such_table", "query_id": "q-fail"})
        http(end, {"query": "SELECT 'secret statement'", "query_id": "q-auth"}, user="mallory")
        events = {e.detail["query_id"]: e for e in trail.wait(5)}
    assert sorted(events) == ["q-auth", "q-fail", "q-ok", "q-ro", "q-rows"]
    assert {e.action for e in events.values()} == {"query.run"}
    assert {e.source for e in events.values()} == {"query"}
    ok = events["q-ok"]
    assert (ok.actor, ok.outcome, ok.target) == ("inferwatch", "ok", "inferwatch")
    assert ok.detail["statement"] == "SELECT number FROM numbers(5)"
    assert (ok.detail["result_rows"], ok.detail["read_rows"]) == ("5", "5")
    assert float(ok.detail["duration_ms"]) >= 0 and ok.detail["remote"] == "127.0.0.1"
    rows = events["q-rows"]
    assert (rows.outcome, rows.detail["error_code"]) == ("refused", "396")
    assert "max_result_rows = 1000" in rows.detail["reason"]
    assert (events["q-ro"].outcome, events["q-ro"].detail["error_code"]) == ("refused", "164")
    assert (events["q-fail"].outcome, events["q-fail"].detail["error_code"]) == ("failed", "60")
    stranger = events["q-auth"]
    assert (stranger.actor, stranger.outcome, stranger.detail["error_code"]) == \
        ("mallory", "refused", "516")
    assert "statement" not in stranger.detail  # not authenticated: the text is not kept
    assert all(PASSWORD not in json.dumps(msgspec.to_builtins(e)) for e in events.values())


def test_a_long_statement_is_kept_cut_with_its_length_and_hash(guarded: Endpoint,
                                                               trail: Trail) -> None:
    sql = "SELECT 1 AS x" + " " * 10_000 + "-- end"
    before = len(trail.events)
    assert http(guarded, body=sql.encode())[0] == 200
    event = trail.wait(before + 1)[-1]
    assert len(event.detail["statement"]) == 4096 and event.detail["statement"].endswith(
        f"…[{len(sql)} ch]")
    assert event.detail["statement_chars"] == str(len(sql))
    import hashlib

    assert event.detail["statement_sha256"] == hashlib.sha256(sql.encode()).hexdigest()


# ---------------------------------------------------------------- TLS


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_https_when_both_files_are_set(store: Any, tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "endpoint")
    other, _ = _certificate(tmp_path, "impostor")
    query = msgspec.structs.replace(LIMITS, tls_certfile=str(cert), tls_keyfile=str(key))
    with serving(store, query, Trail()) as end:
        assert end.scheme == "https"
        trusted = ssl.create_default_context(cafile=str(cert))
        assert http(end, {"query": "SELECT 1"}, context=trusted)[::2] == (200, b"1\n")
        assert http(end, path="/ping", auth=False, context=trusted)[::2] == (200, b"Ok.\n")
        status, headers, _ = http(end, {"query": "SELECT 1"}, auth=False, context=trusted)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (401, "516")
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            http(end, {"query": "SELECT 1"}, context=ssl.create_default_context(
                cafile=str(other)))
        plain = Endpoint(end.host, end.port, end.user, end.password)  # http:// to it
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            http(plain, {"query": "SELECT 1"})

        # clickhouse-connect, as `inferwatch query` and the dashboard reach the owner:
        # pinned to the certificate file, refused by any other certificate
        owner = OwnerInfo(1, end.host, end.port, end.user, PASSWORD)
        client = owner_client(owner, "inferwatch", tls_certfile=str(cert))
        try:
            assert client.command("SELECT 40 + 2") == 42
        finally:
            client.close()
        with pytest.raises(Exception, match=r"[Ff]ingerprint"):
            owner_client(owner, "inferwatch", tls_certfile=str(other))

        settings = msgspec.structs.replace(store.settings, query=query)
        lock = StoreLock(settings.home_path)
        assert lock.try_acquire()
        try:
            lock.publish(end.host, end.port, end.user, PASSWORD, end.scheme)
            assert lock.owner().scheme == "https"  # type: ignore[union-attr]
            assert run_query(settings, "SELECT 5 AS n").rows == [[5]]
            # a client needs the certificate to pin, not the server's key
            client_only = msgspec.structs.replace(
                store.settings, query=msgspec.structs.replace(LIMITS, tls_certfile=str(cert)))
            assert run_query(client_only, "SELECT 6 AS n").rows == [[6]]
            # the same owner without TLS in the settings: told, not a connection error
            with pytest.raises(QueryError, match=r"answers HTTPS: set \[query\] tls_certfile"):
                run_query(store.settings, "SELECT 5 AS n")
            # an owner file that says plain HTTP to a client set for TLS: no downgrade
            lock.publish(end.host, end.port, end.user, PASSWORD)
            with pytest.raises(QueryError, match="answers plain HTTP, but"):
                run_query(settings, "SELECT 5 AS n")
        finally:
            lock.release()


def test_tls_settings_that_cannot_work_say_which(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "endpoint")
    assert tls_context(QuerySettings()) is None
    with pytest.raises(TlsError, match="tls_certfile is set but tls_keyfile is not"):
        tls_context(QuerySettings(tls_certfile=str(cert)))
    with pytest.raises(TlsError, match="tls_keyfile is set but tls_certfile is not"):
        tls_context(QuerySettings(tls_keyfile=str(key)))
    with pytest.raises(TlsError, match="cannot be loaded"):
        tls_context(QuerySettings(tls_certfile=str(key), tls_keyfile=str(cert)))
    with pytest.raises(TlsError, match="cannot be loaded"):
        tls_context(QuerySettings(tls_certfile=str(tmp_path / "none.crt"),
                                  tls_keyfile=str(key)))
    assert tls_context(QuerySettings(tls_certfile=str(cert), tls_keyfile=str(key)))
    # the worker says so in one line before it starts anything (no broker here)
    from click.testing import CliRunner

    from pipeline.cli import cli

    out = CliRunner().invoke(cli, ["worker", "--roles", "sink"], env={
        "INFERWATCH_HOME": str(tmp_path / "home"), "INFERWATCH_KAFKA": "127.0.0.1:1",
        "INFERWATCH_QUERY__TLS_CERTFILE": str(cert)})
    assert out.exit_code == 1, out.output
    assert out.output.strip().splitlines() == [
        "Error: [query] tls_certfile is set but tls_keyfile is not: HTTPS needs both PEM "
        "files (the certificate chain and its private key)"]
