"""Shared fixtures of the unit tests: the embedded ClickHouse store (chDB).

chDB opens one data directory per process at a time, so every store here is closed when
its scope ends, before the next test module (or test) opens its own directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pipeline.config import Settings


class Store(NamedTuple):
    """An open embedded store and the settings it was opened with."""

    client: Any  # clickhouse-connect's chDB client
    settings: Settings


def _open(home: Path, *, migrate: bool = True) -> Iterator[Store]:
    from pipeline.sinks.clickhouse.client import apply_migrations, connect

    settings = Settings(home=str(home))
    client = connect(settings)
    try:
        if migrate:
            apply_migrations(client, settings)
        yield Store(client, settings)
    finally:
        client.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[Store]:
    """A store with every migration applied, shared by the tests of one module."""
    yield from _open(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))


@pytest.fixture
def fresh_store(tmp_path: Path) -> Iterator[Store]:
    """A store with every migration applied, for one test alone."""
    yield from _open(tmp_path)


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[Store]:
    """A store with no migration applied yet (the test applies them)."""
    yield from _open(tmp_path, migrate=False)
