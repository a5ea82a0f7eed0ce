"""One sink batch: the decoded rows per table, where each row came from, and what the
store refused, so a refused row can go to the dead-letter topic as its own message.

Plain data; :class:`~pipeline.sinks.clickhouse.writer.ClickHouseSink` fills, inserts and
commits it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from pipeline.sinks.clickhouse.audit_rows import AUDIT_COLUMNS, audit_columns
from pipeline.sinks.clickhouse.quality_rows import (
    FEEDBACK_COLUMNS,
    QUALITY_COLUMNS,
    feedback_columns,
    quality_columns,
)
from pipeline.sinks.clickhouse.rows import (
    ALERT_COLUMNS,
    ANOMALY_COLUMNS,
    DRIFT_COLUMNS,
    EVENT_COLUMNS,
    METRICS_COLUMNS,
    RESOURCE_COLUMNS,
    RESOURCE_METRICS_COLUMNS,
    drift_row_columns,
    event_columns,
    resource_columns,
    struct_columns,
)
from pipeline.sources.codec import Rejection
from pipeline.sources.dlq import DeadLetter
from schemas.event import InferenceEvent

__all__ = ["Batch", "Refusal", "Rows", "Source", "Table", "positions"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a row came from: its Kafka record, and its position if the record held several."""

    record: ConsumerRecord
    element: int | None = None  # None: the record's value is this row alone


@dataclass
class Rows:
    """Decoded rows of one contract and, per row, its Kafka record and its position in it.

    Two flat lists rather than one source object per row: a message of 500 events adds
    its record 500 times by list repetition, so a batch of events allocates nothing per
    row beyond the decoded Struct (fewer objects for the cycle collector to walk too).
    """

    items: list[Any] = field(default_factory=list)
    records: list[ConsumerRecord] = field(default_factory=list)
    elements: list[int | None] = field(default_factory=list)  # None: the record held this row alone

    def add(self, item: Any, record: ConsumerRecord, element: int | None = None) -> None:
        self.items.append(item)
        self.records.append(record)
        self.elements.append(element)

    def extend(self, items: list[Any], record: ConsumerRecord,
               elements: list[int | None]) -> None:
        """The rows of one message, ``elements`` their positions in it."""
        self.items.extend(items)
        self.records.extend([record] * len(items))
        self.elements.extend(elements)

    def source(self, row: int) -> Source:
        return Source(self.records[row], self.elements[row])

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Refusal:
    table: str
    row: Any  # the Struct the row was built from
    source: Source
    error: str


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: list[str]
    rows: Rows  # what the columns are built from, one per row, and where each came from
    build: Callable[[Sequence[Any], Sequence[ConsumerRecord]], list[list]]


@dataclass
class Batch:
    events: Rows = field(default_factory=Rows)
    resources: Rows = field(default_factory=Rows)
    windows: Rows = field(default_factory=Rows)
    host_windows: Rows = field(default_factory=Rows)
    alerts: Rows = field(default_factory=Rows)
    scores: Rows = field(default_factory=Rows)
    quality_windows: Rows = field(default_factory=Rows)
    fates: Rows = field(default_factory=Rows)  # feedback with its fate in the join
    audit: Rows = field(default_factory=Rows)  # AuditEvents
    rejected: int = 0
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    messages: int = 0
    written: set[str] = field(default_factory=set)  # tables done: a retry skips them
    refused: list[Refusal] = field(default_factory=list)
    suspect: bool = False  # failing repeatedly for no known reason: isolate any error
    letters: list[DeadLetter] = field(default_factory=list)  # undecodable records

    def tables(self) -> list[Table]:
        """Every table this batch writes, with the rows and the builder of its columns."""
        drift = Rows()
        for window, record, element in zip(self.scores.items, self.scores.records,
                                           self.scores.elements, strict=True):
            for entry in window.drift:
                drift.add((window, entry), record, element)

        def events(rows: Sequence[InferenceEvent],
                   records: Sequence[ConsumerRecord]) -> list[list]:
            return event_columns(rows, [r.partition for r in records],
                                 [r.offset for r in records])

        def structs(names: list[str]) -> Callable[[Sequence[Any], Sequence[ConsumerRecord]],
                                                  list[list]]:
            return lambda rows, _: struct_columns(rows, names)

        return [
            Table("events", EVENT_COLUMNS, self.events, events),
            Table("resources", RESOURCE_COLUMNS, self.resources,
                   lambda rows, _: resource_columns(rows)),
            Table("window_metrics", METRICS_COLUMNS, self.windows, structs(METRICS_COLUMNS)),
            Table("resource_metrics", RESOURCE_METRICS_COLUMNS, self.host_windows,
                   structs(RESOURCE_METRICS_COLUMNS)),
            Table("alerts", ALERT_COLUMNS, self.alerts, structs(ALERT_COLUMNS)),
            Table("anomaly_scores", ANOMALY_COLUMNS, self.scores, structs(ANOMALY_COLUMNS)),
            Table("drift_scores", DRIFT_COLUMNS, drift,
                   lambda rows, _: drift_row_columns(rows)),
            Table("quality_windows", QUALITY_COLUMNS, self.quality_windows,
                  lambda rows, _: quality_columns(rows)),
            Table("feedback", FEEDBACK_COLUMNS, self.fates,
                  lambda rows, _: feedback_columns(rows)),
            Table("audit", AUDIT_COLUMNS, self.audit, lambda rows, _: audit_columns(rows)),
        ]

    def refused_in(self, table: str) -> int:
        return sum(1 for r in self.refused if r.table == table)


def positions(count: int, rejections: Sequence[Rejection]) -> list[int | None]:
    """Batch positions of the ``count`` decoded elements of one message (None: the message
    held only this one, so its raw value is the row's own bytes)."""
    if not rejections:
        return [None] if count == 1 else list(range(count))
    skipped = {r.index for r in rejections if r.index is not None}
    out: list[int | None] = []
    index = 0
    while len(out) < count:
        if index not in skipped:
            out.append(index)
        index += 1
    return out
