"""Backup and restore of the embedded store with the engine's own ``BACKUP`` / ``RESTORE``.

chDB runs ClickHouse's ``BACKUP`` and ``RESTORE`` once ``backups.allowed_path`` is set,
and that is server configuration: chDB reads it from a config file named when the
engine starts (``config-file`` in the connection string), never from a query. So this
module opens the store in a process of its own, with a one-file config that allows the
backup directory and nothing else, while it holds the store lock
(:class:`~pipeline.sinks.clickhouse.owner.StoreLock`): nothing writes meanwhile.

A backup directory::

    DIR/manifest.json           what was backed up (Manifest): written last
    DIR/clickhouse/<table>/     one engine backup per table (parts, checksums, DDL)

Each table is backed up on its own, so progress is reported per table; with the lock
held and merges stopped, every table is as it was when its rows were counted, so the
tables agree with each other and with the manifest. A directory without
``manifest.json`` is an unfinished backup and is never restored.

Restore goes into a staging database with merges stopped, checks every table's row
count against the manifest and every part against its checksums (``CHECK TABLE``:
``RESTORE`` itself copies files without reading them), and only then replaces the
configured database, so a failed restore leaves the store as it was.

A running worker owns the store (one process per chDB directory) and its HTTP endpoint
is read-only on purpose, so backup and restore refuse while it runs and say how to
stop it; Kafka keeps the events meanwhile and the worker resumes from its committed
offsets. A ClickHouse server backs itself up (``BACKUP DATABASE … TO Disk(…)`` or S3 on
the server): both functions refuse a server DSN and say so.

>>> Manifest.decode(Manifest(database="inferwatch", schema_version=12,
...     tables={"events": 3}, inferwatch_version="0.1.0", clickhouse_version="26.9",
...     created_at=datetime(2026, 1, 1, tzinfo=UTC)).encode()).tables
{'events': 3}
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from xml.sax.saxutils import escape

import msgspec

from pipeline.config import Settings
from pipeline.sinks.clickhouse.client import migrations
from pipeline.sinks.clickhouse.owner import StoreBusyError, StoreLock
from pipeline.sinks.clickhouse.sql import identifier, literal

__all__ = ["MANIFEST", "BackupError", "Manifest", "backup", "read_manifest", "restore"]

MANIFEST = "manifest.json"
FORMAT = 1  # layout of a backup directory and its manifest; raise on incompatible change
_DATA = "clickhouse"
_NEW = "clickhouse.new"
_OURS = frozenset({MANIFEST, MANIFEST + ".new", _DATA, _NEW})
_LOCK_WAIT = 10.0  # s: a one-off query or migrate holds the lock briefly
_HEARTBEAT = 10.0  # s between "still copying" lines on a long table

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
Rows = Annotated[int, msgspec.Meta(ge=0)]
Say = Callable[[str], None]


class BackupError(RuntimeError):
    """A backup or restore that cannot be done, or did not verify; the message says why."""


class Manifest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a backup holds: written after every table is copied, checked by restore."""

    format: int = FORMAT
    database: Name
    schema_version: Annotated[int, msgspec.Meta(ge=0)]  # highest migration applied
    migrations: list[str] = msgspec.field(default_factory=list)
    tables: dict[Name, Rows]  # table → rows stored (parts as copied, before FINAL)
    inferwatch_version: str
    clickhouse_version: str
    created_at: datetime

    def encode(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        try:
            found = msgspec.json.decode(data, type=dict[str, Any])
        except msgspec.DecodeError as exc:
            raise BackupError(f"unreadable manifest: {exc}") from exc
        if isinstance(found.get("format"), int) and found["format"] > FORMAT:
            raise BackupError(f"manifest format {found['format']} is newer than this "
                              f"InferWatch reads ({FORMAT}): restore with the version that "
                              f"made it ({found.get('inferwatch_version', '?')}) or newer")
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.ValidationError as exc:
            raise BackupError(f"invalid manifest: {exc}") from exc


def read_manifest(directory: Path) -> Manifest:
    """The manifest of the backup in ``directory``; BackupError when there is none."""
    path = directory / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        unfinished = " (an unfinished backup: take it again)" if (
            (directory / _DATA).exists() or (directory / _NEW).exists()) else ""
        raise BackupError(f"{directory} holds no InferWatch backup: no {MANIFEST}"
                          f"{unfinished}") from None
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from exc
    return Manifest.decode(data)


def backup(settings: Settings, directory: Path, *, force: bool = False,
           say: Say = print) -> Manifest:
    """Back up the configured database of the embedded store into ``directory``."""
    data_path = _data_path(settings, "backup")
    directory = directory.resolve()
    _check_destination(directory, data_path, force)
    if not data_path.is_dir():
        raise BackupError(f"no embedded store at {data_path}: nothing to back up")
    db = settings.clickhouse.database
    with _own_store(settings), _engine(data_path, directory) as client:
        if not _exists(client, db):
            raise BackupError(f"no database {db!r} in the embedded store at {data_path}: "
                              "nothing to back up")
        tables = _tables(client, db)
        names = {t: f"{identifier(db)}.{identifier(t)}" for t in tables}
        staging = directory / _NEW
        for name in names.values():  # nobody writes (the lock), nothing merges: counts hold
            _merges(client, name, "STOP")
        try:
            counts = {t: _count(client, name) for t, name in names.items()}
            version, applied = _schema(client, db, tables)
            say(f"backing up database {db} ({len(tables)} tables, schema version {version}) "
                f"from {data_path} to {directory}")
            shutil.rmtree(staging, ignore_errors=True)  # our own unfinished copy
            staging.mkdir(parents=True)
            width = max(map(len, tables), default=0)
            for table in tables:
                started = time.monotonic()
                size = _run(client, f"BACKUP TABLE {names[table]} TO "
                            f"File({literal(str(staging / table))})", table, say)
                say(f"  {table:<{width}}  {_rows(counts[table]):>14}  {_size(size):>9}  "
                    f"{time.monotonic() - started:.1f} s")
            manifest = Manifest(
                database=db, schema_version=version, migrations=applied, tables=counts,
                inferwatch_version=_inferwatch_version(),
                clickhouse_version=str(client.server_version),
                created_at=datetime.now(UTC).replace(microsecond=0))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            with contextlib.suppress(Exception):  # the process ends soon; don't hide an error
                for name in names.values():
                    _merges(client, name, "START")
    _publish(directory, manifest)
    say(f"backup complete: {_rows(sum(counts.values()))} in {len(tables)} tables, "
        f"{directory / MANIFEST} written")
    return manifest


def restore(settings: Settings, directory: Path, *, force: bool = False,
            say: Say = print) -> Manifest:
    """Restore the backup in ``directory`` as the configured database, verified (rows and
    checksums) before it replaces anything."""
    data_path = _data_path(settings, "restore")
    directory = directory.resolve()
    manifest = read_manifest(directory)
    shipped = max((v for v, _, _ in migrations()), default=0)
    if manifest.schema_version > shipped:
        raise BackupError(
            f"the backup has schema version {manifest.schema_version}, newer than this "
            f"InferWatch ({_inferwatch_version()}) knows ({shipped}): restore with InferWatch "
            f"{manifest.inferwatch_version} or newer")
    missing = [t for t in manifest.tables if not (directory / _DATA / t).is_dir()]
    if missing:
        raise BackupError(f"the backup in {directory} is incomplete: no copy of "
                          f"{', '.join(missing)} under {directory / _DATA}")
    db = settings.clickhouse.database
    staging = f"{db}__restore"
    with _own_store(settings), _engine(data_path, directory) as client:
        present = _tables(client, db) if _exists(client, db) else []
        if present and not force:
            rows = sum(_count(client, f"{identifier(db)}.{identifier(t)}") for t in present)
            raise BackupError(
                f"the embedded store at {data_path} already holds database {db} "
                f"({len(present)} tables, {_rows(rows)}); restore replaces it: add --force")
        say(f"restoring database {db} (schema version {manifest.schema_version}, backed up "
            f"{manifest.created_at.isoformat()} by InferWatch {manifest.inferwatch_version}) "
            f"from {directory} into {data_path}")
        client.command(f"DROP DATABASE IF EXISTS {identifier(staging)} SYNC")  # an earlier try's
        client.command(f"CREATE DATABASE {identifier(staging)}")
        width = max(map(len, manifest.tables), default=0)
        try:
            for table, expected in manifest.tables.items():
                started = time.monotonic()
                name = f"{identifier(staging)}.{identifier(table)}"
                source = (f"RESTORE TABLE {identifier(manifest.database)}.{identifier(table)}"
                          f" AS {name} FROM File({literal(str(directory / _DATA / table))})")
                # Table first, merges stopped, then its parts: the count below is of the
                # parts as copied, not of whatever a background merge left of them.
                _run(client, f"{source} SETTINGS structure_only = 1", table, say)
                _merges(client, name, "STOP")
                size = _run(client, f"{source} SETTINGS create_table = 'must-exist', "
                            "create_database = 'must-exist'", table, say)
                _check(client, name, table)
                rows = _count(client, name)
                if rows != expected:
                    raise BackupError(f"{table}: {_rows(rows)} restored, the manifest says "
                                      f"{expected:,}; the store was left as it was")
                say(f"  {table:<{width}}  {_rows(rows):>14}  {_size(size):>9}  "
                    f"{time.monotonic() - started:.1f} s  verified")
        except BaseException:
            with contextlib.suppress(Exception):
                client.command(f"DROP DATABASE IF EXISTS {identifier(staging)} SYNC")
            raise
        if _exists(client, db):
            client.command(f"DROP DATABASE {identifier(db)} SYNC")
        client.command(f"RENAME DATABASE {identifier(staging)} TO {identifier(db)}")
        for table in manifest.tables:
            _merges(client, f"{identifier(db)}.{identifier(table)}", "START")
    pending = sum(1 for v, _, _ in migrations() if v > manifest.schema_version)
    say(f"restore complete: {_rows(sum(manifest.tables.values()))} in "
        f"{len(manifest.tables)} tables match the manifest"
        + (f"; {pending} newer migration(s) apply on the next worker start or "
           "`inferwatch migrate`" if pending > 0 else ""))
    return manifest


# -- the store ---------------------------------------------------------------------------


def _data_path(settings: Settings, verb: str) -> Path:
    if not settings.embedded:
        raise BackupError(
            f"inferwatch {verb} works on the embedded store; with a ClickHouse server, "
            f"{verb} on the server (BACKUP/RESTORE DATABASE {settings.clickhouse.database} "
            "with a Disk or S3 destination configured there: see docs/backup.md)")
    path = settings.clickhouse_dsn.removeprefix("chdb://")
    if not path or path in ("memory", ":memory:") or path.startswith(":memory:"):
        raise BackupError(f"the embedded store is in memory ({settings.clickhouse_dsn}): "
                          f"nothing on disk to {verb}")
    return Path(path).resolve()


@contextlib.contextmanager
def _own_store(settings: Settings) -> Iterator[None]:
    """Hold the store lock; refuse at once if a worker owns the store, else wait briefly."""
    lock = StoreLock(settings.home_path)
    deadline = time.monotonic() + _LOCK_WAIT
    while not lock.try_acquire():
        owner = lock.owner()
        if owner is not None:
            raise StoreBusyError(
                f"the embedded store under {settings.home_path} is owned by a running worker "
                f"(pid {owner.pid}); stop it first (kill -TERM {owner.pid}, or stop its "
                "service), then start it again afterwards: Kafka keeps the events meanwhile")
        if time.monotonic() >= deadline:
            raise StoreBusyError(
                f"the embedded store under {settings.home_path} is in use by another process "
                f"(a query, migrate, backup or a starting worker) for over {_LOCK_WAIT:.0f} s; "
                "try again when it is done")
        time.sleep(0.2)
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _engine(data_path: Path, allowed: Path) -> Iterator[Any]:
    """A chDB client on ``data_path`` whose engine may back up to / restore from ``allowed``.

    ``backups.allowed_path`` is server configuration, read once when the engine starts;
    a process that already opened a chDB engine keeps the configuration it had."""
    import clickhouse_connect

    data_path.mkdir(parents=True, exist_ok=True)
    allowed.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inferwatch-backup-") as tmp:
        config = Path(tmp) / "config.xml"
        config.write_text("<clickhouse><backups><allowed_path>"
                          f"{escape(str(allowed))}/</allowed_path></backups></clickhouse>\n")
        try:
            client = clickhouse_connect.get_client(
                interface="chdb", path=str(data_path), chdb_options={"config-file": str(config)})
        except Exception as exc:
            raise BackupError(f"cannot open the embedded store at {data_path}: "
                              f"{_first_line(exc)}") from exc
        try:
            yield client
        finally:
            client.close()


def _run(client: Any, statement: str, table: str, say: Say) -> int:
    """Run a BACKUP or RESTORE in the background, a line every so often; bytes copied."""
    try:
        rows = client.query(f"{statement} ASYNC").result_rows
    except Exception as exc:
        text = _first_line(exc)
        if "allowed_path" in text and "not set" in text:
            raise BackupError("this process opened the embedded store before, without "
                              "backups allowed: run inferwatch backup/restore as a process "
                              "of its own") from exc
        raise BackupError(f"{table}: {text}") from exc
    ident = rows[0][0]
    started = last = time.monotonic()
    while True:
        status, error, size = client.query(
            "SELECT status, error, total_size FROM system.backups WHERE id = {id:String}",
            parameters={"id": ident}).result_rows[0]
        if status in ("BACKUP_CREATED", "RESTORED"):
            return int(size)
        if status.endswith(("FAILED", "CANCELLED")):
            raise BackupError(f"{table}: {status.lower()}: {_first_line(error)}" if error
                              else f"{table}: {status.lower()}")
        now = time.monotonic()
        if now - last >= _HEARTBEAT:
            say(f"  {table}: still copying ({now - started:.0f} s)")
            last = now
        time.sleep(0.05 if now - started < 1 else 0.5)


def _exists(client: Any, db: str) -> bool:
    return bool(client.query("SELECT count() FROM system.databases WHERE name = {db:String}",
                             parameters={"db": db}).result_rows[0][0])


def _tables(client: Any, db: str) -> list[str]:
    return [r[0] for r in client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND NOT is_temporary "
        "ORDER BY name", parameters={"db": db}).result_rows]


