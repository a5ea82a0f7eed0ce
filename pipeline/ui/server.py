"""The dashboard's HTTP server: pages, JSON endpoints, live updates, silences.

``inferwatch ui`` runs this aiohttp app in its own process. It reads the store through
the query path (:func:`pipeline.sinks.clickhouse.query.run_query`: the embedded store's
owner over loopback, or a ClickHouse server), follows the silences topic, and pushes
closed windows, scores and alert transitions to the browser as server-sent events
(:mod:`pipeline.ui.live`). Every route asks for the query endpoint's credentials (HTTP
basic auth): ``[query] user`` and ``password``, or, when the password is empty, the
random one the store's owner publishes in ``<home>/clickhouse.owner.json``.

The dashboard's actions go to the audit trail (:mod:`pipeline.audit`, source ``ui``, the
actor being the HTTP user): silences added and expired, and statements run from the
Query page (a worker's query endpoint records them again, as ``query``).

Routes: ``/`` (Overview), ``/series``, ``/alerts``, ``/query`` (pages, static HTML),
``/api/overview``, ``/api/series``, ``/api/alerts``, ``/api/silences`` (GET, POST),
``/api/silences/{id}/expire`` (POST), ``/api/query`` (POST), ``/api/live`` (SSE),
``/static/…``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from pipeline.audit import Auditor, failure_reason, silence_detail, statement_detail
from pipeline.config import Settings
from pipeline.ui import queries
from pipeline.ui.live import Hub, finite, sse_frame

if TYPE_CHECKING:
    from schemas.alert import Silence

__all__ = ["Credentials", "SilenceBook", "make_app"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PAGES = {"/": "overview.html", "/series": "series.html", "/alerts": "alerts.html",
         "/query": "query.html"}
MAX_QUERY_ROWS = 10_000
HEARTBEAT_SECONDS = 15.0


@dataclass
class Credentials:
    """Who may look: the query endpoint's user and password.

    ``password`` empty: the owner's current one is read from its file on each check (it
    changes when the worker restarts); ``fallback`` is used when there is no owner file
    either (a random password printed at start).
    """

    user: str
    password: str = ""
    owner_file: Path | None = None
    fallback: str = ""

    def current(self) -> tuple[str, str]:
        if self.password:
            return self.user, self.password
        if self.owner_file is not None:
            from pipeline.sinks.clickhouse.owner import StoreLock

            owner = StoreLock(self.owner_file.parent).owner()
            if owner is not None:
                return owner.user, owner.password
        return self.user, self.fallback

    def check(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        want_user, want_password = self.current()
        if not want_password:
            return False  # never an open dashboard by accident
        return (secrets.compare_digest(user.encode(), want_user.encode())
                and secrets.compare_digest(password.encode(), want_password.encode()))


class SilenceBook:
    """The silences as the page sees them: read from the compacted topic, written to it
    exactly as ``inferwatch silence add/expire`` does."""

    def __init__(self, settings: Settings) -> None:
        from pipeline.alerting.silences import Silences

        self.settings = settings
        self.store = Silences()

    async def follow(self, stop: asyncio.Event | None = None) -> None:
        from pipeline.runtime.alerting import read_silences

        while True:  # the topic may not exist yet, or the broker may be away: retry
            try:
                await read_silences(self.settings, self.store, stop=stop, follow=True)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading the silences topic failed (%s); retrying in 5 s", exc)
                await asyncio.sleep(5.0)

    def listing(self) -> list[dict[str, Any]]:
        now = time.time()
        return [{**msgspec.to_builtins(s), "active": s.starts_at <= now < s.ends_at}
                for s in reversed(self.store.all())]

    async def add(self, item: Silence) -> None:
        """Publish a new silence (from :func:`~pipeline.alerting.silences.new_silence`)."""
        from pipeline.runtime.alerting import publish_silence

        await publish_silence(self.settings, item)
        self.store.add(item)

    async def expire(self, silence_id: str) -> Silence:
        from pipeline.runtime.alerting import publish_silence

        expired = self.store.expire(silence_id, time.time())
        await publish_silence(self.settings, expired)
        return expired


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; ValueError (a 400 saying why) for anything else."""
    body = await request.json()  # not JSON: a ValueError already
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def same_origin(request: web.Request) -> bool:
    """The request's ``Origin`` (when the browser sent one) is the dashboard itself."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request (curl, scripts)
    return origin.split("://", 1)[-1] == request.headers.get("Host", "")


def _records(result: Any) -> list[dict[str, Any]]:
    return [finite(dict(zip(result.columns, row, strict=True))) for row in result.rows]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(finite(data)), status=status,
                        content_type="application/json")


def make_app(query: Callable[[str], Any], *, hub: Hub, credentials: Credentials,
             silences: SilenceBook | None = None, max_concurrent: int = 4,
             audit: Auditor | None = None) -> web.Application:
    """The app. ``query(sql)`` runs one read-only statement and returns a ``QueryResult``
    (blocking: it runs in a thread, at most ``max_concurrent`` at once). ``audit`` records
    the actions (None: not recorded)."""
    gate = asyncio.Semaphore(max_concurrent)

    def record(request: web.Request, action: str, target: str, outcome: Any = "ok",
               **detail: Any) -> None:
        if audit is not None:
            audit.record(action, target, actor=credentials.current()[0], outcome=outcome,
                         detail={**detail, "remote": request.remote or ""})

    async def run(sql: str) -> list[dict[str, Any]]:
        async with gate:
            return _records(await asyncio.to_thread(query, sql))

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if not credentials.check(request.headers.get("Authorization")):
            return web.Response(status=401, text="authentication required",
                                headers={"WWW-Authenticate": 'Basic realm="InferWatch"'})
        if request.method != "GET" and not same_origin(request):
            # browsers send basic-auth credentials cross-site too: a write (silences)
            # must come from the dashboard's own pages
            return web.Response(status=403, text="cross-origin request refused")
        try:
            return await handler(request)
        except (ValueError, KeyError) as exc:
            return _json({"error": str(exc)}, status=400)
        except web.HTTPException:
            raise
        except Exception as exc:  # the store said no (QueryError) or is unreachable
            log.warning("request %s failed: %s", request.path, exc)
            return _json({"error": str(exc)}, status=502)

    def page(name: str) -> Callable[[web.Request], Any]:
        async def handler(_: web.Request) -> web.FileResponse:
            return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
        return handler

    async def overview(request: web.Request) -> web.Response:
        q = request.query
        seconds = queries.parse_range(q.get("range", "15m"))
        rows = await run(queries.overview(
            seconds, sort=q.get("sort", "requests_per_s"), descending=q.get("desc", "1") != "0",
            label_filter=q.get("filter", ""), page=int(q.get("page", "0")),
            size=int(q.get("size", "50"))))
        total = rows[0]["total"] if rows else 0
        spark = {r["series_key"]: r["spark"] for r in await run(
            queries.sparklines([r["series_key"] for r in rows], seconds))} if rows else {}
        for r in rows:
            r.pop("total", None)
            r["spark"] = spark.get(r["series_key"], [])
        return _json({"rows": rows, "total": total})

    async def series(request: web.Request) -> web.Response:
        key = request.query["key"]
        seconds = queries.parse_range(request.query.get("range", "1h"))
        found = await run(queries.series_labels(key))
        labels = found[0]["labels"] if found else {}
        metrics, drift, anomaly, resources = await asyncio.gather(
            run(queries.series_metrics(key, labels, seconds)),
            run(queries.series_drift(key, seconds)),
            run(queries.series_anomaly(key, seconds)),
            run(queries.series_resources(labels, seconds)))
        source = ("window_metrics" if seconds <= queries.WINDOW_RANGE_MAX
                  else "rollup_1m" if seconds <= 86400 else "rollup_1h")
        return _json({"series_key": key, "labels": labels, "source": source,
                      "metrics": metrics, "drift": drift, "anomaly": anomaly,
                      "resources": resources})

    async def alerts(request: web.Request) -> web.Response:
        seconds = queries.parse_range(request.query.get("range", "24h"))
        rows = await run(queries.alert_timeline(seconds, request.query.get("filter", "")))
        return _json({"rows": rows})

    async def silence_list(_: web.Request) -> web.Response:
        if silences is None:
            return _json({"silences": [], "error": "silences are not available"})
        return _json({"silences": silences.listing()})

    async def silence_add(request: web.Request) -> web.Response:
        if silences is None:
            raise web.HTTPServiceUnavailable(text="silences are not available")
        from pipeline.alerting.silences import new_silence

        body = await _body(request)
        matchers = body.get("matchers", [])
        if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
            raise ValueError('"matchers" must be a list of strings such as "model=gpt-chat"')
        duration = str(body.get("duration", "2h"))
        # not a silence: ValueError, a 400 that says why, and nothing was tried
        item = new_silence([m.strip() for m in matchers if m.strip()],
                           duration=duration, now=time.time(),
                           created_by=str(body.get("created_by", "")),
                           comment=str(body.get("comment", "")))
        detail = silence_detail(item, duration)
        try:
            await silences.add(item)
        except Exception as exc:
            record(request, "silence.add", item.id, "failed", **detail,
                   reason=failure_reason(exc))
            raise
        record(request, "silence.add", item.id, **detail)
        return _json(msgspec.to_builtins(item), status=201)

    async def silence_expire(request: web.Request) -> web.Response:
        if silences is None:
            raise web.HTTPServiceUnavailable(text="silences are not available")
        silence_id = request.match_info["id"]
        try:
            expired = await silences.expire(silence_id)
        except KeyError:
            record(request, "silence.expire", silence_id, "refused",
                   reason=f"no silence {silence_id!r}")
            raise
        except Exception as exc:
            record(request, "silence.expire", silence_id, "failed",
                   reason=failure_reason(exc))
            raise
        record(request, "silence.expire", silence_id, **silence_detail(expired))
        return _json(msgspec.to_builtins(expired))

    async def sql(request: web.Request) -> web.Response:
        statement = (await _body(request)).get("sql")
        if not isinstance(statement, str):
            raise ValueError('the body must hold the statement as "sql", a string')
        started = time.perf_counter()
        try:
            async with gate:
                result = await asyncio.to_thread(query, statement)
        except Exception as exc:
            record(request, "query.run", "", "failed", **statement_detail(statement),
                   duration_ms=f"{(time.perf_counter() - started) * 1000:.1f}",
                   reason=str(exc)[:1024])
            raise
        record(request, "query.run", "", **statement_detail(statement),
               duration_ms=f"{(time.perf_counter() - started) * 1000:.1f}",
               result_rows=len(result.rows))
        rows = [finite(r) for r in result.rows[:MAX_QUERY_ROWS]]
        return _json({"columns": result.columns, "types": result.types, "rows": rows,
                      "truncated": len(result.rows) > MAX_QUERY_ROWS})

    async def live(request: web.Request) -> web.StreamResponse:
        want = request.query.get("series")
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue = hub.subscribe()
        try:
            await response.write(b"retry: 2000\n\n" + sse_frame({"ok": True}, "hello"))
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if want and item.get("series_key") not in (want, ""):
                    continue
                await response.write(sse_frame(item, item["kind"]))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            hub.unsubscribe(queue)
        return response

    app = web.Application(middlewares=[auth])
    for path, name in PAGES.items():
        app.router.add_get(path, page(name))
    app.router.add_get("/api/overview", overview)
    app.router.add_get("/api/series", series)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/silences", silence_list)
    app.router.add_post("/api/silences", silence_add)
    app.router.add_post("/api/silences/{id}/expire", silence_expire)
    app.router.add_post("/api/query", sql)
    app.router.add_get("/api/live", live)
    app.router.add_static("/static/", STATIC)
    return app


async def serve(settings: Settings, *, bind: str, port: int, live_updates: bool = True,
                ready: Callable[[str], None] | None = None) -> None:
    """Run the dashboard until cancelled: the app, the live consumer, the silences."""
    from pipeline.sinks.clickhouse.query import run_query
    from pipeline.ui.live import consume

    if not (STATIC / "vendor" / "uPlot.iife.min.js").exists():
        log.warning("the charting library is missing from %s (a source checkout needs "
                    "`make ui-assets`); the Series page will have no charts", STATIC / "vendor")
    fallback = "" if settings.query.password else secrets.token_urlsafe(12)
    credentials = Credentials(settings.query.user, settings.query.password,
                              settings.home_path / "clickhouse.owner.json", fallback)
    hub = Hub()
    book = SilenceBook(settings)
    audit = Auditor(settings, "ui")
    await audit.start()
    app = make_app(lambda sql: run_query(settings, sql), hub=hub, credentials=credentials,
                   silences=book, audit=audit)
    tasks = [asyncio.create_task(book.follow())]
    if live_updates:
        tasks.append(asyncio.create_task(consume(settings, hub)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, bind, port)
    await site.start()
    host = f"[{bind}]" if ":" in bind else bind
    if ready is not None:
        user, password = credentials.current()
        source = ("[query] password" if settings.query.password else
                  f"the owner's, in {credentials.owner_file}" if password != fallback else
                  f"generated for this run: {fallback}")
        ready(f"dashboard on http://{host}:{port}/ (user {user!r}, password: {source})")
    try:
        await asyncio.Event().wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await runner.cleanup()
        await audit.close()
