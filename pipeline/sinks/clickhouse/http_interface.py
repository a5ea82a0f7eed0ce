"""The embedded store's ClickHouse HTTP interface: read-only SQL for any ClickHouse client.

The sink process owns the chDB store; this aiohttp app answers the part of ClickHouse's
HTTP interface that clickhouse-connect, clickhouse-go (Grafana's ClickHouse data source in
HTTP mode) and curl use, so they connect with ``host``, ``port``, ``user`` and
``password`` as they would to a ClickHouse server:

- ``GET /ping`` (and ``/replicas_status``) → ``Ok.``: the health check, the only paths
  answered without credentials (they say nothing but ``Ok.`` and never reach the engine);
- ``GET /`` and ``POST /`` with the statement in the ``query``
  URL parameter, the body, or both (joined by a newline, as ClickHouse does), or in a
  multipart form field (with ``param_*`` fields); credentials are required, even for an
  empty statement;
- ``FORMAT x`` in the statement, else ``default_format`` (parameter or
  ``X-ClickHouse-Format`` header), else ``TabSeparated``; ``database`` (parameter or
  ``X-ClickHouse-Database``), the configured database by default; ``param_x`` for
  ``{x:Type}`` placeholders;
- credentials by HTTP basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers, or
  ``user``/``password`` parameters;
- any other parameter is an engine setting (``max_execution_time``, ``output_format_*``,
  ``date_time_output_format`` …), transport and session ones are ignored, ``readonly``
  cannot be lowered, and the per-query limits (``[query] max_*``: execution time, memory,
  result rows and bytes) can be lowered, never raised;
- HTTPS when ``[query] tls_certfile`` and ``tls_keyfile`` are both set (TLS 1.2 or later);
- ``enable_http_compression=1`` with ``Accept-Encoding`` gzip, deflate, br, zstd or lz4
  (not ClickHouse's own block compression, ``compress=1``);
- Native framed for the ``client_protocol_version`` clickhouse-go sends
  (:mod:`pipeline.sinks.clickhouse.native_protocol`);
- answers carry ``X-ClickHouse-Query-Id``, ``-Format``, ``-Timezone``, ``-Summary`` and
  ``-Server-Display-Name``; errors are ClickHouse's ``Code: N. DB::Exception: …`` text
  with ``X-ClickHouse-Exception-Code`` and a 4xx/5xx status.

What runs and what is refused is :mod:`pipeline.sinks.clickhouse.readonly_engine`'s job.
Results are built in memory before they are sent (no streaming, no progress headers);
the limits bound that memory. Every statement (run, refused or failed) is recorded in the
audit trail (:mod:`pipeline.audit`, action ``query.run``) with its user, text, rows and
duration; a request with wrong credentials is recorded without its statement.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import json
import logging
import os
import secrets
import socket
import ssl
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import chdb
import cramjam
from aiohttp import web

from pipeline.audit import Auditor, statement_detail
from pipeline.config import QuerySettings, Settings
from pipeline.sinks.clickhouse.readonly_engine import (
    TRANSPORT_PARAMS,
    EngineError,
    Limits,
    Outcome,
    Statement,
    execute,
)

__all__ = ["Endpoint", "HttpInterface", "TlsError", "serve_http", "tls_context"]

log = logging.getLogger(__name__)

_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: zlib.compress(b, wbits=31),
    "deflate": zlib.compress,
    "br": lambda b: bytes(cramjam.brotli.compress(b)),
    "zstd": lambda b: bytes(cramjam.zstd.compress(b)),
    "lz4": lambda b: bytes(cramjam.lz4.compress(b)),  # the LZ4 frame format
}

# ClickHouse's HTTP status per exception code (HTTPHandler's mapping, the codes chDB meets).
_STATUS = {
    516: 401, 192: 401, 193: 401, 194: 401,  # authentication
    164: 403,  # READONLY
    6: 400, 26: 400, 27: 400, 36: 400, 53: 400, 62: 400, 69: 400,  # parse, syntax, args
    46: 404, 47: 404, 50: 404, 56: 404, 60: 404, 63: 404, 73: 404, 81: 404, 115: 404,
    159: 408,  # TIMEOUT_EXCEEDED
    48: 501,  # NOT_IMPLEMENTED
}
_TRUE = {"1", "true", "True"}


@dataclass(frozen=True)
class Endpoint:
    """Where clients reach the endpoint, and with which credentials."""

    host: str
    port: int
    user: str
    password: str
    scheme: str = "http"  # https with [query] tls_certfile and tls_keyfile


class TlsError(ValueError):
    """The endpoint's TLS settings cannot be used; the message names them."""


