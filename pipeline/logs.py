"""Logging that stays readable during an outage, in text for people or JSON for search.

:func:`configure` sets the worker's logging up (commands keep plain text on stderr,
``pipeline.cli._log_to_stderr``): the human text format by
default, or one JSON object per line (``log.format = "json"``) with the time, level,
logger, message and the ids in scope (series key, topic, partition, offset, event id,
trace id) that :func:`scope` binds around a piece of work, or that a call passes with
``extra={...}``.

Repeats of a record are rate-limited.

A broker outage makes every component log the same few failures over and over (aiokafka
and faust connection errors, our own retry loops): thousands of lines a second that bury
the one line that matters. :class:`RepeatFilter`, installed on a handler, lets the first
record of a kind through, drops repeats of the same kind for ``period`` seconds, and then
writes one line saying how many it dropped. A *kind* is (logger name, level, message
template ``record.msg``): ``log.error("connect to %s failed: %s", node, exc)`` is one kind
whatever its arguments, so a loop that retries every 50 ms logs once, then one summary
per period while it lasts. It is general on purpose: no list of messages or loggers.

Records below ``min_level`` (WARNING by default) are never limited: periodic status
and progress lines (INFO) and debug logging show every record; what an outage repeats
is warnings and errors. Summaries of a kind that went quiet are written with
the next record the handler sees (of any kind) or by :meth:`RepeatFilter.flush`.

>>> import io, logging
>>> out = io.StringIO()
>>> handler = logging.StreamHandler(out)
>>> _ = install(handlers=[handler], period=30.0)
>>> log = logging.getLogger("doctest.kafka")
>>> log.addHandler(handler); log.propagate = False
>>> for attempt in range(1000):
...     log.error("cannot reach %s (attempt %d)", "broker:9092", attempt)
>>> handler.filters[0].flush()
>>> first, summary = out.getvalue().splitlines()
>>> first
'cannot reach broker:9092 (attempt 0)'
>>> summary.split("; last: ")
["999 more like 'cannot reach %s (attempt %d)' in the last 30 s (repeats suppressed)", \
'cannot reach broker:9092 (attempt 999)']
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = ["SCOPE_FIELDS", "JsonFormatter", "RepeatFilter", "configure", "install", "scope"]

_Kind = tuple[str, int, str]
_MAX_KINDS = 10_000  # bound on remembered kinds (f-string messages make every line a kind)


@dataclass(slots=True)
class _Seen:
    since: float  # start of the current period
    suppressed: int = 0
    last: logging.LogRecord | None = None  # the latest suppressed record


class RepeatFilter(logging.Filter):
    """Pass the first record of each (logger, level, template), then at most one summary
    line per ``period`` seconds while repeats keep coming.

    Attach one instance per handler (its state is that handler's view of the stream);
    :func:`install` does that. Thread-safe; the summary is written through ``handler``.
    """

    SUMMARY = "_inferwatch_repeat_summary"  # attribute marking our own summary records

    def __init__(
        self,
        handler: logging.Handler,
        period: float = 30.0,
        min_level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if period <= 0:
            raise ValueError(f"period must be > 0 seconds, got {period}")
        self.handler = handler
        self.period = period
        self.min_level = min_level
        self.clock = clock
        self._seen: dict[_Kind, _Seen] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self.SUMMARY, False):
            return True
        if record.levelno < self.min_level:  # never limited, but due summaries go first
            now = self.clock()
            if self._seen and now >= self._next_sweep:
                with self._lock:
                    self._next_sweep = now + 1.0
                    due = self._take_due(now)
                for due_kind, item in due:
                    self._summarise(due_kind, item)
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        kind = (record.name, record.levelno, template)
        now = self.clock()
        due: list[tuple[_Kind, _Seen]] = []
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen.since >= self.period:
                if seen.suppressed:  # a flood goes on: its summary, and this starts the next
                    due.append((kind, _Seen(seen.since, seen.suppressed, seen.last)))
                    seen.since, seen.suppressed, seen.last = now, 0, None
                else:
                    seen = None
            if seen is None:
                passed = True
                if len(self._seen) >= _MAX_KINDS:
                    self._seen.clear()
                self._seen[kind] = _Seen(now)
            else:
                passed = False
                seen.suppressed += 1
                seen.last = record
            if now >= self._next_sweep:
                self._next_sweep = now + 1.0
                due += self._take_due(now)
        for due_kind, item in due:
            self._summarise(due_kind, item)
        return passed

    def flush(self) -> None:
        """Write the summary of every kind with suppressed repeats now (e.g. at shutdown)."""
        with self._lock:
            due = [(k, _Seen(s.since, s.suppressed, s.last))
                   for k, s in self._seen.items() if s.suppressed]
            self._seen.clear()
        for kind, item in due:
            self._summarise(kind, item)

    def _take_due(self, now: float) -> list[tuple[_Kind, _Seen]]:
        """Kinds whose period is over: those with repeats are summarised and start a new
        period (so a steady flood yields one line per period); quiet ones are forgotten."""
        due = []
        for kind, seen in list(self._seen.items()):
            if now - seen.since < self.period:
                continue
            if seen.suppressed:
                due.append((kind, _Seen(seen.since, seen.suppressed, seen.last)))
                seen.since, seen.suppressed, seen.last = now, 0, None
            else:
                del self._seen[kind]
        return due

    def _summarise(self, kind: _Kind, seen: _Seen) -> None:
        name, level, template = kind
        last = seen.last
        text = "%d more like %r in the last %.0f s (repeats suppressed)"
        args: tuple[object, ...] = (seen.suppressed, template, self.period)
        if last is not None:
            try:
                text += "; last: %s"
                args += (last.getMessage(),)
            except Exception:  # a record whose arguments do not format: say nothing more
                text = text.removesuffix("; last: %s")
        record = logging.getLogger(name).makeRecord(
            name, level, last.pathname if last else "", last.lineno if last else 0,
            text, args, None, func=last.funcName if last else None,
        )
        setattr(record, self.SUMMARY, True)
        self.handler.handle(record)


def install(
    handlers: Iterable[logging.Handler] | None = None, period: float = 30.0
) -> list[RepeatFilter]:
    """Put a :class:`RepeatFilter` on each handler (default: the root logger's), once.

    Called by every logging set-up (worker, CLI) after the handlers exist.
    """
    installed = []
    for handler in list(logging.getLogger().handlers if handlers is None else handlers):
        if any(isinstance(f, RepeatFilter) for f in handler.filters):
            continue
        repeat = RepeatFilter(handler, period=period)
        handler.addFilter(repeat)
        _INSTALLED.add(repeat)
        installed.append(repeat)
    return installed


_INSTALLED: weakref.WeakSet[RepeatFilter] = weakref.WeakSet()


@atexit.register  # after logging.shutdown's own registration, so it runs before it
def _flush_at_exit() -> None:
    for repeat in list(_INSTALLED):
        with contextlib.suppress(Exception):  # a closed stream at exit: nothing to tell
            repeat.flush()


# ---------------------------------------------------------------------------- JSON format
SCOPE_FIELDS = ("series", "topic", "partition", "offset", "event_id", "trace_id", "stage")
TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
_SCOPE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "log_scope", default=None)
_ENCODER = msgspec.json.Encoder()


@contextlib.contextmanager
def scope(**ids: Any) -> Iterator[None]:
    """Bind ids (e.g. ``partition=3, offset=120``) to every record logged inside, in this
    task or thread; nested scopes add to the outer one. ``None`` values are left out."""
    outer = _SCOPE.get() or {}
    token = _SCOPE.set({**outer, **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _SCOPE.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC, ms), ``level``, ``logger``,
    ``message``, ``pid``, the ids in :func:`scope` and those of :data:`SCOPE_FIELDS`
    passed as ``extra``, and ``exception`` with the traceback when there is one.

    >>> record = logging.LogRecord("pipeline.x", logging.WARNING, "f.py", 1,
    ...                            "lag %d on %s", (12, "p3"), None)
    >>> record.created = 1700000000.25
    >>> with scope(partition=3, offset=120):
    ...     line = JsonFormatter().format(record)
    >>> import json
    >>> fields = json.loads(line)
    >>> fields["time"], fields["level"], fields["message"]
    ('2023-11-14T22:13:20.250Z', 'WARNING', 'lag 12 on p3')
    >>> fields["partition"], fields["offset"]
    (3, 120)
    """

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=UTC)
        out: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        out.update(_SCOPE.get() or {})
        for name in SCOPE_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        try:
            return _ENCODER.encode(out).decode()
        except (TypeError, msgspec.EncodeError):  # an id of an odd type: as text
            return _ENCODER.encode({k: v if isinstance(v, str | int | float) else str(v)
                                    for k, v in out.items()}).decode()


def configure(fmt: str = "text", level: int | str = logging.INFO,
              text_format: str = TEXT_FORMAT) -> None:
    """Log to stderr in ``fmt`` (``text`` or ``json``) at ``level``, repeats rate-limited.

    Replaces handlers set up earlier by :func:`configure` itself, so the worker can apply
    the configured format after an earlier set-up (tests call it more than once)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_inferwatch", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._inferwatch = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    install([handler])
