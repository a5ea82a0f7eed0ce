"""The audit trail: who changed what, when, as log lines and as events on ``inferwatch.audit``.

Every change of state made by a person is recorded twice: one line at INFO on the
``inferwatch.audit`` logger (as it happens, whatever becomes of Kafka) and one
:class:`~schemas.audit.AuditEvent` on the audit topic, which the sink stores in the
``audit`` table (retention ``audit.retention_days``). What is recorded, by whom:

- ``inferwatch silence add|expire`` and ``baseline set`` (source ``cli``; the actor is
  the operating-system user, :func:`cli_actor`, not the self-declared ``--by``), through
  :func:`record_sync`;
- the worker loading alert rules at start (``worker``): the files and their sha256, and
  whether they changed since the last start in this home (:func:`rules_loaded`);
- the dashboard's silences and SQL box (``ui``) and every statement through the store's
  query endpoint (``query``), the actor being the HTTP user, through an :class:`Auditor`
  (logs at once, publishes in the background so no request waits for Kafka).

An event that cannot be published is never dropped silently: it is logged at WARNING
with the whole event as JSON (one line per event, each its own message so the log's
repeat limiter never folds two together). ``audit.enabled = false`` records nothing.

>>> e = new_event("silence.add", "s-1", actor="alice", source="cli",
...               detail={"matchers": "model=m"}, at=1700000000.0)
>>> describe(e)
'silence.add s-1 by alice via cli: ok {"matchers":"model=m"}'
>>> new_event("query.run", actor="x" * 300, source="query").actor[-12:]
'xxx…[300 ch]'
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from pipeline.config import Settings
from schemas.audit import (
    MAX_ACTOR,
    MAX_DETAIL_ENTRIES,
    MAX_DETAIL_VALUE,
    MAX_TARGET,
    AuditEvent,
    Outcome,
    Source,
)

if TYPE_CHECKING:
    from pipeline.alerting.rules import RuleSet
    from schemas.alert import Silence

__all__ = ["MAX_STATEMENT_CHARS", "Auditor", "cli_actor", "describe", "failure_reason",
           "new_event", "publish", "record", "record_sync", "rules_loaded", "silence_detail",
           "statement_detail"]

log = logging.getLogger("inferwatch.audit")
MAX_STATEMENT_CHARS = 4096  # a statement is kept up to this, with its length and sha256
_ENCODER = msgspec.json.Encoder()
Send = Callable[[Sequence[AuditEvent]], Awaitable[None]]


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, marked (with its length) when cut.

    >>> _cut("abcdef", 10), _cut("a" * 20, 12)
    ('abcdef', 'aaaa…[20 ch]')
    """
    if len(text) <= limit:
        return text
    mark = f"…[{len(text)} ch]"
    return text[:max(0, limit - len(mark))] + mark


def new_event(action: str, target: str = "", *, actor: str, source: Source,
              outcome: Outcome = "ok", detail: Mapping[str, Any] | None = None,
              at: float | None = None) -> AuditEvent:
    """A validated event, every text cut to the contract's bounds (values become text)."""
    items = list((detail or {}).items())[:MAX_DETAIL_ENTRIES]
    data = {
        "id": uuid.uuid4().hex, "at": time.time() if at is None else at,
        "actor": _cut(actor, MAX_ACTOR), "action": action,
        "target": _cut(target, MAX_TARGET),
        "detail": {_cut(str(k), 64): _cut(str(v), MAX_DETAIL_VALUE) for k, v in items},
        "outcome": outcome, "source": source,
    }
    return msgspec.convert(data, AuditEvent)  # validates: a bad action is a bug, loudly


def statement_detail(sql: str) -> dict[str, str]:
    """A statement as the trail keeps it: its text up to :data:`MAX_STATEMENT_CHARS`,
    its length, and the sha256 of the whole text (to tell two long ones apart).

    >>> d = statement_detail("SELECT 1")
    >>> d["statement"], d["statement_chars"], len(d["statement_sha256"])
    ('SELECT 1', '8', 64)
    """
    return {"statement": _cut(sql, MAX_STATEMENT_CHARS), "statement_chars": str(len(sql)),
            "statement_sha256": hashlib.sha256(sql.encode()).hexdigest()}


