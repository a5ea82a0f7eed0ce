"""``inferwatch backup`` / ``restore`` on the real engine: back up, wipe, restore, compare.

chDB opens one data directory per process, and the engine takes ``backups.allowed_path``
only when it starts, so everything that opens a store runs in a process of its own:
the fill (the simulated run and its quality path, written by the sink's own row code,
and a row into any table they do not write), each ``python -m pipeline backup|restore``,
and each read-back. Tables are compared by rows after FINAL and by a checksum of every
row, both unchanged by background merges; the row counts in the manifest (parts as
copied) and the parts' checksums are what restore itself verifies: a manifest off by one
row, or one byte flipped in a part, must make it fail and leave the store as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.sinks.clickhouse.backup import MANIFEST, BackupError, Manifest, read_manifest
from pipeline.sinks.clickhouse.owner import StoreLock

ROOT = Path(__file__).resolve().parents[3]

# Every table: rows after FINAL, and a sum of row hashes (order-free, Nullable-safe).
SNAPSHOT = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
tables = [r[0] for r in client.query(
    "SELECT name FROM system.tables WHERE database = 'inferwatch' ORDER BY name").result_rows]
print(json.dumps({t: list(client.query(
    f"SELECT count(), toString(sum(cityHash64(toString(tuple(*))))) FROM inferwatch.{t} "
    "SETTINGS final = 1").result_rows[0]) for t in tables}))
"""

FILL = """
import sys
from pipeline.config import Settings
from pipeline.sinks.clickhouse.client import apply_migrations, connect
from tests.unit.grafana.quality_run import quality_run, store_quality
from tests.unit.views.simulated_run import simulated_run, store_run
settings = Settings(home=sys.argv[1])
client = connect(settings)
apply_migrations(client, settings)
store_run(client, simulated_run())
store_quality(client, quality_run())
# A table the simulated run does not write (one added since) gets a row, time columns now.
for table, in client.query("SELECT name FROM system.tables WHERE database = 'inferwatch' "
                           "AND total_rows = 0").result_rows:
    columns = client.query(
        "SELECT name, type FROM system.columns WHERE database = 'inferwatch' AND table = "
        "{t:String} AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position",
        parameters={"t": table}).result_rows
    values = [(n, "now64(3)") for n, t in columns if "DateTime" in t and "Array" not in t]
    values = values or [(columns[0][0], f"defaultValueOfTypeName('{columns[0][1]}')")]
    client.command(f"INSERT INTO inferwatch.{table} ({', '.join(n for n, _ in values)}) "
                   f"SELECT {', '.join(v for _, v in values)}")
client.close()
""" + SNAPSHOT.replace("sys.argv[1]", "sys.argv[1] + '/clickhouse'")

