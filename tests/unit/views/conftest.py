"""A store holding a simulated run, shared by the tests of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.conftest import Store, _open
from tests.unit.views.simulated_run import simulated_run, store_run


@pytest.fixture(scope="module")
def run_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The embedded store after the simulated run (:mod:`tests.unit.views.simulated_run`)."""
    for store in _open(tmp_path_factory.mktemp("simulated")):
        store_run(store.client, simulated_run())
        yield store
