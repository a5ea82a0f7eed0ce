"""Read-only statements on the embedded chDB engine, one fresh engine handle each.

The sink process owns the store (chDB allows one process per data directory), so the
ClickHouse HTTP interface runs its statements in that process, on handles of its own
(``chdb.connect`` on the same path shares the open engine; a handle costs well under a
millisecond). A fresh handle per statement means nothing one client ``SET`` reaches the
next client.

Each statement runs in four steps on its handle:

1. the client's settings (HTTP URL parameters) are applied with ``SET``;
2. the endpoint's per-query limits (:class:`Limits`, ``[query] max_*``): execution time,
   memory, result rows and result bytes, each the configured value or a lower one the
   client asked for (never higher: a higher or unlimited ``0`` is capped), with
   ``timeout_overflow_mode`` and ``result_overflow_mode`` set to ``throw``. The engine
   enforces them as it runs (between blocks of rows): a statement past a limit stops
   with ClickHouse's own error (``TIMEOUT_EXCEEDED``, ``MEMORY_LIMIT_EXCEEDED``,
   ``TOO_MANY_ROWS_OR_BYTES``), to which :func:`explain_limit` adds the setting and its
   value;
3. ``SET readonly = 1``. chDB's one user has every grant, and ``readonly = 2`` still lets
   ``file()``, ``url()``, ``s3()`` and ``INSERT INTO FUNCTION file(...)`` read and write
   the host's files and network; ``readonly = 1`` refuses writes, DDL, ``SET``, table
   functions and temporary tables;
4. the statement itself, after :func:`refusal` turned away what chDB executes even at
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

from pipeline.config import QuerySettings
from pipeline.sinks.clickhouse.native_protocol import CUSTOM_SERIALIZATION, UnsupportedType, reframe
from pipeline.sinks.clickhouse.sql import literal

__all__ = ["LIMIT_CODES", "EngineError", "Limits", "Outcome", "Statement", "execute",
           "explain_limit", "refusal", "trailing_format"]

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

# The engine settings of the per-query limits, and the [query] setting behind each.
_LIMITS = {
    "max_execution_time": "max_execution_seconds",
    "max_memory_usage": "max_memory_bytes",
    "max_result_rows": "max_result_rows",
    "max_result_bytes": "max_result_bytes",
}
# A limit reached raises, never truncates: a client must not take a cut result for all.
_OVERFLOW = {"timeout_overflow_mode": "throw", "result_overflow_mode": "throw"}
# clickhouse-connect's settings discovery (below) reads ~2,000 rows; its own LIMIT bounds
# it, so the result limits never go below this for it (a client must be able to connect).
_DISCOVERY_RESULT = {"max_result_rows": 10_000, "max_result_bytes": 16 << 20}
# ClickHouse's codes for a limit reached: the statement was stopped, not broken.
LIMIT_CODES = frozenset({159, 241, 396})
# Refused by policy: a limit, read-only (READONLY), credentials (AUTHENTICATION_FAILED).
_REFUSED_CODES = LIMIT_CODES | {164, 516}

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
    """A refusal or an engine error, as ClickHouse words it (``Code: N. DB::Exception: …``).

    ``refused``: the endpoint's policy said no (credentials, read-only, a limit), as
    opposed to a statement that failed (a syntax error, an unknown table)."""

    def __init__(self, code: int, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.refused = refused or code in _REFUSED_CODES


@dataclass(frozen=True)
class Limits:
    """The endpoint's per-query limits, as engine settings.

    >>> from pipeline.config import QuerySettings
    >>> limits = Limits.of(QuerySettings(max_execution_seconds=30, max_result_rows=1000))
    >>> s = limits.applied({"max_execution_time": "5", "max_result_rows": "0"})
    >>> s["max_execution_time"], s["max_result_rows"], s["result_overflow_mode"]
    ('5', '1000', 'throw')
    >>> limits.applied({"max_execution_time": "3600"})["max_execution_time"]
    '30'
    """

    max_execution_time: float
    max_memory_usage: int
    max_result_rows: int
    max_result_bytes: int

    @classmethod
    def of(cls, query: QuerySettings) -> Limits:
        return cls(query.max_execution_seconds, query.max_memory_bytes,
                   query.max_result_rows, query.max_result_bytes)

    def applied(self, asked: dict[str, str]) -> dict[str, str]:
        """The limit settings a statement runs under: ours, or the client's lower ones."""
        out = {}
        for name in _LIMITS:
            cap = getattr(self, name)
            value = cap
            if name in asked:
                try:
                    wanted = float(asked[name])
                except ValueError:
                    raise EngineError(72, f"Cannot parse {name} = {asked[name]!r} as a "
                                          "number. (CANNOT_PARSE_NUMBER)") from None
                if 0 < wanted < cap:  # 0 is ClickHouse's "unlimited": capped too
                    value = wanted if isinstance(cap, float) else int(wanted)
            out[name] = _number(value)
        return {**out, **_OVERFLOW}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def explain_limit(exc: EngineError, applied: dict[str, str], limits: Limits) -> EngineError:
    """The engine's error for a limit reached, naming the setting and its value.

    >>> limits = Limits(30.0, 1 << 30, 1000, 1 << 20)
    >>> err = EngineError(396, "Limit for result exceeded, max rows: 1.00 thousand, "
    ...                        "current rows: 65.41 thousand. (TOO_MANY_ROWS_OR_BYTES)")
    >>> print(explain_limit(err, limits.applied({}), limits))
    Limit for result exceeded, max rows: 1.00 thousand, current rows: 65.41 thousand; \
the endpoint's limit max_result_rows = 1000 ([query] max_result_rows). \
(TOO_MANY_ROWS_OR_BYTES)
    """
    text = str(exc)
    if exc.code == 159:
        name = "max_execution_time"
    elif exc.code == 241 and "query memory limit" in text.lower():
        name = "max_memory_usage"
    elif exc.code == 396:
        name = "max_result_bytes" if "max bytes" in text else "max_result_rows"
    else:
        return exc
    value = applied[name]
    unit = " s" if name == "max_execution_time" else ""
    own = _number(getattr(limits, name))
    why = (f"the endpoint's limit {name} = {value}{unit} ([query] {_LIMITS[name]})"
           if value == own else
           f"{name} = {value}{unit} as the client asked (the endpoint allows at most "
           f"{own}{unit}, [query] {_LIMITS[name]})")
    head, found, tail = text.rpartition(" (")
    head = head.rstrip().rstrip(".") if found else text.rstrip().rstrip(".")
    text = f"{head}; {why}." + (f" ({tail}" if found else "")
    return EngineError(exc.code, text, refused=True)


