"""Who owns the embedded store, and where its ClickHouse HTTP interface answers.

chDB allows one process per data directory. The process that owns it (the sink)
holds an advisory ``flock`` on ``<home>/clickhouse.lock`` — the kernel drops it when
the process dies, even by SIGKILL — and serves read-only SQL over ClickHouse's HTTP
interface (:mod:`pipeline.sinks.clickhouse.http_interface`); host, port, user and
password are written to ``<home>/clickhouse.owner.json`` (mode 0600: the password is
random per start unless configured). ``inferwatch query`` finds the owner there, or
opens the store itself when nobody holds the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OwnerInfo", "StoreBusyError", "StoreLock"]

log = logging.getLogger(__name__)


class StoreBusyError(RuntimeError):
    """Another live process owns the embedded store."""


@dataclass(frozen=True)
class OwnerInfo:
    """The owning process and how to reach its ClickHouse HTTP interface."""

    pid: int
    host: str
    port: int
    user: str
    password: str
    scheme: str = "http"  # "https" when the owner serves TLS ([query] tls_certfile/keyfile)


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

    def publish(self, host: str, port: int, user: str, password: str,
                scheme: str = "http") -> None:
        """Tell query clients where and how the owner answers (owner-only file: it holds
        the password)."""
        tmp = self.info_path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # O_CREAT keeps an old file's mode; start from none
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": host, "port": port, "user": user,
                       "password": password, "scheme": scheme}, fh)
        tmp.replace(self.info_path)

    def owner(self) -> OwnerInfo | None:
        try:
            data = json.loads(self.info_path.read_text())
            return OwnerInfo(int(data["pid"]), str(data["host"]), int(data["port"]),
                             str(data["user"]), str(data["password"]),
                             str(data.get("scheme", "http")))
        except (OSError, ValueError, KeyError, TypeError):
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
