"""What every notifier is: it turns a group of alerts into the JSON body of one webhook
request. Building bodies is pure; :mod:`pipeline.alerting.notify.sender` sends them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from pipeline.alerting.grouping import AlertGroup

__all__ = ["ZERO_TIME", "Notifier", "rfc3339"]

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not set" (Go's zero time)


def rfc3339(ts: float | None) -> str:
    """Unix seconds as RFC 3339 UTC (``Z``), milliseconds when not whole; ``None`` →
    :data:`ZERO_TIME`.

    >>> rfc3339(1700000000.0), rfc3339(1700000000.25), rfc3339(None)
    ('2023-11-14T22:13:20Z', '2023-11-14T22:13:20.250Z', '0001-01-01T00:00:00Z')
    """
    if ts is None:
        return ZERO_TIME
    dt = datetime.fromtimestamp(ts, tz=UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class Notifier(ABC):
    """A webhook receiver of grouped alerts. ``url`` is where the body is posted;
    ``receiver`` names the configured receiver it belongs to (metrics and logs say it)."""

    kind: ClassVar[str]
    content_type: ClassVar[str] = "application/json"

    def __init__(self, url: str, *, receiver: str = "inferwatch") -> None:
        self.url = url
        self.receiver = receiver

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @abstractmethod
    def body(self, group: AlertGroup) -> Any:
        """The JSON body (plain data) announcing ``group``."""

    def encode(self, group: AlertGroup) -> bytes:
        """:meth:`body` as JSON bytes."""
        return msgspec.json.encode(self.body(group))
