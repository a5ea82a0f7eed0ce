"""The embedded store's ClickHouse HTTP interface, driven by real ClickHouse clients.

The endpoint runs in-process (its own event loop in a thread) over a migrated chDB store;
clickhouse-connect's HTTP client and raw HTTP requests talk to it as they would to a
ClickHouse server. What must hold: the clients' whole handshake and query paths work
(``query``, ``query_df``, ``query_arrow``, compression), every HTTP-interface knob the
clients use is honoured, and nothing a client sends writes to the store or the host.
"""

from __future__ import annotations

import base64
import gzip
import json
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline.config import QuerySettings
from pipeline.sinks.clickhouse.http_interface import Endpoint
from pipeline.sinks.clickhouse.readonly_engine import refusal
from tests.unit.sinks.endpoint import serving

PASSWORD = "s3cret-for-tests"
ROWS = 25


@pytest.fixture(scope="module")
def endpoint(store: Any) -> Iterator[Endpoint]:
    """The interface on a free port over the module's store, with a probe table in it."""
    store.client.command("CREATE TABLE IF NOT EXISTS probe (id UInt32, name String, "
                         "at DateTime('UTC')) ENGINE = MergeTree ORDER BY id")
    store.client.command(f"INSERT INTO probe SELECT number, concat('n', toString(number)), "
                         f"toDateTime('2026-01-01 00:00:00', 'UTC') + number FROM numbers({ROWS})")

    async def kept(events: Any) -> None:  # the audit trail's own tests: test_query_guard.py
        pass

    with serving(store, QuerySettings(port=0, password=PASSWORD), kept) as end:
        yield end


@pytest.fixture(scope="module")
def client(endpoint: Endpoint) -> Iterator[Any]:
    ch = clickhouse_connect.get_client(host=endpoint.host, port=endpoint.port,
                                       username=endpoint.user, password=PASSWORD)
    try:
        yield ch
    finally:
        ch.close()


