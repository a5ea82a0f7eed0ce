"""event_id alone is the dedup key of raw events, on the real engine (embedded chDB).

Each test owns its chDB directory (``fresh_store``, or ``empty_store`` to migrate
an older table itself).
"""

from __future__ import annotations

import time

import pytest

from pipeline.config import Settings
from pipeline.sinks.clickhouse.client import _statements, apply_migrations, migrations
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS, event_columns
from schemas import InferenceEvent


def _insert(client, events: list[InferenceEvent], old: bool = False) -> None:
    """Insert rows; ``old``: into a table from before 0011 (no ``cost_source`` column)."""
    cols = event_columns(events, [0] * len(events), list(range(len(events))))
    names = list(EVENT_COLUMNS)
    if old:
        del cols[names.index("cost_source")]
        names.remove("cost_source")
    client.insert("events", cols, column_names=names, column_oriented=True)


def _count_final(client) -> int:
    return client.query("SELECT count() FROM events FINAL").result_rows[0][0]


def test_same_event_id_with_other_timestamp_and_model_is_kept_once(fresh_store) -> None:
    client = fresh_store.client
    now = time.time()
    first = InferenceEvent(event_id="e1", timestamp=now - 120, model="a", latency_ms=1.0)
    again = InferenceEvent(event_id="e1", timestamp=now - 7 * 86400, model="b",
                           model_version="2", latency_ms=9.0)
    _insert(client, [first])
    _insert(client, [again])  # another insert, another day, another model: another part
    assert client.query("SELECT count() FROM events").result_rows[0][0] == 2  # both stored
    assert _count_final(client) == 1
    # The first copy stored is the one kept, at read time and after a merge alike.
    kept = "SELECT model, latency_ms FROM events FINAL"
    assert client.query(kept).result_rows == [("a", 1.0)]
    client.command("OPTIMIZE TABLE events FINAL")
    assert client.query("SELECT model, latency_ms FROM events").result_rows == [("a", 1.0)]


def test_events_table_is_sorted_by_event_id_alone(fresh_store) -> None:
    client, settings = fresh_store
    sorting, partition, engine = client.query(
        "SELECT sorting_key, partition_key, engine_full FROM system.tables "
        f"WHERE database = '{settings.clickhouse.database}' AND name = 'events'"
    ).result_rows[0]
    assert sorting == "event_id"
    assert partition in ("", "tuple()")  # a partition key would split copies of one event_id
    assert "ReplacingMergeTree(dedup_rank)" in engine
    indexes = {row[0] for row in client.query(
        "SELECT name FROM system.data_skipping_indices "
        f"WHERE database = '{settings.clickhouse.database}' AND table = 'events'"
    ).result_rows}
    assert {"timestamp_minmax", "ingested_at_minmax", "model_bloom"} <= indexes
    tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
    assert "events_0008" not in tables


def _apply_up_to(client, settings: Settings, last: int) -> None:
    """The migrations an older release shipped (versions <= last), recorded as applied."""
    db = settings.clickhouse.database
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    params = {"db": db, "raw_retention_days": settings.clickhouse.raw_retention_days,
              "aggregate_retention_days": settings.clickhouse.aggregate_retention_days}
    for version, name, template in migrations():
        if version <= last:
            for statement in _statements(template.format(**params)):
                client.command(statement)
            client.insert(f"{db}.schema_migrations", [(version, name)],
                          column_names=["version", "name"])


def test_old_table_is_migrated_with_its_rows(empty_store) -> None:
    client, settings = empty_store
    _apply_up_to(client, settings, 7)
    assert client.query(
        "SELECT sorting_key FROM system.tables WHERE name = 'events' "
        f"AND database = '{settings.clickhouse.database}'"
    ).result_rows[0][0] == "model, model_version, timestamp, event_id"
    now = time.time()
    events = [InferenceEvent(event_id=f"old{i}", timestamp=now - 86400 * (i % 5) - i,
                             model=f"m{i % 3}", latency_ms=float(i)) for i in range(200)]
    _insert(client, events, old=True)
    # The bug being fixed: under the old key these two copies were both kept.
    _insert(client, [InferenceEvent(event_id="old7", timestamp=now - 3600, model="other",
                                    latency_ms=1e6)], old=True)
    assert _count_final(client) == 201

    applied = apply_migrations(client, settings)
    assert "0008_events_by_event_id" in applied
    assert _count_final(client) == 200
    assert client.query(
        "SELECT sum(latency_ms) FROM events FINAL").result_rows[0][0] == sum(range(200))
    assert client.query(
        "SELECT sorting_key FROM system.tables WHERE name = 'events' "
        f"AND database = '{settings.clickhouse.database}'"
    ).result_rows[0][0] == "event_id"
    assert apply_migrations(client, settings) == []  # recorded once


@pytest.mark.parametrize("crash_after", ["INSERT", "EXCHANGE"])
def test_interrupted_migration_reruns_to_the_same_result(empty_store, crash_after: str) -> None:
    """A crash after the copy or after the swap: running 0008 again still ends right."""
    client, settings = empty_store
    _apply_up_to(client, settings, 7)
    now = time.time()
    _insert(client, [InferenceEvent(event_id=f"r{i}", timestamp=now - i, model="m",
                                    latency_ms=1.0) for i in range(50)], old=True)
    db = settings.clickhouse.database
    params = {"db": db, "raw_retention_days": settings.clickhouse.raw_retention_days,
              "aggregate_retention_days": settings.clickhouse.aggregate_retention_days}
    template = {v: t for v, _, t in migrations()}[8]
    statements = _statements(template.format(**params))
    stop = next(i for i, s in enumerate(statements) if s.startswith(crash_after)) + 1
    for statement in statements[:stop]:
        client.command(statement)
    for statement in statements:  # what apply_migrations does on the next start
        client.command(statement)
    assert _count_final(client) == 50
    assert client.query(
        f"SELECT sorting_key FROM system.tables WHERE name = 'events' AND database = '{db}'"
    ).result_rows[0][0] == "event_id"
    assert "events_0008" not in {row[0] for row in client.query("SHOW TABLES").result_rows}


def test_kafka_coordinates_fit_any_partition_and_offset(fresh_store) -> None:
    """The source record's coordinates are stored whatever Kafka allows: partition up to
    2^31 - 1 (an int32), offset up to 2^63 - 1 (an int64)."""
    client = fresh_store.client
    event = InferenceEvent(event_id="far", timestamp=time.time() - 60, model="m",
                           latency_ms=1.0)
    cols = event_columns([event], [2**31 - 1], [2**63 - 1])
    client.insert("events", cols, column_names=EVENT_COLUMNS, column_oriented=True)
    assert client.query("SELECT kafka_partition, kafka_offset FROM events").result_rows == [
        (2**31 - 1, 2**63 - 1)]