def _count(client: Any, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


class _CheckedPart(msgspec.Struct):
    part_path: str
    is_passed: int
    message: str


def _check(client: Any, name: str, table: str) -> None:
    """Every part's files against its checksums (RESTORE copies them without looking)."""
    found = client.raw_query(f"CHECK TABLE {name} FORMAT JSONEachRow "
                             "SETTINGS check_query_single_value_result = 0")
    for part in msgspec.json.decode(b"[" + b",".join(found.splitlines()) + b"]",
                                    type=list[_CheckedPart]):
        if not part.is_passed:
            raise BackupError(f"{table}: part {part.part_path} of the backup is damaged "
                              f"({_first_line(part.message)}); the store was left as it was")


def _merges(client: Any, table: str, verb: str) -> None:
    client.command(f"SYSTEM {verb} MERGES {table}")
    client.command(f"SYSTEM {verb} TTL MERGES {table}")


def _schema(client: Any, db: str, tables: list[str]) -> tuple[int, list[str]]:
    if "schema_migrations" not in tables:
        return 0, []
    rows = client.query(f"SELECT version, name FROM {identifier(db)}.schema_migrations FINAL "
                        "ORDER BY version").result_rows
    return (int(rows[-1][0]) if rows else 0), [str(r[1]) for r in rows]


# -- the directory -----------------------------------------------------------------------


def _check_destination(directory: Path, data_path: Path, force: bool) -> None:
    if directory == data_path or data_path in directory.parents:
        raise BackupError(f"{directory} is inside the store itself ({data_path}): "
                          "choose a directory outside it")
    if directory.exists() and not directory.is_dir():
        raise BackupError(f"{directory} is not a directory")
    entries = set(os.listdir(directory)) if directory.is_dir() else set()
    foreign = sorted(entries - _OURS)
    if foreign:
        raise BackupError(f"{directory} is not empty and holds no InferWatch backup "
                          f"({foreign[0]}, …): choose a new or empty directory")
    if MANIFEST in entries and not force:
        try:
            taken = f" (taken {read_manifest(directory).created_at.isoformat()})"
        except BackupError:
            taken = ""
        raise BackupError(f"{directory} already holds a backup{taken}; add --force to "
                          "replace it, or choose another directory")


def _publish(directory: Path, manifest: Manifest) -> None:
    """Swap the new copy in, manifest last: a crash in between leaves no manifest (an
    unfinished backup, never restored), not a manifest describing other data."""
    (directory / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(directory / _DATA, ignore_errors=True)
    (directory / _NEW).rename(directory / _DATA)
    tmp = directory / (MANIFEST + ".new")
    with open(tmp, "wb") as fh:
        fh.write(manifest.encode())
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(directory / MANIFEST)


# -- small helpers -----------------------------------------------------------------------


def _rows(n: int) -> str:
    return f"{n:,} row{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError  # unreachable


def _first_line(exc: BaseException | str) -> str:
    """ClickHouse's message without its stack trace, or the exception's type name."""
    text = str(exc).strip().split(", Stack trace", 1)[0]
    return text.splitlines()[0] if text else type(exc).__name__


def _inferwatch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("inferwatch")
    except PackageNotFoundError:
        return "unknown"
