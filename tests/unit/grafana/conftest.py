"""The store after a simulated run, with model quality, for the dashboards' queries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.conftest import Store
from tests.unit.grafana.quality_run import quality_run, store_quality
from tests.unit.views.simulated_run import simulated_run, store_run


@pytest.fixture(scope="module")
def run_store(store: Store) -> Iterator[Store]:
    """The shared store (every migration applied) holding the simulated run
    (:mod:`tests.unit.views.simulated_run`) and its quality windows and feedback fates
    (:mod:`tests.unit.grafana.quality_run`)."""
    store_run(store.client, simulated_run())
    store_quality(store.client, quality_run())
    yield store