def tls_context(query: QuerySettings) -> ssl.SSLContext | None:
    """The server's TLS context from ``tls_certfile`` and ``tls_keyfile`` (None: neither
    set, plain HTTP). One without the other, or files that do not load, raise TlsError."""
    cert, key = query.tls_certfile, query.tls_keyfile
    if not cert and not key:
        return None
    if not (cert and key):
        given, missing = ("tls_certfile", "tls_keyfile") if cert else ("tls_keyfile",
                                                                          "tls_certfile")
        raise TlsError(f"[query] {given} is set but {missing} is not: HTTPS needs both PEM "
                       "files (the certificate chain and its private key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"[query] tls_certfile {cert!r} / tls_keyfile {key!r} cannot be "
                       f"loaded: {exc}") from exc
    return context


class HttpInterface:
    """The request handling; ``path`` is the chDB data directory the sink opened.

    ``audit`` records every statement (None: an :class:`~pipeline.audit.Auditor` that
    publishes to the audit topic, when ``audit.enabled``)."""

    def __init__(self, path: str, settings: Settings, password: str,
                 concurrency: int = 4, audit: Auditor | None = None) -> None:
        self.path = path
        self.user = settings.query.user
        self.password = password
        self.database = settings.clickhouse.database
        self.limits = Limits.of(settings.query)
        self.audit = audit if audit is not None else Auditor(settings, "query")
        self.display_name = socket.gethostname()
        self._slots = asyncio.Semaphore(concurrency)
        self._content_types: dict[str, str] = {}
        self._keeper: Any = None
        self.version = ""
        self.timezone = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("GET", "/ping", self.ping)
        app.router.add_route("GET", "/replicas_status", self.ping)
        app.router.add_route("GET", "/", self.query)
        app.router.add_route("POST", "/", self.query)
        app.on_startup.append(self._describe_engine)
        app.on_startup.append(lambda _app: self.audit.start())
        app.on_cleanup.append(lambda _app: self.audit.close())
        app.on_cleanup.append(self._release_engine)
        return app

    async def _describe_engine(self, _app: web.Application) -> None:
        """Open the handle that keeps the engine up for as long as we serve, and learn
        the version, time zone and output formats from it.

        Each statement opens and closes a handle of its own; were it the last one, the
        engine would start and stop each time, and chDB leaks threads doing that."""
        def describe() -> None:
            self._keeper = handle = chdb.connect(os.path.realpath(self.path))
            self.version, self.timezone = handle.query(
                "SELECT version(), timezone()", "TabSeparated").bytes().decode().split()
            rows = handle.query("SELECT name, content_type FROM system.formats "
                                "WHERE is_output", "JSONEachRow").bytes().splitlines()
            for row in map(json.loads, rows):
                self._content_types[row["name"].lower()] = row["content_type"]
        await asyncio.to_thread(describe)

    async def _release_engine(self, _app: web.Application) -> None:
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None

    async def ping(self, _request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def query(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        query_id = params.get("query_id") or str(uuid.uuid4())
        started = time.perf_counter()
        sql, user = "", None
        try:
            sql, form = await self._sql(request, params)
            params.update(form)
            user = self._authenticate(request, params)
            if not sql.strip():
                return web.Response(text="Ok.\n")  # GET / with no query: ClickHouse's "Ok."
            statement = self._statement(request, params, sql)
            async with self._slots:
                outcome = await asyncio.to_thread(execute, self.path, statement)
        except EngineError as exc:
            self._record(request, params, query_id, started, sql, user, error=exc)
            return self._error(exc, query_id)
        self._record(request, params, query_id, started, sql, user, outcome=outcome)
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Format": outcome.fmt,
            "X-ClickHouse-Timezone": self.timezone,
            "X-ClickHouse-Server-Display-Name": self.display_name,
            "X-ClickHouse-Summary": json.dumps({
                "read_rows": str(outcome.read_rows), "read_bytes": str(outcome.read_bytes),
                "written_rows": "0", "written_bytes": "0",
                "total_rows_to_read": str(outcome.read_rows),
                "result_rows": str(outcome.result_rows),
                "result_bytes": str(outcome.result_bytes),
                "elapsed_ns": str(outcome.elapsed_ns)}),
            "Content-Type": self._content_types.get(outcome.fmt.lower(),
                                                    "text/plain; charset=UTF-8"),
        }
        body = outcome.body
        encoding = _encoding(request.headers.get("Accept-Encoding", ""))
        if encoding and params.get("enable_http_compression") in _TRUE:
            body = await asyncio.to_thread(_ENCODERS[encoding], body)
            headers["Content-Encoding"] = encoding
        return web.Response(body=body, headers=headers)

    async def _sql(self, request: web.Request,
                   params: dict[str, str]) -> tuple[str, dict[str, str]]:
        """The statement (URL ``query`` + body) and any form fields sent with it."""
        url_sql = params.get("query", "")
        if request.method != "POST":
            return url_sql, {}
        if request.content_type == "multipart/form-data":  # not urlencoded: curl -d sends
            fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            return fields.pop("query", url_sql), fields
        raw = await request.read()  # the runner does not decompress: we do, here
        coding = request.headers.get("Content-Encoding", "").lower()
        try:
            if coding in ("gzip", "deflate"):
                raw = zlib.decompress(raw, wbits=47)
            elif coding in ("zstd", "br", "lz4"):
                raw = bytes({"zstd": cramjam.zstd, "br": cramjam.brotli,
                             "lz4": cramjam.lz4}[coding].decompress(raw))
            elif coding not in ("", "identity"):
                raise EngineError(48, f"Unknown Content-Encoding {coding}. (NOT_IMPLEMENTED)")
            body = raw.decode("utf-8")
        except (zlib.error, cramjam.DecompressionError, UnicodeDecodeError) as exc:
            raise EngineError(27, f"Cannot read the request body: {exc}. "
                                  "(CANNOT_PARSE_INPUT_ASSERTION_FAILED)") from exc
        return (f"{url_sql}\n{body}" if url_sql and body else url_sql or body), {}

    def _authenticate(self, request: web.Request, params: dict[str, str]) -> str:
        """The user, when the credentials are right; else AUTHENTICATION_FAILED with the
        name the client gave on the error (``.user``)."""
        user, password = "default", ""
        header = request.headers.get("Authorization", "")
        if "X-ClickHouse-User" in request.headers:
            user = request.headers["X-ClickHouse-User"]
            password = request.headers.get("X-ClickHouse-Key", "")
        elif header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = ""
        elif "user" in params:
            user, password = params["user"], params.get("password", "")
        if not (secrets.compare_digest(user.encode(), self.user.encode())
                & secrets.compare_digest(password.encode(), self.password.encode())):
            error = EngineError(516, f"{user}: Authentication failed: password is incorrect, "
                                     "or there is no user with such name. "
                                     "(AUTHENTICATION_FAILED)")
            error.user = user  # type: ignore[attr-defined]
            raise error
        return user

    def _record(self, request: web.Request, params: dict[str, str], query_id: str,
                started: float, sql: str, user: str | None, *,
                outcome: Outcome | None = None, error: EngineError | None = None) -> None:
        """One ``query.run`` event in the audit trail: who, what, how much, how long."""
        detail: dict[str, object] = {
            "query_id": query_id,
            "duration_ms": f"{(time.perf_counter() - started) * 1000:.1f}",
            "remote": request.remote or "",
            "client": request.headers.get("User-Agent", "")[:256],
        }
        if user is not None:  # wrong credentials: the statement is not theirs to record
            detail.update(statement_detail(sql))
        if outcome is not None:
            detail.update(result_rows=outcome.result_rows, result_bytes=outcome.result_bytes,
                          read_rows=outcome.read_rows, format=outcome.fmt)
        if error is not None:
            detail.update(error_code=error.code, reason=str(error)[:1024])
        actor = user if user is not None else getattr(error, "user", "")
        self.audit.record(
            "query.run", params.get("database") or self.database, actor=actor,
            outcome="ok" if error is None else "refused" if error.refused else "failed",
            detail=detail)

    def _statement(self, request: web.Request, params: dict[str, str], sql: str) -> Statement:
        if params.get("readonly", "1").strip() in ("0", ""):
            raise EngineError(164, "Cannot modify 'readonly' setting in readonly mode. "
                                   "(READONLY)")
        if params.get("compress") in _TRUE:
            raise EngineError(48, "ClickHouse's native block compression (compress=1) is not "
                                  "implemented here; use HTTP compression (gzip, deflate, br, "
                                  "zstd). (NOT_IMPLEMENTED)")
        return Statement(
            sql=sql,
            fmt=params.get("default_format") or request.headers.get("X-ClickHouse-Format")
            or "TabSeparated",
            database=params.get("database") or request.headers.get("X-ClickHouse-Database")
            or self.database,
            settings={k: v for k, v in params.items()
                      if k not in TRANSPORT_PARAMS and not k.startswith("param_")},
            params={k.removeprefix("param_"): v for k, v in params.items()
                    if k.startswith("param_")},
            revision=int(params["client_protocol_version"])
            if params.get("client_protocol_version", "").isdigit() else 0,
            limits=self.limits,
        )

    def _error(self, exc: EngineError, query_id: str) -> web.Response:
        text = f"Code: {exc.code}. DB::Exception: {exc}"
        if "(version " not in text:
            text += f" (version {self.version})"
        return web.Response(
            status=_STATUS.get(exc.code, 500), text=text + "\n",
            headers={"X-ClickHouse-Exception-Code": str(exc.code),
                     "X-ClickHouse-Query-Id": query_id,
                     "X-ClickHouse-Server-Display-Name": self.display_name},
        )


def _encoding(accept: str) -> str | None:
    """The first encoding the client accepts (in its order) that we can produce."""
    for part in accept.split(","):
        name, _, quality = part.strip().partition(";")
        if name.strip().lower() in _ENCODERS and quality.replace(" ", "") != "q=0":
            return name.strip().lower()
    return None


async def serve_http(path: str, settings: Settings, audit: Auditor | None = None,
                     ) -> tuple[web.AppRunner, Endpoint]:
    """Serve the interface on ``settings.query.bind``/``port`` for the store at ``path``,
    over HTTPS when both TLS files are set (:func:`tls_context`; TlsError if unusable).

    An empty configured password becomes a random one. A configured port already in use
    (another ClickHouse on 8123, a second sink) falls back to any free port, loudly:
    ingestion matters more than a fixed query port, and the owner file names the port.
    ``audit``: where statements are recorded (default: the audit topic, see
    :class:`HttpInterface`).
    """
    context = tls_context(settings.query)
    password = settings.query.password or secrets.token_urlsafe(18)
    interface = HttpInterface(path, settings, password, audit=audit)
    runner = web.AppRunner(interface.app(), access_log=None, auto_decompress=False)
    await runner.setup()
    bind, port = settings.query.bind, settings.query.port
    try:
        await web.TCPSite(runner, bind, port, ssl_context=context).start()
    except OSError as exc:
        if port == 0 or exc.errno != errno.EADDRINUSE:
            await runner.cleanup()
            raise
        log.warning("port %d on %s is taken; the ClickHouse HTTP interface uses a free port "
                    "instead (see %s)", port, bind, "clickhouse.owner.json")
        await web.TCPSite(runner, bind, 0, ssl_context=context).start()
    port = runner.addresses[0][1]
    host = "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind
    return runner, Endpoint(host, port, settings.query.user, password,
                            "https" if context is not None else "http")
