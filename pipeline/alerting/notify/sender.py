"""Posting notification bodies: timeouts, retries with exponential backoff, counted
failures, never an exception into the caller and never a blocked stream.

:meth:`WebhookSender.submit` schedules a send in the background (bounded: beyond
``max_pending`` in flight, new notifications are dropped and counted) so the stream
processor never waits on a slow receiver. :meth:`WebhookSender.send` can be awaited
directly and returns whether the receiver accepted the body.

Retried: connection errors, timeouts, HTTP 429 and 5xx (``Retry-After`` in seconds is
honoured, capped by ``max_backoff``). Not retried: other 4xx (the body will not improve).

Notifications (:meth:`WebhookSender.notify`, :meth:`WebhookSender.submit`) are counted in
``inferwatch_notifications`` by the notifier's receiver and outcome (sent, failed, dropped).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from pipeline.alerting.grouping import AlertGroup
from pipeline.alerting.notify.base import Notifier
from pipeline.telemetry import NOTIFICATIONS

__all__ = ["SendStats", "WebhookSender"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SendStats:
    """Counters for metrics and logs."""

    sent: int = 0
    failed: int = 0
    retries: int = 0
    dropped: int = 0
    last_error: str = ""


class WebhookSender:
    """Sends JSON bodies over one shared ``aiohttp`` session (created on first use).

    >>> s = WebhookSender(timeout=5, retries=2)
    >>> s.delay(0), s.delay(3)
    (0.5, 4.0)
    """

    def __init__(self, *, timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
                 max_backoff: float = 30.0, jitter: bool = False, max_pending: int = 1000,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.max_pending = max_pending
        self.stats = SendStats()
        self._session = session
        self._own_session = session is None
        self._pending: set[asyncio.Task[bool]] = set()

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt + 1``: ``backoff · 2^attempt``, capped."""
        d = min(self.max_backoff, self.backoff * (2 ** attempt))
        return d * random.uniform(0.5, 1.0) if self.jitter else d

    async def _post(self, url: str, data: bytes, content_type: str
                    ) -> tuple[bool, bool, str, float | None]:
        """(ok, retryable, error, retry-after) of one attempt."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url, data=data, headers={"Content-Type": content_type},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                if resp.status < 300:
                    return True, False, "", None
                retry_after = None
                if (ra := resp.headers.get("Retry-After")) and ra.strip().isdigit():
                    retry_after = float(ra)
                retryable = resp.status == 429 or resp.status >= 500
                return False, retryable, f"HTTP {resp.status}", retry_after
        except TimeoutError:
            return False, True, f"timeout after {self.timeout:g}s", None
        except aiohttp.ClientError as exc:
            return False, True, f"{type(exc).__name__}: {exc}", None

    async def send(self, url: str, body: bytes | dict[str, Any], *,
                   content_type: str = "application/json") -> bool:
        """Post ``body``, retrying; ``True`` when accepted. Failures are counted and
        logged, never raised (cancellation still propagates)."""
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        error = ""
        try:
            for attempt in range(self.retries + 1):
                ok, retryable, error, retry_after = await self._post(url, data, content_type)
                if ok:
                    self.stats.sent += 1
                    return True
                if not retryable or attempt == self.retries:
                    break
                self.stats.retries += 1
                wait = self.delay(attempt)
                if retry_after is not None:
                    wait = min(self.max_backoff, max(wait, retry_after))
                await asyncio.sleep(wait)
        except Exception as exc:  # never into the stream
            error = f"{type(exc).__name__}: {exc}"
        self.stats.failed += 1
        self.stats.last_error = error
        log.warning("notification to %s failed: %s", url, error)
        return False

    async def notify(self, notifier: Notifier, group: AlertGroup) -> bool:
        """Send ``group`` as ``notifier`` renders it."""
        try:
            data = notifier.encode(group)
        except Exception as exc:
            self.stats.failed += 1
            self.stats.last_error = f"cannot render: {exc}"
            log.warning("notification by %r not rendered: %s", notifier, exc)
            NOTIFICATIONS.labels(notifier.receiver, "failed").inc()
            return False
        ok = await self.send(notifier.url, data, content_type=notifier.content_type)
        NOTIFICATIONS.labels(notifier.receiver, "sent" if ok else "failed").inc()
        return ok

    def submit(self, notifier: Notifier, group: AlertGroup) -> bool:
        """Schedule :meth:`notify` in the background; ``False`` (counted in ``dropped``)
        when ``max_pending`` sends are already in flight. Needs a running event loop."""
        if len(self._pending) >= self.max_pending:
            self.stats.dropped += 1
            NOTIFICATIONS.labels(notifier.receiver, "dropped").inc()
            return False
        task = asyncio.get_running_loop().create_task(self.notify(notifier, group))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the sends in flight (up to ``timeout`` seconds)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    async def close(self) -> None:
        """Close the session if this sender created it."""
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None
