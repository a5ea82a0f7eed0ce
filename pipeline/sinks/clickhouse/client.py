"""ClickHouse through clickhouse-connect: one client factory, versioned migrations, inserts.

``chdb://PATH`` is the embedded engine (one process per data directory);
``http(s)://user:pass@host:port`` is a ClickHouse server. Same code for both.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from pipeline.config import Settings

__all__ = ["READ_ONLY", "apply_migrations", "apply_retention", "connect", "migrations",
           "retention_days"]

log = logging.getLogger(__name__)

# readonly=2: no writes and no DDL, but per-query settings may still be sent.
READ_ONLY = {"readonly": 2}


def connect(settings: Settings, *, database: bool = True) -> Client:
    """A client for the configured DSN; the embedded directory is created on demand."""
    dsn = settings.clickhouse_dsn
    if settings.embedded:
        path = dsn.removeprefix("chdb://")
        if path and path != "memory" and not path.startswith(":memory:"):
            from pathlib import Path

            Path(path).mkdir(parents=True, exist_ok=True)
    client = clickhouse_connect.get_client(dsn=dsn)
    if database:
        client.command(f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse.database}")
        client.database = settings.clickhouse.database
    return client


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL template) for every migration shipped, in order."""
    found = []
    for entry in resources.files("pipeline.sinks.clickhouse.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name.removesuffix(".sql"), entry.read_text()))
    return sorted(found)


def apply_migrations(client: Client, settings: Settings) -> list[str]:
    """Apply the migrations not yet recorded in ``schema_migrations``; return their names."""
    db = settings.clickhouse.database
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    rows = client.query(f"SELECT version FROM {db}.schema_migrations").result_rows
    done = {row[0] for row in rows}
    params: dict[str, Any] = {
        "db": db,
        "raw_retention_days": settings.clickhouse.raw_retention_days,
        "aggregate_retention_days": settings.clickhouse.aggregate_retention_days,
        "audit_retention_days": settings.audit.retention_days,
    }
    applied = []
    for version, name, template in migrations():
        if version in done:
            continue
        for statement in _statements(template.format(**params)):
            client.command(statement)
        client.insert(
            f"{db}.schema_migrations", [(version, name)], column_names=["version", "name"]
        )
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


# Tables whose rows are raw records (raw_retention_days); the audit trail keeps its own
# (audit.retention_days); every other table with a TTL holds aggregates
# (aggregate_retention_days). The migrations write the same split.
RAW_TABLES = frozenset({"events", "resources", "feedback"})
AUDIT_TABLE = "audit"
_TTL = re.compile(r"\bTTL (?P<expr>.+?) \+ toIntervalDay\((?P<days>\d+)\)")


def apply_retention(client: Client, settings: Settings) -> list[str]:
    """Bring every table's TTL to the configured retention; return the tables changed.

    Migrations set the TTL once, from the settings of the day they ran; a retention
    changed later in the config would otherwise be silently ignored. The engine then
    drops rows older than the new retention in the background (``MODIFY TTL``
    materialises it), so shortening it frees space and lengthening keeps rows longer.
    """
    db = settings.clickhouse.database
    changed = []
    rows = client.query("SELECT name, engine_full FROM system.tables WHERE database = "
                        "{db:String}", parameters={"db": db}).result_rows
    for table, engine in rows:
        found = _TTL.search(engine)
        if found is None:
            continue
        days = retention_days(settings, table)
        if int(found["days"]) == days:
            continue
        client.command(f"ALTER TABLE {db}.{table} MODIFY TTL {found['expr']} "
                       f"+ INTERVAL {days} DAY")
        log.info("retention of %s changed from %s to %d days: TTL updated", table,
                 found["days"], days)
        changed.append(table)
    return changed


def retention_days(settings: Settings, table: str) -> int:
    """The configured retention of ``table``: raw, audit or aggregate.

    >>> from pipeline.config import AuditSettings
    >>> s = Settings(audit=AuditSettings(retention_days=90))
    >>> retention_days(s, "events"), retention_days(s, "audit"), retention_days(s, "alerts")
    (30, 90, 400)
    """
    if table == AUDIT_TABLE:
        return settings.audit.retention_days
    if table in RAW_TABLES:
        return settings.clickhouse.raw_retention_days
    return settings.clickhouse.aggregate_retention_days


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]