def silence_detail(item: Silence, duration: str = "") -> dict[str, str]:
    """A silence added or expired as the trail keeps it, the same from the CLI and the
    dashboard: its matchers, who it says made it and why, until when (and, when added,
    the duration asked for).

    >>> from schemas.alert import Matcher, Silence
    >>> silence_detail(Silence(id="s", matchers=[Matcher(name="model", value="m")],
    ...                        starts_at=0.0, ends_at=60.0, created_by="bob"), "1m")
    {'matchers': 'model=m', 'created_by': 'bob', 'comment': '', 'ends_at': '60.000', \
'duration': '1m'}
    """
    detail = {"matchers": ",".join(f"{m.name}{m.op}{m.value}" for m in item.matchers),
              "created_by": item.created_by, "comment": item.comment,
              "ends_at": f"{item.ends_at:.3f}"}
    return {**detail, "duration": duration} if duration else detail


def failure_reason(exc: BaseException) -> str:
    """Why an action failed, for the trail: the error's type and message.

    >>> failure_reason(ConnectionError("broker away")), failure_reason(TimeoutError())
    ('ConnectionError: broker away', 'TimeoutError')
    """
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def cli_actor() -> str:
    """Who runs a command: the operating-system user (``getpass.getuser``)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a bare container)
        return f"uid:{os.getuid()}"


def describe(event: AuditEvent) -> str:
    """The log line of an event: action, target, actor, source, outcome, detail."""
    detail = _ENCODER.encode(event.detail).decode() if event.detail else ""
    target = f" {event.target}" if event.target else ""
    return (f"{event.action}{target} by {event.actor} via {event.source}: "
            f"{event.outcome} {detail}").rstrip()


def _log(event: AuditEvent) -> None:
    """INFO, except a statement that ran: DEBUG. Grafana runs one per panel per refresh,
    a line a second that would bury the changes people make; the table keeps them all."""
    routine = event.action == "query.run" and event.outcome == "ok"
    level = logging.DEBUG if routine else logging.INFO
    if log.isEnabledFor(level):  # not formatted for a level nobody reads
        log.log(level, "%s", describe(event))


def _unpublished(event: AuditEvent, why: object) -> None:
    # Pre-formatted on purpose: each lost event is its own message, so the repeat limiter
    # of pipeline.logs (which folds records of one template) prints every one of them.
    log.warning(f"audit event not published ({why}); kept here: "
                f"{_ENCODER.encode(event).decode()}")


async def _open_producer(settings: Settings) -> Any:
    """A started producer for the audit topic (created if missing), acks from every
    in-sync replica; nothing left open when it cannot start."""
    from aiokafka import AIOKafkaProducer

    from pipeline.runtime.kafka import client_options, ensure_topics

    await ensure_topics(settings, [settings.topics.audit])
    producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all")
    try:
        await producer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer


async def publish(settings: Settings, events: Sequence[AuditEvent],
                  producer: Any | None = None) -> None:
    """Send events to the audit topic and wait for every in-sync replica (acks=all).

    With no ``producer`` one is opened for these events (and the topic created if it is
    missing), then closed."""
    own = producer is None
    if own:
        producer = await _open_producer(settings)
    try:
        futures = [await producer.send(settings.topics.audit, _ENCODER.encode(e),
                                       key=e.id.encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        if own:
            await producer.stop()


async def record(settings: Settings, event: AuditEvent, timeout: float = 15.0) -> bool:
    """Log ``event`` and publish it (within ``timeout`` s); False when it could not be
    published (then it is logged at WARNING). Never raises: the action it records is
    done, or failed for its own reason."""
    if not settings.audit.enabled:
        return False
    _log(event)
    try:
        await asyncio.wait_for(publish(settings, [event]), timeout)
    except Exception as exc:  # broker away, topic refused, timed out
        _unpublished(event, failure_reason(exc))
        return False
    return True


def record_sync(settings: Settings, action: str, target: str = "", *,
                outcome: Outcome = "ok", detail: Mapping[str, Any] | None = None) -> bool:
    """For CLI commands: record an action of the operating-system user (source ``cli``)."""
    if not settings.audit.enabled:
        return False
    event = new_event(action, target, actor=cli_actor(), source="cli", outcome=outcome,
                      detail=detail)
    return asyncio.run(record(settings, event))


class Auditor:
    """Records events of a long-running process (the query endpoint, the dashboard): logs
    each at once and publishes it from a background task on one producer, so a request
    never waits for Kafka. ``send`` replaces the Kafka publisher (tests).

    At most ``max_pending`` events wait; past that, or when a send fails, or at
    :meth:`close` after ``timeout`` seconds, each event left is logged at WARNING.
    """

    def __init__(self, settings: Settings, source: Source, *, send: Send | None = None,
                 max_pending: int = 10_000) -> None:
        self.settings = settings
        self.source = source
        self.enabled = settings.audit.enabled
        self._send = send or self._to_kafka
        self._max_pending = max_pending
        self._queue: asyncio.Queue[AuditEvent] | None = None
        self._task: asyncio.Task[None] | None = None
        self._producer: Any = None

    def record(self, action: str, target: str = "", *, actor: str, outcome: Outcome = "ok",
               detail: Mapping[str, Any] | None = None) -> AuditEvent | None:
        """Record one event (call on the event loop); the event, or None when disabled."""
        if not self.enabled:
            return None
        event = new_event(action, target, actor=actor, source=self.source, outcome=outcome,
                          detail=detail)
        _log(event)
        if self._queue is None:
            _unpublished(event, "the audit publisher is not running")
            return event
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            _unpublished(event, f"{self._max_pending} audit events already waiting")
        return event

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._queue = asyncio.Queue(self._max_pending)
            self._task = asyncio.create_task(self._run(), name=f"audit-{self.source}")

    async def close(self, timeout: float = 10.0) -> None:
        """Publish what waits (up to ``timeout`` s), then stop; what is left is logged."""
        queue, task = self._queue, self._task
        if queue is None or task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.join(), timeout)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while not queue.empty():
            _unpublished(queue.get_nowait(), "stopped before it was sent")
        self._queue = self._task = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 500:
                batch.append(queue.get_nowait())
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                for event in batch:
                    _unpublished(event, "stopped while it was sent")
                raise
            except Exception as exc:
                why = failure_reason(exc)
                for event in batch:
                    _unpublished(event, why)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _to_kafka(self, events: Sequence[AuditEvent]) -> None:
        if self._producer is None:
            self._producer = await _open_producer(self.settings)
        await publish(self.settings, events, self._producer)


# ------------------------------------------------------------------ rules at start


def rules_loaded(settings: Settings, rules: RuleSet) -> AuditEvent:
    """The event of a worker loading its alert rules: each file's sha256 (as
    ``sha256sum`` prints them) of the bytes the rules were read from, one digest over
    all, and whether they changed since the last start with this home (kept in
    ``<home>/audit-rules.json``)."""
    lines = [f"{f.sha256}  {f.path}" for f in rules.files]
    text = "\n".join(lines)
    digest = hashlib.sha256(text.encode()).hexdigest()
    state = settings.home_path / "audit-rules.json"
    try:
        previous = json.loads(state.read_text()).get("digest", "")
    except (OSError, ValueError, AttributeError):
        previous = ""
    changed = "first load" if not previous else "yes" if previous != digest else "no"
    with contextlib.suppress(OSError):
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"digest": digest, "files": lines}))
    detail = {"files": text, "rules": len(rules), "digest": digest, "changed": changed}
    if previous and previous != digest:
        detail["previous_digest"] = previous
    return new_event("rules.load", settings.alerts.rules, actor=cli_actor(),
                     source="worker", detail=detail)
