"""The audit contract: :class:`AuditEvent` on ``inferwatch.audit``, one per change of state
made by a person (or a query run through the endpoint).

Who (``actor``), when (``at``, Unix seconds), what (``action`` on ``target``, with
``detail``), how it ended (``outcome``) and where it came from (``source``). ``id`` is
random per event; a redelivered event is the same record, so the store keeps it once.

Actions are dotted lowercase names: ``silence.add``, ``silence.expire``,
``baseline.set``, ``rules.load``, ``query.run`` (see docs/audit.md). ``outcome`` is ``ok``
(done), ``refused`` (not allowed or not valid: bad credentials, a limit, a write on the
read-only endpoint, an unknown silence) or ``failed`` (tried, and an error stopped it).

Evolution rules as for the other contracts: new fields get defaults, types never change.

>>> import msgspec
>>> e = AuditEvent(id="0" * 32, at=1700000000.0, actor="alice", action="silence.add",
...                target="s-1", detail={"matchers": "model=m"}, source="cli")
>>> msgspec.json.decode(msgspec.json.encode(e), type=AuditEvent) == e
True
>>> msgspec.json.decode(b'{"id": "x", "at": 1, "actor": "a", "action": "Drop!",'
...                     b' "source": "cli"}', type=AuditEvent)
Traceback (most recent call last):
...
msgspec.ValidationError: Expected `str` matching regex '^[0-9a-f]{32}$' - at `$.id`
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.bounds import EpochSeconds, SchemaVersion

__all__ = [
    "AUDIT_SCHEMA_VERSION",
    "MAX_DETAIL_ENTRIES",
    "MAX_DETAIL_VALUE",
    "AuditEvent",
    "Outcome",
    "Source",
]

AUDIT_SCHEMA_VERSION = 1
MAX_DETAIL_ENTRIES = 32
MAX_DETAIL_VALUE = 8192  # characters; a query's statement is cut well before this
MAX_ACTOR = 256
MAX_TARGET = 1024

Outcome = Literal["ok", "refused", "failed"]
Source = Literal["cli", "ui", "query", "worker"]

Action = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$",
                                     max_length=64)]
DetailKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
DetailValue = Annotated[str, msgspec.Meta(max_length=MAX_DETAIL_VALUE)]


class AuditEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One change of state made by a person, or one query run through the endpoint."""

    schema_version: SchemaVersion = AUDIT_SCHEMA_VERSION
    id: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]
    at: EpochSeconds
    actor: Annotated[str, msgspec.Meta(max_length=MAX_ACTOR)]
    action: Action
    target: Annotated[str, msgspec.Meta(max_length=MAX_TARGET)] = ""
    detail: Annotated[dict[DetailKey, DetailValue],
                      msgspec.Meta(max_length=MAX_DETAIL_ENTRIES)] = {}
    outcome: Outcome = "ok"
    source: Source