TRUNCATE = """
import sys
import clickhouse_connect
clickhouse_connect.get_client(interface="chdb", path=sys.argv[1]).command(
    "TRUNCATE TABLE inferwatch.feedback")
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH_")}
    return env | {"INFERWATCH_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


def _python(script: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=_env(home),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def inferwatch(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          env=_env(home, **env), capture_output=True, text=True, timeout=120)


def snapshot(home: Path) -> dict[str, list[Any]]:
    return json.loads(_python(SNAPSHOT, str(home / "clickhouse"), home=home).stdout)


def test_back_up_wipe_restore_gives_every_table_back(tmp_path: Path) -> None:
    home, target = tmp_path / "home", tmp_path / "backup"
    before = json.loads(_python(FILL, str(home), home=home).stdout)
    # The comparison below means something only if every table has rows to lose.
    assert {"events", "feedback", "quality_windows", "rollup_1m", "alerts",
            "schema_migrations"} <= set(before)
    assert all(rows > 0 for rows, _ in before.values()), before

    made = inferwatch("backup", str(target), home=home)
    assert made.returncode == 0, made.stderr
    manifest = read_manifest(target)
    assert set(manifest.tables) == set(before)
    assert all(manifest.tables[t] >= rows for t, (rows, _) in before.items())
    assert manifest.schema_version == len(manifest.migrations) > 0
    for table, rows in manifest.tables.items():  # a progress line per table
        assert f" {rows:,} row" in next(line for line in made.stdout.splitlines()
                                        if line.split()[:1] == [table])

    shutil.rmtree(home)
    back = inferwatch("restore", str(target), home=home)
    assert back.returncode == 0, back.stderr
    verified = [line.split()[0] for line in back.stdout.splitlines() if
                line.endswith("verified")]
    assert sorted(verified) == sorted(manifest.tables)
    assert snapshot(home) == before

    again = inferwatch("restore", str(target), home=home)
    assert again.returncode == 1
    assert "already holds database inferwatch" in again.stderr
    assert "add --force" in again.stderr

    # Restore checks what it restored: one row more in the manifest than in the copy.
    good = (target / MANIFEST).read_bytes()
    wrong = json.loads(good)
    wrong["tables"]["events"] += 1
    (target / MANIFEST).write_text(json.dumps(wrong))
    failed = inferwatch("restore", "--force", str(target), home=home)
    assert failed.returncode == 1
    events = manifest.tables["events"]
    assert (f"events: {events:,} rows restored, the manifest says {events + 1:,}; the store "
            "was left as it was") in failed.stderr
    (target / MANIFEST).write_bytes(good)

    # ... and every part against its checksums: one byte flipped in a copy of alerts (a
    # small table: on a mismatch the engine looks for the flipped bit, block by block).
    damaged = tmp_path / "damaged"
    shutil.copytree(target, damaged)
    data = max((damaged / "clickhouse" / "alerts").rglob("*.bin"), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(raw)
    failed = inferwatch("restore", "--force", str(damaged), home=home)
    assert failed.returncode == 1
    assert "alerts: part " in failed.stderr  # the damaged table (its part number: the engine's)
    assert "of the backup is damaged (" in failed.stderr
    assert "(CHECKSUM_DOESNT_MATCH)" in failed.stderr
    assert snapshot(home) == before  # both failures left the store as it was


    replaced = inferwatch("restore", "--force", str(target), home=home)
    assert replaced.returncode == 0, replaced.stderr
    assert snapshot(home) == before  # replaced, not added to

    # `backup --force` replaces the backup in the directory: what it restores is the
    # store as it is now (one table emptied since), nothing of the copy it replaced.
    _python(TRUNCATE, str(home / "clickhouse"), home=home)
    changed = {**before, "feedback": [0, "0"]}  # no rows: count 0, hash sum 0
    forced = inferwatch("backup", "--force", str(target), home=home)
    assert forced.returncode == 0, forced.stderr
    assert read_manifest(target).tables["feedback"] == 0
    shutil.rmtree(home)
    assert inferwatch("restore", str(target), home=home).returncode == 0
    assert snapshot(home) == changed


def _fake_backup(directory: Path) -> None:
    (directory / "clickhouse" / "events").mkdir(parents=True)
    (directory / MANIFEST).write_bytes(Manifest(
        database="inferwatch", schema_version=1, migrations=["0001_events"],
        tables={"events": 1}, inferwatch_version="0.1.0", clickhouse_version="26.9.2.1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC)).encode())


def test_both_refuse_while_a_worker_owns_the_store(tmp_path: Path) -> None:
    home, target = tmp_path / "home", tmp_path / "backup"
    (home / "clickhouse").mkdir(parents=True)  # the worker's store, its lock and owner file
    lock = StoreLock(home)  # (no engine is opened in this process)
    assert lock.try_acquire()
    try:
        lock.publish("127.0.0.1", 8123, "inferwatch", "secret")
        refused = inferwatch("backup", str(target), home=home)
        assert refused.returncode == 1
        assert (f"is owned by a running worker (pid {os.getpid()}); stop it first "
                f"(kill -TERM {os.getpid()}") in refused.stderr
        assert not (target / MANIFEST).exists()
        assert not any((home / "clickhouse").iterdir())  # the store was never opened

        _fake_backup(target)
        refused = inferwatch("restore", "--force", str(target), home=home)
        assert refused.returncode == 1
        assert f"running worker (pid {os.getpid()})" in refused.stderr
        assert not any((home / "clickhouse").iterdir())
    finally:
        lock.release()


def test_a_server_dsn_is_backed_up_on_the_server(tmp_path: Path) -> None:
    for verb in ("backup", "restore"):
        done = inferwatch(verb, str(tmp_path / "b"), home=tmp_path,
                          INFERWATCH_CLICKHOUSE="http://default:x@127.0.0.1:1")
        assert done.returncode == 1
        assert f"with a ClickHouse server, {verb} on the server" in done.stderr


def test_refusals_before_the_store_is_opened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"")
    done = inferwatch("backup", "--force", str(foreign), home=home)
    assert "is not empty and holds no InferWatch backup (cat.jpg" in done.stderr

    done = inferwatch("backup", str(tmp_path / "b"), home=home)
    assert f"no embedded store at {home / 'clickhouse'}: nothing to back up" in done.stderr

    inside = inferwatch("backup", str(home / "clickhouse" / "b"), home=home)
    assert "is inside the store itself" in inside.stderr

    existing = tmp_path / "existing"
    _fake_backup(existing)
    done = inferwatch("backup", str(existing), home=home)
    assert "already holds a backup (taken 2026-01-01T00:00:00+00:00); add --force" in done.stderr

    done = inferwatch("restore", str(tmp_path / "nothing"), home=home)
    assert "holds no InferWatch backup: no manifest.json" in done.stderr
    unfinished = tmp_path / "unfinished"
    (unfinished / "clickhouse.new").mkdir(parents=True)
    done = inferwatch("restore", str(unfinished), home=home)
    assert "(an unfinished backup: take it again)" in done.stderr

    (existing / "clickhouse" / "events").rmdir()
    done = inferwatch("restore", str(existing), home=home)
    assert "is incomplete: no copy of events" in done.stderr
    for result in (done, inside):
        assert result.returncode == 1 and result.stderr.count("\n") == 1  # one line
    assert not (home / "clickhouse").exists()  # none of them opened the store


def test_the_manifest_is_validated_where_it_is_read() -> None:
    good = Manifest(database="inferwatch", schema_version=12, tables={"events": 3},
                    inferwatch_version="0.1.0", clickhouse_version="26.9.2.1",
                    created_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert Manifest.decode(good.encode()) == good
    data = json.loads(good.encode())
    cases = {
        "unreadable manifest": b"{not json",
        "invalid manifest: Expected `int` >= 0": {**data, "tables": {"events": -1}},
        "invalid manifest: Expected `str` matching": {**data, "tables": {"a; DROP": 1}},
        "invalid manifest: Object contains unknown field `extra`": {**data, "extra": 1},
        "invalid manifest: Object missing required field `tables`":
            {k: v for k, v in data.items() if k != "tables"},
        "manifest format 2 is newer than this InferWatch reads (1)": {**data, "format": 2},
    }
    for message, case in cases.items():
        raw = case if isinstance(case, bytes) else json.dumps(case).encode()
        with pytest.raises(BackupError, match=message.replace("(", r"\(").replace(")", r"\)")):
            Manifest.decode(raw)


def test_a_backup_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    _fake_backup(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_bytes())
    (tmp_path / "b" / MANIFEST).write_text(json.dumps({**manifest, "schema_version": 9999}))
    done = inferwatch("restore", str(tmp_path / "b"), home=tmp_path / "home")
    assert done.returncode == 1
    assert "the backup has schema version 9999, newer than this InferWatch" in done.stderr
