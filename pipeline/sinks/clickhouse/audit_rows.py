"""Audit contract → ClickHouse rows (``audit``), no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.sinks.clickhouse.rows import _ticks
from schemas.audit import AuditEvent

__all__ = ["AUDIT_COLUMNS", "audit_columns"]

AUDIT_COLUMNS = [n for n in AuditEvent.__struct_fields__ if n != "schema_version"]


def audit_columns(events: Sequence[AuditEvent]) -> list[list]:
    """Column-oriented data for ``AUDIT_COLUMNS`` (``at`` as DateTime64(3) ticks).

    >>> e = AuditEvent(id="0" * 32, at=1.5, actor="a", action="silence.add", source="cli")
    >>> dict(zip(AUDIT_COLUMNS, audit_columns([e]), strict=True))["at"]
    [1500]
    """
    return [[_ticks(e.at, "at") for e in events] if name == "at"
            else [getattr(e, name) for e in events] for name in AUDIT_COLUMNS]
