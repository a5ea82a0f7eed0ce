"""Quality contracts → ClickHouse rows (``quality_windows``, ``feedback``), no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.quality.records import Fate
from pipeline.sinks.clickhouse.rows import _ticks, struct_columns
from schemas.quality import QualityWindow

__all__ = ["FATE_RANK", "FEEDBACK_COLUMNS", "QUALITY_COLUMNS", "feedback_columns",
           "quality_columns"]

QUALITY_COLUMNS = [n for n in QualityWindow.__struct_fields__ if n != "schema_version"]
FEEDBACK_COLUMNS = [
    "feedback_id", "event_id", "request_id", "timestamp", "kind", "label", "label_number",
    "satisfaction", "value", "source", "attributes", "status", "fate_rank", "series_key",
    "inference_time", "prediction",
]
# one row per feedback id is kept: the best fate (a re-delivery's "duplicate" never
# replaces the "joined" it repeats)
FATE_RANK = {"joined": 3, "repeat": 2, "unmatched": 1, "duplicate": 0}


def quality_columns(rows: Sequence[QualityWindow]) -> list[list]:
    """Column-oriented data of quality windows (``classes`` as named tuples)."""
    columns = struct_columns(rows, QUALITY_COLUMNS)
    at = QUALITY_COLUMNS.index("classes")
    columns[at] = [{name: (c.precision, c.recall, c.f1, c.support)
                    for name, c in classes.items()} for classes in columns[at]]
    return columns


def _text(value: str | float | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


def feedback_columns(fates: Sequence[Fate]) -> list[list]:
    """Column-oriented rows of ``feedback``: each feedback with its fate."""
    values = []
    for fate in fates:
        f = fate.feedback
        number = None if isinstance(f.label, str) or f.label is None else float(f.label)
        values.append((
            f.feedback_id, f.event_id or "", f.request_id or "",
            _ticks(f.timestamp, "timestamp"), f.kind, _text(f.label), number,
            f.satisfaction, f.value, f.source, f.attributes, fate.status,
            FATE_RANK.get(fate.status, 0), fate.series_key,
            None if fate.inference_time is None else _ticks(fate.inference_time,
                                                            "inference_time"),
            _text(fate.prediction)))
    return [list(column) for column in zip(*values, strict=True)] if values else []
