"""Read-only statements on the embedded chDB engine, one fresh engine handle each.

The sink process owns the store (chDB allows one process per data directory), so the
ClickHouse HTTP interface runs its statements in that process, on handles of its own
(``chdb.connect`` on the same path shares the open engine; a handle costs well under a
millisecond). A fresh handle per statement means nothing one client ``SET`` reaches the
next client.

Each statement runs in three steps on its handle:

1. the client's settings (HTTP URL parameters) are applied with ``SET``;
2. ``SET readonly = 1``. chDB's one user has every grant, and ``readonly = 2`` still lets
   ``file()``, ``url()``, ``s3()`` and ``INSERT INTO FUNCTION file(...)`` read and write
   the host's files and network; ``readonly = 1`` refuses writes, DDL, ``SET``, table
   functions and temporary tables;
3. the statement itself, after :func:`refusal` turned away what chDB executes even at
   ``readonly = 1``: any statement but ``SELECT``/``WITH``/``SHOW``/``DESCRIBE``/
   ``EXISTS``/``EXPLAIN`` (``SYSTEM STOP MERGES``, ``KILL QUERY`` run), ``INTO OUTFILE``
   (chDB writes the file in-process), the scalar ``file()`` function (reads any file)
   and several statements in one request.

clickhouse-connect discovers which settings it may send from ``system.settings``: under
``readonly = 1`` every row says read-only and it would refuse its own defaults. Its exact
discovery statement therefore runs at ``readonly = 2`` (settings changeable, ``readonly``
itself not, no table involved), which is true of this endpoint: settings are welcome as
URL parameters.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import chdb

from pipeline.sinks.clickhouse.native_protocol import CUSTOM_SERIALIZATION, UnsupportedType, reframe

__all__ = ["DEFAULT_SETTINGS", "EngineError", "Outcome", "Statement", "execute", "refusal",
           "trailing_format"]

# Parameters of the HTTP interface that are not engine settings (transport, session,
# identity); they are consumed or ignored by the endpoint and never reach ``SET``.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress",
    "buffer_size", "wait_end_of_query", "client_protocol_version", "role",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "enable_http_compression", "http_zlib_compression_level", "http_response_buffer_size",
    "cancel_http_readonly_queries_on_client_close", "http_wait_end_of_query",
    "http_native_compression_disable_checksumming_on_decompress", "add_http_cors_header",
    "readonly",  # the endpoint is readonly=1, whatever a client asks (checked by the caller)
})

# Applied unless the client sends its own: a runaway statement (count() over
# system.numbers) would otherwise hold one of the endpoint's few slots, and the worker's
# shutdown, forever.
DEFAULT_SETTINGS = {"max_execution_time": "600"}

# clickhouse-connect's settings discovery, word for word (whitespace and case aside).
_SETTINGS_DISCOVERY = "select name, value, readonly from system.settings limit 10000"

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
# Comments, string literals and quoted identifiers, in the order the lexer meets them.
_LEXEMES = re.compile(
    r"--[^\n]*|#[^\n]*|/\*.*?\*/|'(?:[^'\\]|\\.|'')*'|\"((?:[^\"\\]|\\.)*)\"|`((?:[^`\\]|\\.)*)`",
    re.DOTALL,
)
_FILE_CALL = re.compile(r"\bfile\s*\(", re.IGNORECASE)
_FILE_CLAUSE = re.compile(r"\b(?:OUT|IN)FILE\b", re.IGNORECASE)
# The statements that only read. chDB executes some others even at readonly=1
# (SYSTEM STOP MERGES, KILL QUERY), so anything else is refused before the engine.
_READING = re.compile(r"^[\s(]*(?:SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b",
                      re.IGNORECASE)
# Formats chDB's Python binding turns into Python objects instead of bytes.
_PYTHON_FORMATS = frozenset({"dataframe", "arrowtable", "debug"})


class EngineError(Exception):
    """A refusal or an engine error, as ClickHouse words it (``Code: N. DB::Exception: …``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Statement:
    """One request's statement and what the HTTP layer parsed around it."""

    sql: str
    fmt: str = "TabSeparated"  # the default format; a FORMAT clause in ``sql`` wins
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # {name:Type} query parameters
    revision: int = 0  # client_protocol_version: the Native framing the client decodes


@dataclass(frozen=True)
class Outcome:
    body: bytes
    fmt: str
    read_rows: int
    read_bytes: int
    elapsed_ns: int


def trailing_format(sql: str) -> str | None:
    """The format named by a trailing ``FORMAT x`` clause, if any."""
    found = _TRAILING_FORMAT.search(_strip(sql).rstrip())
    return found.group(1) if found else None


def _strip(sql: str) -> str:
    """The statement with comments and string literals blanked and quoted identifiers
    unquoted, so the checks below see what the parser sees."""
    def blank(m: re.Match[str]) -> str:
        quoted = m.group(1) if m.group(1) is not None else m.group(2)
        return f" {quoted} " if quoted is not None else " '' "
    return _LEXEMES.sub(blank, sql)


def refusal(sql: str) -> EngineError | None:
    """Why the statement is refused before it reaches the engine, or None.

    >>> refusal("SELECT 'INTO OUTFILE' AS looks_like_it -- ; but is not") is None
    True
    >>> refusal("SELECT 1; DROP TABLE events").code
    62
    >>> refusal("SYSTEM SHUTDOWN").code
    164
    """
    bare = _strip(sql)
    if ";" in bare.rstrip().rstrip(";"):
        return EngineError(62, "Syntax error (Multi-statements are not allowed). (SYNTAX_ERROR)")
    if _FILE_CLAUSE.search(bare):
        return EngineError(164, "INTO OUTFILE and FROM INFILE are not allowed on the "
                                "embedded store's read-only endpoint. (READONLY)")
    if _FILE_CALL.search(bare):
        return EngineError(164, "The file() function is not allowed on the embedded store's "
                                "read-only endpoint. (READONLY)")
    if not bare.strip():
        return EngineError(62, "Empty query. (SYNTAX_ERROR)")
    if not _READING.match(bare):
        return EngineError(164, "Cannot execute query in readonly mode: the embedded "
                                "store's endpoint runs SELECT, WITH, SHOW, DESCRIBE, EXISTS "
                                "and EXPLAIN only. (READONLY)")
    return None


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _error(exc: Exception) -> EngineError:
    text = str(exc).strip()
    start = text.rfind("Code: ")
    text = text[start:] if start >= 0 else text
    found = re.match(r"Code: (\d+)\. (?:DB::Exception: )?", text)
    code = int(found.group(1)) if found else 1002
    return EngineError(code, text[found.end():] if found else text)


def execute(path: str, statement: Statement) -> Outcome:
    """Run one statement read-only on a fresh handle of the engine at ``path``.

    Blocking (call it in a worker thread). Raises :class:`EngineError`.
    """
    refused = refusal(statement.sql)
    if refused is not None:
        raise refused
    if statement.fmt.lower() in _PYTHON_FORMATS or not _SETTING_NAME.match(statement.fmt):
        raise EngineError(73, f"Unknown format {statement.fmt}. (UNKNOWN_FORMAT)")
    sql = statement.sql.strip().rstrip(";")
    discovery = " ".join(_strip(sql).split()).lower().removesuffix(" format native").strip()
    handle = chdb.connect(os.path.realpath(path))
    try:
        try:
            if statement.database:
                handle.query(f"USE `{statement.database.replace('`', '')}`", "TabSeparated")
            for name, value in {**DEFAULT_SETTINGS, **statement.settings}.items():
                if not _SETTING_NAME.match(name):
                    raise EngineError(115, f"Unknown setting '{name}'. (UNKNOWN_SETTING)")
                handle.query(f"SET {name} = {_quote(value)}", "TabSeparated")
            level = 2 if discovery == _SETTINGS_DISCOVERY else 1
            handle.query(f"SET readonly = {level}", "TabSeparated")
            result = handle.query(sql, statement.fmt, params=statement.params)
        except EngineError:
            raise
        except Exception as exc:  # chDB raises RuntimeError with ClickHouse's text
            raise _error(exc) from exc
        fmt = trailing_format(sql) or statement.fmt
        body = result.bytes() or b""
        if fmt == "Native" and statement.revision >= CUSTOM_SERIALIZATION:
            try:  # clickhouse-go; clickhouse-connect asks for less and takes revision 0
                body = reframe(body, statement.revision)
            except UnsupportedType as exc:
                raise EngineError(48, f"{exc}. (NOT_IMPLEMENTED)") from exc
        return Outcome(
            body=body,
            fmt=fmt,
            read_rows=int(result.rows_read()),
            read_bytes=int(result.bytes_read()),
            elapsed_ns=int(result.elapsed() * 1e9),
        )
    finally:
        handle.close()
