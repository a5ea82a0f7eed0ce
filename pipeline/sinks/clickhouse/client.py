"""ClickHouse through clickhouse-connect: one client factory, versioned migrations, inserts.

``chdb://PATH`` is the embedded engine (one process per data directory);
``http(s)://user:pass@host:port`` is a ClickHouse server. Same code for both.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from pipeline.config import Settings

__all__ = ["READ_ONLY", "apply_migrations", "connect", "migrations"]

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


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]
