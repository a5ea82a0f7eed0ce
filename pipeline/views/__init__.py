"""Read-side views of the store: the SQL that ``inferwatch top``, the web UI and the
Grafana dashboards share, so a figure means the same wherever it is shown.

A view is a catalogue of columns (name, SQL, how to show it) plus a function that builds
one read-only ``SELECT`` from it; no I/O here (run it with
:func:`pipeline.sinks.clickhouse.query.run_query` or any ClickHouse client).
"""

from pipeline.views.overview import OVERVIEW_COLUMNS, Column, overview_sql

__all__ = ["OVERVIEW_COLUMNS", "Column", "overview_sql"]