@dataclass(frozen=True)
class Statement:
    """One request's statement and what the HTTP layer parsed around it."""

    sql: str
    fmt: str = "TabSeparated"  # the default format; a FORMAT clause in ``sql`` wins
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # {name:Type} query parameters
    revision: int = 0  # client_protocol_version: the Native framing the client decodes
    limits: Limits = field(kw_only=True)  # the endpoint's: never a statement without them


@dataclass(frozen=True)
class Outcome:
    body: bytes
    fmt: str
    read_rows: int  # rows and bytes the engine read from storage
    read_bytes: int
    elapsed_ns: int
    result_rows: int = 0  # rows and (uncompressed) bytes of the result
    result_bytes: int = 0


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
        return EngineError(62, "Syntax error (Multi-statements are not allowed). (SYNTAX_ERROR)",
                           refused=True)
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


def _size(n: int) -> str:
    """Bytes as ClickHouse writes them in its limit errors.

    >>> _size(1 << 20), _size(5000500)
    ('1.00 MiB', '4.77 MiB')
    """
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


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
    limits = statement.limits
    applied = limits.applied(statement.settings)
    if discovery == _SETTINGS_DISCOVERY:
        for name, floor in _DISCOVERY_RESULT.items():
            applied[name] = str(max(int(applied[name]), floor))
    handle = chdb.connect(os.path.realpath(path))
    try:
        try:
            if statement.database:
                handle.query(f"USE `{statement.database.replace('`', '')}`", "TabSeparated")
            for name, value in {**statement.settings, **applied}.items():
                if not _SETTING_NAME.match(name):
                    raise EngineError(115, f"Unknown setting '{name}'. (UNKNOWN_SETTING)")
                handle.query(f"SET {name} = {literal(value)}", "TabSeparated")
            level = 2 if discovery == _SETTINGS_DISCOVERY else 1
            handle.query(f"SET readonly = {level}", "TabSeparated")
            result = handle.query(sql, statement.fmt, params=statement.params)
        except EngineError:
            raise
        except Exception as exc:  # chDB raises RuntimeError with ClickHouse's text
            error = _error(exc)
            raise explain_limit(error, applied, limits) from exc
        fmt = trailing_format(sql) or statement.fmt
        body = result.bytes() or b""
        if fmt == "Native" and statement.revision >= CUSTOM_SERIALIZATION:
            try:  # clickhouse-go; clickhouse-connect asks for less and takes revision 0
                body = reframe(body, statement.revision)
            except UnsupportedType as exc:
                raise EngineError(48, f"{exc}. (NOT_IMPLEMENTED)") from exc
        if len(body) > int(applied["max_result_bytes"]):
            # The engine counts a block's bytes in memory, where a constant column is one
            # value: SELECT repeat('x', 10000) FROM numbers(500) passes its check at 20 KB
            # and formats to 5 MB. The limit is on what the client receives, so: here too.
            cap = _size(int(applied["max_result_bytes"]))
            raise explain_limit(EngineError(
                396, f"Limit for result exceeded, max bytes: {cap}, current bytes: "
                     f"{_size(len(body))} (the formatted result). (TOO_MANY_ROWS_OR_BYTES)"),
                applied, limits)
        return Outcome(  # chDB's rows_read / bytes_read are the result's
            body=body,
            fmt=fmt,
            read_rows=int(result.storage_rows_read()),
            read_bytes=int(result.storage_bytes_read()),
            elapsed_ns=int(result.elapsed() * 1e9),
            result_rows=int(result.rows_read()),
            result_bytes=int(result.bytes_read()),
        )
    finally:
        handle.close()