def http(endpoint: Endpoint, params: dict[str, str] | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None, auth: bool = True,
         path: str = "/") -> tuple[int, dict[str, str], bytes]:
    """One raw request; (status, headers, body) whatever the status."""
    url = f"http://{endpoint.host}:{endpoint.port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}))
    if auth:
        token = base64.b64encode(f"{endpoint.user}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ---------------------------------------------------------------- clickhouse-connect


def test_clickhouse_connect_handshake_and_query(client: Any) -> None:
    assert client.server_version  # SELECT version(), timezone() answered
    assert client.command("SELECT count() FROM probe") == ROWS
    result = client.query("SELECT id, name, at FROM probe WHERE id < {n:UInt32} ORDER BY id",
                          parameters={"n": 3})
    assert result.column_names == ("id", "name", "at")
    assert [row[:2] for row in result.result_rows] == [(0, "n0"), (1, "n1"), (2, "n2")]
    assert result.result_rows[1][2].isoformat().startswith("2026-01-01T00:00:01")


def test_clickhouse_connect_query_df(client: Any) -> None:
    df = client.query_df("SELECT id, name FROM probe ORDER BY id")
    assert len(df) == ROWS
    assert list(df["name"][:2]) == ["n0", "n1"]


def test_clickhouse_connect_query_np_and_raw_query(client: Any) -> None:
    assert client.query_np("SELECT id FROM probe ORDER BY id")[:3, 0].tolist() == [0, 1, 2]
    assert client.raw_query("SELECT id FROM probe WHERE id < 2 ORDER BY id",
                            fmt="CSV") == b"0\n1\n"


def test_clickhouse_connect_query_arrow(client: Any) -> None:
    table = client.query_arrow("SELECT id, name FROM probe ORDER BY id")
    assert table.num_rows == ROWS
    assert table.column("name").to_pylist()[:2] == ["n0", "n1"]


def test_clickhouse_connect_settings_and_empty_result(client: Any) -> None:
    result = client.query("SELECT name FROM probe WHERE id > 1000",
                          settings={"max_execution_time": 10})
    assert result.result_rows == []
    assert client.query("SELECT getSetting('max_execution_time')",
                        settings={"max_execution_time": 7}).result_rows[0][0] == 7


def test_clickhouse_connect_raises_readable_errors(client: Any) -> None:
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        client.query("SELECT * FROM no_such_table")
    with pytest.raises(DatabaseError, match="READONLY"):
        client.command("INSERT INTO probe VALUES (1000, 'x', now())")
    assert client.command("SELECT count() FROM probe") == ROWS


def test_wrong_password_is_refused_by_clickhouse_connect(endpoint: Endpoint) -> None:
    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
        clickhouse_connect.get_client(host=endpoint.host, port=endpoint.port,
                                      username=endpoint.user, password="wrong")


# ---------------------------------------------------------------- raw HTTP


def test_ping(endpoint: Endpoint) -> None:
    assert http(endpoint, path="/ping", auth=False)[::2] == (200, b"Ok.\n")


def test_query_in_url_defaults_to_tab_separated(endpoint: Endpoint) -> None:
    status, headers, body = http(endpoint, {"query": "SELECT 1, 'a'"})
    assert (status, body) == (200, b"1\ta\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["X-ClickHouse-Query-Id"]
    assert headers["X-ClickHouse-Timezone"]
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"


def test_query_in_body_and_url_prefix_joined(endpoint: Endpoint) -> None:
    assert http(endpoint, body=b"SELECT count() FROM probe")[::2] == (200, b"%d\n" % ROWS)
    status, _, body = http(endpoint, {"query": "SELECT id FROM probe"},
                           body=b"WHERE id = 3 FORMAT CSV")
    assert (status, body) == (200, b"3\n")


def test_format_clause_and_default_format(endpoint: Endpoint) -> None:
    status, headers, body = http(endpoint, {"query": "SELECT 1 AS x FORMAT JSONEachRow"})
    assert (status, json.loads(body)) == (200, {"x": 1})
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    status, headers, body = http(endpoint, {"query": "SELECT 2 AS y", "default_format": "JSON"})
    assert json.loads(body)["data"] == [{"y": 2}]
    assert headers["Content-Type"].startswith("application/json")
    status, headers, body = http(endpoint, {"query": "SELECT 3 AS z"},
                                 headers={"X-ClickHouse-Format": "CSVWithNames"})
    assert body == b'"z"\n3\n'


def test_database_parameter_and_header(endpoint: Endpoint) -> None:
    assert http(endpoint, {"query": "SELECT currentDatabase()"})[2] == b"inferwatch\n"
    assert http(endpoint, {"query": "SELECT currentDatabase()",
                           "database": "system"})[2] == b"system\n"
    assert http(endpoint, {"query": "SELECT currentDatabase()"},
                headers={"X-ClickHouse-Database": "system"})[2] == b"system\n"


def test_query_parameters_and_settings(endpoint: Endpoint) -> None:
    status, _, body = http(endpoint, {"query": "SELECT {a:UInt8} + 1, getSetting('max_threads')",
                                      "param_a": "41", "max_threads": "3",
                                      "session_id": "ignored", "wait_end_of_query": "1",
                                      "send_progress_in_http_headers": "1", "readonly": "2"})
    assert (status, body) == (200, b"42\t3\n")
    # a runaway statement cannot hold a slot for longer than [query] max_execution_seconds
    assert http(endpoint, {"query": "SELECT getSetting('max_execution_time')"})[2] == b"30\n"
    assert http(endpoint, {"query": "SELECT 1", "no_such_setting": "1"})[0] == 404


@pytest.mark.parametrize("how", ["basic", "headers", "url"])
def test_each_way_to_authenticate(endpoint: Endpoint, how: str) -> None:
    query = {"query": "SELECT 1"}
    headers: dict[str, str] = {}
    if how == "basic":
        token = base64.b64encode(f"{endpoint.user}:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    elif how == "headers":
        headers.update({"X-ClickHouse-User": endpoint.user, "X-ClickHouse-Key": PASSWORD})
    else:
        query.update(user=endpoint.user, password=PASSWORD)
    assert http(endpoint, query, headers=headers, auth=False)[::2] == (200, b"1\n")


@pytest.mark.parametrize("headers", [
    {}, {"X-ClickHouse-User": "inferwatch", "X-ClickHouse-Key": "wrong"},
    {"X-ClickHouse-User": "default", "X-ClickHouse-Key": PASSWORD},
    {"Authorization": "Basic " + base64.b64encode(b"inferwatch:wrong").decode()},
])
def test_wrong_or_missing_credentials_get_a_clickhouse_error(endpoint: Endpoint,
                                                             headers: dict[str, str]) -> None:
    status, got, body = http(endpoint, {"query": "SELECT 1"}, headers=headers, auth=False)
    assert status == 401
    assert got["X-ClickHouse-Exception-Code"] == "516"
    assert body.startswith(b"Code: 516. DB::Exception: ")
    assert PASSWORD.encode() not in body


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4", "br"])
def test_compressed_response_when_asked(endpoint: Endpoint, encoding: str) -> None:
    import cramjam

    status, headers, body = http(endpoint, {"query": "SELECT number FROM numbers(1000)",
                                            "enable_http_compression": "1"},
                                 headers={"Accept-Encoding": encoding})
    assert status == 200 and headers["Content-Encoding"] == encoding
    plain = {"gzip": gzip.decompress, "deflate": zlib.decompress,
             "zstd": lambda b: bytes(cramjam.zstd.decompress(b)),
             "lz4": lambda b: bytes(cramjam.lz4.decompress(b)),
             "br": lambda b: bytes(cramjam.brotli.decompress(b))}[encoding](body)
    assert plain.splitlines()[-1] == b"999"
    # without enable_http_compression, as ClickHouse: plain
    assert "Content-Encoding" not in http(endpoint, {"query": "SELECT 1"},
                                          headers={"Accept-Encoding": encoding})[1]


def test_gzip_request_body(endpoint: Endpoint) -> None:
    status, _, body = http(endpoint, body=gzip.compress(b"SELECT 5"),
                           headers={"Content-Encoding": "gzip"})
    assert (status, body) == (200, b"5\n")


def test_engine_errors_are_clickhouse_errors(endpoint: Endpoint) -> None:
    status, headers, body = http(endpoint, {"query": "SELECT 1 +"})
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "62"
    assert body.startswith(b"Code: 62. DB::Exception: ") and b"(version " in body
    status, headers, _ = http(endpoint, {"query": "SELECT 1", "default_format": "DataFrame"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "73")


# ---------------------------------------------------------------- read-only


WRITES = [
    "INSERT INTO probe VALUES (999, 'w', now())",
    "INSERT INTO probe SELECT * FROM probe",
    "CREATE TABLE evil (a UInt8) ENGINE = Memory",
    "CREATE TEMPORARY TABLE evil (a UInt8)",
    "CREATE DATABASE evil",
    "DROP TABLE probe",
    "TRUNCATE TABLE probe",
    "ALTER TABLE probe DELETE WHERE 1",
    "ALTER TABLE probe ADD COLUMN evil UInt8",
    "DELETE FROM probe WHERE 1",
    "RENAME TABLE probe TO evil",
    "OPTIMIZE TABLE probe FINAL",
    "SYSTEM STOP MERGES",
    "SYSTEM DROP MARK CACHE",
    "DETACH TABLE probe",
    "ATTACH TABLE probe",
    "BACKUP TABLE probe TO File('{out}')",
    "GRANT SELECT ON *.* TO default",
    "CREATE USER evil",
    "USE system",
    "WATCH probe",
    "SET readonly = 0",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_threads = 77",
    "KILL QUERY WHERE 1",
    "SELECT 1; DROP TABLE probe",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT file('/etc/hostname')",
    "SELECT `file`('/etc/hostname')",
    "SELECT * FROM url('http://127.0.0.1:9/', CSV, 'a String')",
    "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "SELECT * FROM s3('http://127.0.0.1:9/x.csv')",
    "SELECT * FROM executable('x.sh', TSV, 'a String')",
    "INSERT INTO FUNCTION file('{out}') SELECT 1",
    "SELECT 1 INTO OUTFILE '{out}'",
    "SELECT 1 /* */ INTO /* */ OUTFILE '{out}'",
]


@pytest.mark.parametrize("sql", WRITES)
def test_every_write_is_refused(endpoint: Endpoint, client: Any, tmp_path: Path,
                                sql: str) -> None:
    out = tmp_path / "written.csv"
    sql = sql.replace("{out}", str(out))
    for params, body in (({"query": sql}, None), ({}, sql.encode())):
        status, headers, text = http(endpoint, params, body=body)
        assert status >= 400, text
        assert text.startswith(b"Code: "), text
        assert headers["X-ClickHouse-Exception-Code"] in ("62", "164"), text
    assert not out.exists()
    assert client.command("SELECT count() FROM probe") == ROWS
    assert client.command("EXISTS TABLE probe") == 1
    assert client.command("EXISTS TABLE evil") == 0


def test_client_sent_readonly_cannot_be_lowered(endpoint: Endpoint) -> None:
    status, headers, _ = http(endpoint, {"query": "SELECT 1", "readonly": "0"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    body = http(endpoint, {"query": "SELECT getSetting('readonly')", "readonly": "2"})[2]
    assert body == b"1\n"


@pytest.mark.parametrize("sql", [
    "SELECT 'file(' AS s, 'INTO OUTFILE' AS t",
    "SELECT 1 -- ; DROP TABLE probe",
    "SELECT 1;",
    "SELECT profile FROM (SELECT 1 AS profile)",
])
def test_look_alikes_in_literals_and_comments_run(sql: str) -> None:
    assert refusal(sql) is None


# ---------------------------------------------------------------- inferwatch query


def test_inferwatch_query_goes_through_the_owner(store: Any, endpoint: Endpoint) -> None:
    """``run_query`` (behind ``inferwatch query``) finds the owner in the owner file and
    asks it over the HTTP interface; the file holds the password, so only we read it."""
    from pipeline.sinks.clickhouse.owner import StoreLock
    from pipeline.sinks.clickhouse.query import QueryError, run_query

    lock = StoreLock(store.settings.home_path)
    assert lock.try_acquire()
    try:
        lock.publish(endpoint.host, endpoint.port, endpoint.user, PASSWORD)
        assert lock.info_path.stat().st_mode & 0o777 == 0o600
        result = run_query(store.settings, "SELECT count() AS n, max(name) FROM probe")
        assert (result.columns, result.rows) == (["n", "max(name)"], [[ROWS, "n9"]])
        with pytest.raises(QueryError, match="read-only"):
            run_query(store.settings, "DROP TABLE probe")
        lock.publish(endpoint.host, endpoint.port, endpoint.user, "stale")
        with pytest.raises(QueryError, match="AUTHENTICATION_FAILED"):
            run_query(store.settings, "SELECT 1")
    finally:
        lock.release()
    assert not lock.info_path.exists()


def test_native_framed_for_the_client_protocol_version(endpoint: Endpoint) -> None:
    """clickhouse-go (Grafana) asks for its revision and decodes BlockInfo and a
    serialization byte per column; clickhouse-connect's lower probe gets revision 0,
    which it detects, as behind a proxy that drops the parameter."""
    query = {"query": "SELECT 1 AS check FORMAT Native"}
    body = http(endpoint, {**query, "client_protocol_version": "54460"})[2]
    assert body == b"\x01\x00\x02\xff\xff\xff\xff\x00\x01\x01\x05check\x05UInt8\x00\x01"
    body = http(endpoint, {**query, "client_protocol_version": "54405"})[2]
    assert body == b"\x01\x01\x05check\x05UInt8\x01"
    status, headers, _ = http(endpoint, {"query": "SELECT uniqState(1) FORMAT Native",
                                         "client_protocol_version": "54460"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (501, "48")
    status, headers, _ = http(endpoint, {"query": "SELECT 1", "compress": "1"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (501, "48")


def test_threads_of_one_process_share_the_store_it_opens_itself(store: Any) -> None:
    """No worker owns the store: the dashboard's parallel queries must not lock each other
    out (flock is per open file, so two threads would, without the process lock)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.sinks.clickhouse.query import run_query

    settings = store.settings  # the module's store (one chDB path per process), unowned
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run_query(settings, f"SELECT {n} AS n").rows,
                                range(8)))
    assert results == [[[n]] for n in range(8)]
