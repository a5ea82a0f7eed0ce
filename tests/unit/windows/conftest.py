"""Fixtures of the windows tests: the shared store (``tests/unit/conftest.py``) as its client."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def store(store: Any) -> Any:
    """The module's embedded store with every migration applied: here, its client alone."""
    return store.client
