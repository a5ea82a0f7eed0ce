"""Roll-ups cover every stored event whatever its age, exactly once (real chDB engine).

Each test owns its chDB directory: chDB allows one process per data directory.
"""

from __future__ import annotations

import time

import pytest

from pipeline.sinks.clickhouse.rollups import refresh_rollups
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS, event_columns
from schemas import InferenceEvent

DB = "inferwatch"


def _insert(client, events: list[InferenceEvent], ingested_at: float | None = None) -> None:
    cols = event_columns(events, [0] * len(events), list(range(len(events))))
    names = list(EVENT_COLUMNS)
    if ingested_at is not None:  # an insert that began before now (still in flight)
        cols.append([round(ingested_at * 1000)] * len(events))
        names.append("ingested_at")
    client.insert("events", cols, column_names=names, column_oriented=True)


def _events(prefix: str, timestamps: list[float], models: tuple[str, ...] = ("a", "b")):
    return [InferenceEvent(event_id=f"{prefix}{i}", timestamp=ts, model=models[i % len(models)],
                           latency_ms=10.0 + i % 50, output_tokens=i % 7,
                           status="error" if i % 11 == 0 else "ok")
            for i, ts in enumerate(timestamps)]


def _refresh_until_done(client, **kwargs) -> int:
    runs = 0
    while True:
        runs += 1
        assert runs < 100, "the refresh never caught up"
        if refresh_rollups(client, DB, **kwargs).done:
            return runs


def _rows(client, sql: str) -> set[tuple]:
    return set(client.query(sql).result_rows)


def _assert_exact(client) -> int:
    """Every minute and hour of every model holds exactly the events kept in `events`."""
    stored = client.query("SELECT count() FROM events FINAL").result_rows[0][0]
    for table, unit in (("rollup_1m", "toStartOfMinute"), ("rollup_1h", "toStartOfHour")):
        expected = _rows(client, f"SELECT {unit}(timestamp) AS b, model, count(), "
                                 "countIf(status = 'error'), sum(ifNull(output_tokens, 0)) "
                                 "FROM events FINAL GROUP BY b, model")
        got = _rows(client, f"SELECT bucket, model, requests, errors, output_tokens "
                            f"FROM {table} FINAL WHERE requests > 0")
        assert got == expected, table
        total = client.query(f"SELECT sum(requests) FROM {table} FINAL").result_rows[0][0]
        assert total == stored, table
    return stored


def test_replayed_trace_of_old_events_reaches_every_bucket(fresh_store) -> None:
    client = fresh_store.client
    now = time.time()
    live = _events("live", [now - 30 + i / 10 for i in range(100)])
    _insert(client, live)
    _refresh_until_done(client)
    assert _assert_exact(client) == 100
    # A replayed trace: 3 days of history, every 7 minutes or so, long after the fact.
    replay = _events("trace", [now - 3 * 86400 + i * 421.0 for i in range(600)],
                     models=("a", "b", "c"))
    _insert(client, replay)
    _refresh_until_done(client)
    assert _assert_exact(client) == 700
    oldest = client.query("SELECT min(bucket) FROM rollup_1h FINAL").result_rows[0][0]
    assert oldest.timestamp() <= now - 3 * 86400 + 3600  # the trace's first hour is there


def test_events_after_a_sink_outage_longer_than_the_old_look_back(fresh_store) -> None:
    client = fresh_store.client
    now = time.time()
    _insert(client, _events("before", [now - 3600 + i for i in range(50)]))
    _refresh_until_done(client)
    # The sink was down 40 minutes; the backlog of that time arrives at once, after the
    # refresh that follows the restart had already run once with nothing new.
    refresh_rollups(client, DB)
    backlog = _events("outage", [now - 40 * 60 + i * 2.0 for i in range(1200)])
    _insert(client, backlog[:600])
    _insert(client, backlog[600:])
    _refresh_until_done(client)
    assert _assert_exact(client) == 1250
    in_outage = client.query(
        "SELECT sum(requests) FROM rollup_1m FINAL "
        f"WHERE bucket >= toDateTime({int(now - 40 * 60) // 60 * 60}) "
        f"AND bucket < toDateTime({int(now - 15 * 60) // 60 * 60})"
    ).result_rows[0][0]
    assert in_outage >= 700  # older than 15 minutes at the refresh: the old look-back lost it


def test_redelivered_events_are_counted_once(fresh_store) -> None:
    client = fresh_store.client
    now = time.time()
    batch = _events("dup", [now - 7200 + i * 3.0 for i in range(300)])
    _insert(client, batch)
    _refresh_until_done(client)
    _insert(client, batch[100:200])  # a batch re-delivered after a crash before the commit
    # the same event_id re-sent with another timestamp and model: the first copy is kept
    _insert(client, [InferenceEvent(event_id="dup5", timestamp=now - 60, model="z",
                                    latency_ms=1.0)])
    _refresh_until_done(client)
    assert _assert_exact(client) == 300
    assert not _rows(client, "SELECT * FROM rollup_1m FINAL WHERE model = 'z'")


def test_a_backlog_is_worked_off_in_bounded_steps_and_survives_a_crash(fresh_store) -> None:
    client = fresh_store.client
    now = time.time()
    # 40 distinct minutes, 3 events each, from 2 days ago
    _insert(client, _events("bk", [now - 2 * 86400 + (i // 3) * 60.0 + i % 3
                                   for i in range(120)]))
    first = refresh_rollups(client, DB, max_minutes=15)
    assert (first.minutes, first.done) == (15, False)
    assert 40 - 15 - 1 <= first.remaining <= 40 - 15 + 1  # the first minute may straddle

    class Crash(Exception):
        pass

    class CrashOnHours:  # dies after storing the minutes, before the hours and progress
        def __init__(self, inner):
            self.inner = inner

        def query(self, *args, **kwargs):
            return self.inner.query(*args, **kwargs)

        def command(self, sql, *args, **kwargs):
            if "rollup_1h" in sql:
                raise Crash
            return self.inner.command(sql, *args, **kwargs)

    with pytest.raises(Crash):
        refresh_rollups(CrashOnHours(client), DB, max_minutes=15)
    runs = _refresh_until_done(client, max_minutes=15)
    assert runs == 2  # picked up where the last recorded step ended
    assert _assert_exact(client) == 120


def test_an_insert_still_in_flight_at_the_cutoff_is_not_lost(fresh_store) -> None:
    client = fresh_store.client
    now = time.time()
    _insert(client, _events("x", [now - 600 + i for i in range(10)]))
    _refresh_until_done(client)
    # Its rows were stamped (ingested_at) 30 s before the refresh took its cutoff, but were
    # not visible to it: a slow insert committing late.
    _insert(client, _events("late", [now - 5400 + i for i in range(10)]), ingested_at=now - 30)
    _refresh_until_done(client)
    assert _assert_exact(client) == 20


def test_nothing_new_changes_nothing(fresh_store) -> None:
    client = fresh_store.client
    assert refresh_rollups(client, DB).minutes == 0
    assert client.query("SELECT count() FROM rollup_1m").result_rows[0][0] == 0
    with pytest.raises(ValueError, match="max_minutes"):
        refresh_rollups(client, DB, max_minutes=0)
