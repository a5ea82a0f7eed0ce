"""Who owns the embedded store, and how others query through the owner.

chDB allows one process per data directory. The process that owns it (the sink)
holds an advisory ``flock`` on ``<home>/clickhouse.lock`` — the kernel drops it when
the process dies, even by SIGKILL — and serves read-only SQL on 127.0.0.1 with a
random port and a bearer token, both written to ``<home>/clickhouse.owner.json``
(mode 0600). ``inferwatch query`` finds the owner there, or opens the store itself
when nobody holds the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

__all__ = ["OwnerInfo", "QueryResult", "StoreBusyError", "StoreLock", "serve_queries"]

log = logging.getLogger(__name__)


class StoreBusyError(RuntimeError):
    """Another live process owns the embedded store."""


class QueryResult(msgspec.Struct):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class OwnerInfo:
    pid: int
    port: int
    token: str


class StoreLock:
    """An exclusive, crash-safe lock on the embedded store directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.lock_path = home / "clickhouse.lock"
        self.info_path = home / "clickhouse.owner.json"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free; False when another process holds it."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def acquire(self, timeout: float) -> None:
        """Wait up to ``timeout`` s (a one-off query may hold it briefly), else raise."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.try_acquire():
            if asyncio.get_running_loop().time() >= deadline:
                owner = self.owner()
                who = f"pid {owner.pid}" if owner else "another process"
                raise StoreBusyError(
                    f"the embedded store {self.home / 'clickhouse'} is owned by {who}; run one "
                    "sink per embedded store (inferwatch worker --roles process elsewhere) or "
                    "set INFERWATCH_CLICKHOUSE to a ClickHouse server DSN"
                )
            await asyncio.sleep(0.2)

    def publish(self, port: int, token: str) -> None:
        """Tell query clients where the owner answers."""
        tmp = self.info_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "port": port, "token": token}, fh)
        tmp.replace(self.info_path)

    def owner(self) -> OwnerInfo | None:
        try:
            data = json.loads(self.info_path.read_text())
            return OwnerInfo(int(data["pid"]), int(data["port"]), str(data["token"]))
        except (OSError, ValueError, KeyError):
            return None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            owner = self.owner()
            if owner and owner.pid == os.getpid():
                self.info_path.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StoreLock:
        if not self.try_acquire():
            raise StoreBusyError(
                f"the embedded store under {self.home} is owned by another process"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


async def serve_queries(
    lock: StoreLock, run: Callable[[str], QueryResult]
) -> web.AppRunner:
    """Serve ``POST /query`` on 127.0.0.1 (random port, bearer token); publish the address.

    ``run`` executes one read-only statement; it is called in a worker thread.
    """
    token = secrets.token_urlsafe(24)

    async def query(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            body = await request.json()
            sql = str(body["sql"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected JSON {"sql": "..."}'}, status=400)
        try:
            result = await asyncio.to_thread(run, sql)
        except Exception as exc:  # the SQL error goes back to the caller, not up the stack
            return web.json_response({"error": str(exc)}, status=400)
        return web.Response(body=msgspec.json.encode(result), content_type="application/json")

    app = web.Application()
    app.router.add_post("/query", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    lock.publish(port, token)
    log.info("embedded store answers read-only queries on 127.0.0.1:%d", port)
    return runner
