"""The read-only SQL path behind ``inferwatch query``.

Three cases, one client library, one result type: a ClickHouse server DSN (query it
directly), the embedded store while a worker owns it (clickhouse-connect's HTTP client
against the owner's ClickHouse HTTP interface, address and password from the owner
file), the embedded store while nobody runs (open it ourselves). Writes and DDL are
refused by the engine itself: ``readonly=2`` on a server or our own chDB handle, the
endpoint's ``readonly=1`` on the owner.

When ``[query] tls_certfile`` and ``tls_keyfile`` are set, the owner answers HTTPS only;
the client then pins that very certificate (its sha256 fingerprint, read from
``tls_certfile``): the owner file says which port on this machine and whether it is
HTTPS, the certificate file says who may answer there, whatever name the certificate
was issued for. Settings that disagree with the owner's scheme are refused in one line
(never a downgrade to plain HTTP).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import ssl
import threading
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from pipeline.config import Settings
from pipeline.sinks.clickhouse.client import READ_ONLY, connect
from pipeline.sinks.clickhouse.owner import OwnerInfo, StoreBusyError, StoreLock

__all__ = ["QueryError", "QueryResult", "certificate_fingerprint", "format_result",
           "owner_client", "run_query", "run_readonly"]

_READONLY_HINT = "the query path is read-only: writes and DDL are refused"


class QueryResult(msgspec.Struct):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


class QueryError(RuntimeError):
    """The statement failed; the message is ClickHouse's, made readable."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def run_readonly(client: Any, sql: str) -> QueryResult:
    """Run one statement read-only on an open client; rows come back as plain JSON values."""
    try:
        result = client.query(sql, settings=READ_ONLY)
    except Exception as exc:
        text = str(exc)
        if "readonly" in text.lower() or "READONLY" in text:
            raise QueryError(f"{_READONLY_HINT} ({text.strip().splitlines()[0]})") from exc
        raise QueryError(text.strip()) from exc
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=[[_plain(v) for v in row] for row in result.result_rows],
    )


# Statements of one process on the embedded store it opens itself run one at a time.
_OWN_STORE = threading.Lock()


def run_query(settings: Settings, sql: str, timeout: float = 60.0) -> QueryResult:
    """Run ``sql`` read-only wherever the configured store is."""
    if not settings.embedded:
        return run_readonly(connect(settings), sql)
    lock = StoreLock(settings.home_path)
    with _OWN_STORE:  # flock is per open file: two threads here would lock each other out
        if lock.try_acquire():
            try:
                return run_readonly(connect(settings), sql)
            finally:
                lock.release()
    owner = lock.owner()
    if owner is None:
        raise StoreBusyError("the embedded store is locked but its owner published no address")
    who = f"the worker owning the store (pid {owner.pid}, {owner.host}:{owner.port})"
    pinned = settings.query.tls_certfile  # the certificate is enough here, not its key
    if (owner.scheme == "https") != bool(pinned):
        raise QueryError(
            f"{who} answers HTTPS: set [query] tls_certfile here to its certificate (pinned)"
            if owner.scheme == "https" else
            f"{who} answers plain HTTP, but [query] tls_certfile is set here: give the "
            "worker its TLS settings, or unset it here (no query is sent in the clear then)")
    try:
        client = owner_client(owner, settings.clickhouse.database, timeout,
                              tls_certfile=pinned)
    except Exception as exc:  # refused, timed out, or a stale owner file
        raise QueryError(f"could not query {who}: {exc}") from exc
    try:
        return run_readonly(client, sql)
    finally:
        client.close()


def owner_client(owner: OwnerInfo, database: str, timeout: float = 60.0, *,
                 tls_certfile: str = "") -> Any:
    """clickhouse-connect's HTTP client on the owner's ClickHouse HTTP interface; HTTPS
    pinned to the certificate in ``tls_certfile`` when one is given."""
    import clickhouse_connect

    tls: dict[str, Any] = {}
    if tls_certfile:
        import urllib3

        tls = {"interface": "https", "pool_mgr": urllib3.PoolManager(
            cert_reqs="CERT_NONE", assert_fingerprint=certificate_fingerprint(tls_certfile),
            maxsize=4, retries=1)}
    return clickhouse_connect.get_client(
        host=owner.host, port=owner.port, username=owner.user, password=owner.password,
        database=database, connect_timeout=min(timeout, 10.0),
        send_receive_timeout=timeout, autogenerate_session_id=False, query_retries=0, **tls,
    )


def certificate_fingerprint(certfile: str) -> str:
    """The sha256 fingerprint (hex) of the first certificate in a PEM file: the server's
    own, which the chain starts with."""
    text = Path(certfile).read_text(encoding="ascii")
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise ValueError(f"no PEM certificate in {certfile}")
    der = ssl.PEM_cert_to_DER_cert(text[start:end + len("-----END CERTIFICATE-----")])
    return hashlib.sha256(der).hexdigest()


def format_result(result: QueryResult, fmt: str = "table") -> str:
    """Render as an aligned ``table``, ``csv``, ``json`` (array of objects) or ``jsonl``."""
    if fmt == "json":
        return json.dumps([_record(result, r) for r in result.rows], indent=2)
    if fmt == "jsonl":
        return "\n".join(json.dumps(_record(result, r)) for r in result.rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return out.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [len(c) for c in result.columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join("-" * w for w in widths)
    head = "  ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([head, line, *body, f"({len(cells)} row{'s' if len(cells) != 1 else ''})"])


def _record(result: QueryResult, row: list[Any]) -> dict[str, Any]:
    return dict(zip(result.columns, row, strict=True))


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
