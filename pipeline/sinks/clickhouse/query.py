"""The read-only SQL path behind ``inferwatch query``.

Three cases, one result type: a ClickHouse server DSN (query it directly), the
embedded store while a worker owns it (ask the owner over loopback), the embedded
store while nobody runs (open it ourselves). Every statement runs with
``readonly=2``: writes and DDL are refused by the engine itself.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from pipeline.config import Settings
from pipeline.sinks.clickhouse.client import READ_ONLY, connect
from pipeline.sinks.clickhouse.owner import QueryResult, StoreBusyError, StoreLock

__all__ = ["QueryError", "format_result", "run_query", "run_readonly"]

_READONLY_HINT = "the query path is read-only: writes and DDL are refused"


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


def run_query(settings: Settings, sql: str, timeout: float = 60.0) -> QueryResult:
    """Run ``sql`` read-only wherever the configured store is."""
    if not settings.embedded:
        return run_readonly(connect(settings), sql)
    lock = StoreLock(settings.home_path)
    if lock.try_acquire():
        try:
            return run_readonly(connect(settings), sql)
        finally:
            lock.release()
    owner = lock.owner()
    if owner is None:
        raise StoreBusyError("the embedded store is locked but its owner published no address")
    request = urllib.request.Request(
        f"http://127.0.0.1:{owner.port}/query",
        data=json.dumps({"sql": sql}).encode(),
        headers={"Authorization": f"Bearer {owner.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return msgspec.json.decode(response.read(), type=QueryResult)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]
        except (ValueError, KeyError):
            message = f"HTTP {exc.code}"
        raise QueryError(message) from exc
    except urllib.error.URLError as exc:
        who = f"the worker owning the store (pid {owner.pid})"
        raise QueryError(f"{who} did not answer: {exc}") from exc


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
