"""Accepted means kept: the accepted event age and the raw table's TTL agree, with a margin.

The TTL is checked on the real engine (embedded chDB, one directory per test).
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from pipeline.config import ConfigError, IngestLimits, Settings, load_settings
from pipeline.sinks.clickhouse.client import apply_migrations, apply_retention, connect
from pipeline.sinks.clickhouse.rows import EVENT_COLUMNS, event_columns
from pipeline.sources.codec import decode_events
from schemas import InferenceEvent

RETENTIONS = [1, 2, 3, 7, 30, 400]
DAY = 86400.0


def _settings(tmp_path: Path, retention_days: int, **env: str) -> Settings:
    return load_settings(environ={
        "INFERWATCH_HOME": str(tmp_path),
        "INFERWATCH_CLICKHOUSE__RAW_RETENTION_DAYS": str(retention_days), **env,
    })


@pytest.mark.parametrize("days", RETENTIONS)
def test_accepted_age_is_inside_the_retention_with_a_margin(tmp_path: Path, days: int) -> None:
    settings = _settings(tmp_path, days)
    accepted = settings.limits.max_past_seconds
    retention = days * DAY
    assert isinstance(accepted, float)
    assert accepted == settings.clickhouse.max_accepted_age_seconds
    # at least a day (a quarter of a retention under 4 days) between the two
    assert retention - accepted >= min(DAY, retention / 4)
    assert accepted >= retention / 2  # and the margin does not eat the retention


def test_defaults_agree_without_load_settings() -> None:
    """Limits built directly (tests, tools) are safe with the default retention too."""
    settings = Settings()
    assert IngestLimits().max_past_seconds <= settings.clickhouse.max_accepted_age_seconds
    assert settings.limits.max_past_seconds <= settings.clickhouse.max_accepted_age_seconds


def test_an_explicit_age_inside_the_margin_is_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 30, INFERWATCH_LIMITS__MAX_PAST_SECONDS=str(7 * DAY))
    assert settings.limits.max_past_seconds == 7 * DAY


def test_an_age_beyond_the_retention_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"INFERWATCH_LIMITS__MAX_PAST_SECONDS.*"
                                          r"limits\.max_past_seconds = 2592000"):
        _settings(tmp_path, 30, INFERWATCH_LIMITS__MAX_PAST_SECONDS=str(30 * DAY))
    file = tmp_path / "iw.toml"
    file.write_text("[clickhouse]\nraw_retention_days = 7\n\n[limits]\nmax_past_seconds = 600000\n")
    with pytest.raises(ConfigError, match=rf"{file}:5: limits\.max_past_seconds = 600000.*"
                                          r"at most 518400"):
        load_settings(file, environ={"INFERWATCH_HOME": str(tmp_path)})
    # Lowering only the retention moves the accepted age with it: no error.
    file.write_text("[clickhouse]\nraw_retention_days = 7\n")
    assert load_settings(file, environ={}).limits.max_past_seconds == 6 * DAY


@pytest.mark.parametrize("days", [1, 3, 30])
def test_the_oldest_accepted_event_survives_the_ttl(tmp_path: Path, days: int) -> None:
    settings = _settings(tmp_path, days)
    now = time.time()
    edge = now - settings.limits.max_past_seconds + 1  # the oldest the sources accept
    raw = msgspec.json.encode([
        InferenceEvent(event_id="edge", timestamp=edge, model="m", latency_ms=1.0),
        InferenceEvent(event_id="older", timestamp=edge - 5, model="m", latency_ms=1.0),
    ])
    decoded = decode_events(raw, {}, settings.limits, now)
    assert [e.event_id for e in decoded.events] == ["edge"]
    assert [r.reason for r in decoded.rejections] == ["stale_timestamp"]
    # A control row the TTL must remove, so this test can tell a live TTL from none.
    expired = InferenceEvent(event_id="expired", timestamp=now - days * DAY - 120, model="m",
                             latency_ms=1.0)
    rows = [*decoded.events, expired]
    client = connect(settings)
    try:
        apply_migrations(client, settings)
        client.insert("events", event_columns(rows, [0, 0], [0, 1]),
                      column_names=EVENT_COLUMNS, column_oriented=True)
        client.command("OPTIMIZE TABLE events FINAL")  # applies the TTL now
        kept = [r[0] for r in client.query("SELECT event_id FROM events").result_rows]
        # When the engine will delete it, from the table's own TTL expression: not a
        # second after acceptance, but a margin later (the edge row is alone in its part).
        expires = client.query(
            "SELECT toUnixTimestamp(min(delete_ttl_info_min)) FROM system.parts "
            f"WHERE database = '{settings.clickhouse.database}' AND table = 'events' "
            "AND active").result_rows[0][0]
    finally:
        client.close()
    assert kept == ["edge"]
    assert expires - now >= min(DAY, days * DAY / 4) - 5


def _ttl_days(client, database: str) -> dict[str, int]:
    rows = client.query("SELECT name, engine_full FROM system.tables WHERE database = "
                        f"'{database}' AND engine_full LIKE '%TTL%'").result_rows
    return {name: int(engine.split("toIntervalDay(")[1].split(")")[0]) for name, engine in rows}


def test_a_changed_retention_updates_every_table_ttl(tmp_path: Path) -> None:
    """Migrations set the TTL once; a retention changed in the config later must reach
    the tables, raw ones from raw_retention_days, the audit trail from
    audit.retention_days, the rest from aggregate_retention_days."""
    first = _settings(tmp_path, 30)
    client = connect(first)
    try:
        apply_migrations(client, first)
        assert apply_retention(client, first) == []  # the migrations wrote these TTLs
        before = _ttl_days(client, first.clickhouse.database)
        assert before["events"] == before["resources"] == 30
        assert before["window_metrics"] == 400
        assert before["audit"] == first.audit.retention_days == 400
        later = msgspec.structs.replace(
            first, clickhouse=msgspec.structs.replace(
                first.clickhouse, raw_retention_days=7, aggregate_retention_days=90),
            audit=msgspec.structs.replace(first.audit, retention_days=730))
        assert apply_migrations(client, later) == []  # no migration left
        assert sorted(apply_retention(client, later)) == sorted(before)  # every TTL moves
        after = _ttl_days(client, first.clickhouse.database)
        assert apply_retention(client, later) == []  # idempotent
    finally:
        client.close()
    assert set(after) == set(before) and len(after) >= 10
    assert after == {name: 7 if name in ("events", "resources", "feedback")
                     else 730 if name == "audit" else 90 for name in before}


def test_the_audit_trail_follows_its_own_retention(fresh_store) -> None:
    """audit.retention_days alone moves the audit table's TTL, and rows older than it go."""
    client, first = fresh_store
    assert apply_retention(client, first) == []
    shorter = msgspec.structs.replace(
        first, audit=msgspec.structs.replace(first.audit, retention_days=10))
    assert apply_retention(client, shorter) == ["audit"]
    assert _ttl_days(client, first.clickhouse.database)["audit"] == 10
    now = time.time()
    client.command(
        "INSERT INTO audit (id, at, actor, action, source) VALUES "
        f"('{'a' * 32}', {now - 9 * DAY}, 'ops', 'silence.add', 'cli'), "
        f"('{'b' * 32}', {now - 11 * DAY}, 'ops', 'silence.add', 'cli')")
    client.command("OPTIMIZE TABLE audit FINAL")  # applies the TTL now
    kept = [r[0] for r in client.query("SELECT id FROM audit").result_rows]
    assert kept == ["a" * 32]
