"""The store after a simulated run, for the dashboards' queries."""

from tests.unit.views.conftest import run_store

__all__ = ["run_store"]
