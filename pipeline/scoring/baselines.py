"""Pinned drift baselines: build a reference from stored events or a file, keep it on Kafka.

A :class:`Baseline` is one series' pinned :class:`~pipeline.scoring.drift.reference.Reference` plus
where it came from. Baselines live on a compacted, single-partition topic
(``inferwatch.baselines``, key = series key) that every worker reads from the start and
follows, like the silences: durable, shared, written by ``inferwatch baseline set``.

Versions only grow: :func:`~pipeline.scoring.baseline_topic.publish_baseline` reads the
topic and stores ``latest + 1`` for the series, so a drift value naming
``reference_version`` names exactly one baseline. Two publishers racing on one series
may both pick the same number; the later write wins (the follower keeps the last record
of the highest version), which is the compacted topic's own rule, so every worker
converges on the same baseline.

Builders: :func:`build_from_clickhouse` reads the raw ``events`` of a series and an event-time
range through the read-only query path
(:func:`pipeline.sinks.clickhouse.query.run_query`: a ClickHouse server,
the worker that owns the embedded store, or the embedded store itself), a page at a time.
:func:`pipeline.scoring.baseline_files.build_from_file` reads a file of events. The maths
stays in :mod:`pipeline.scoring.drift`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any

import msgspec

from pipeline.config import Settings
from pipeline.scoring.drift.reference import Reference
from pipeline.sinks.clickhouse.sql import literal
from pipeline.windows.drift_profile import FEATURE_PREFIX, OPERATIONAL, DriftProfile, MonitorSpec
from pipeline.windows.profile import series_key as make_series_key
from schemas.event import InferenceEvent

__all__ = [
    "Baseline",
    "BaselineError",
    "NoEventsError",
    "build_from_clickhouse",
    "events_sql",
    "format_time",
    "next_version",
    "parse_series_key",
    "parse_time",
    "resolve_series",
    "stamp",
]

log = logging.getLogger(__name__)

PAGE_SIZE = 50_000  # events per read-only query when building from ClickHouse
_BATCH = 10_000  # events profiled per call
# Series labels that are String columns of the events table; others are read from attributes.
_STRING_COLUMNS = frozenset({
    "request_id", "trace_id", "span_id", "service", "environment", "tenant", "user", "region",
    "model", "model_version", "provider", "operation", "status", "error_type", "finish_reason",
})
_EVENT_FIELDS = frozenset(InferenceEvent.__struct_fields__) - {"features", "attributes"}


class BaselineError(ValueError):
    """A baseline cannot be built or read; the message says which series, file or range."""


class NoEventsError(BaselineError):
    """The series has no event in the requested range or file: nothing to pin."""


# --------------------------------------------------------------------------- the record
class Baseline(msgspec.Struct, kw_only=True, frozen=True):
    """One series' pinned reference, as stored on the baselines topic (JSON, key = series).

    ``version`` is 0 until :func:`publish_baseline` stamps it; stored baselines count from 1.
    ``reference`` is :meth:`Reference.to_builtins` of the pinned reference, whose own version
    equals ``version`` once stored. ``source`` says where the events came from
    (``clickhouse:<from>..<to>`` or ``file:<path>``), ``events`` how many were used.

    >>> from pipeline.windows.drift_profile import DriftProfile, MonitorSpec
    >>> events = [InferenceEvent(event_id=str(i), timestamp=float(i), model="m",
    ...                          latency_ms=float(i)) for i in range(1, 5)]
    >>> spec = MonitorSpec(prediction="none", confidence=False)
    >>> labels = {"model": "m", "model_version": "", "operation": ""}
    >>> b = Baseline.of_events(events, spec, labels, source="file:/tmp/e.jsonl")
    >>> b.series_key, b.events, b.to_reference()["latency_ms"].count
    ('model=m|model_version=|operation=', 4, 4)
    >>> msgspec.json.decode(msgspec.json.encode(b), type=Baseline) == b
    True
    """

    series_key: Annotated[str, msgspec.Meta(min_length=1)]
    labels: dict[str, str]
    version: Annotated[int, msgspec.Meta(ge=0)] = 0
    created_at: float = 0.0
    created_by: str = ""
    source: str
    events: Annotated[int, msgspec.Meta(ge=1)]
    type_mismatches: Annotated[int, msgspec.Meta(ge=0)] = 0
    spec: MonitorSpec
    reference: dict[str, Any]

    def __post_init__(self) -> None:
        if make_series_key(self.labels) != self.series_key:
            raise ValueError(f"series_key {self.series_key!r} does not match labels {self.labels}")
        if self.to_reference().source != "pinned":
            raise ValueError("a baseline's reference must be pinned")

    def to_reference(self) -> Reference:
        """The pinned :class:`Reference` (raises ``ValueError`` on a malformed payload)."""
        try:
            return Reference.from_builtins(self.reference)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed reference payload: {exc!r}") from exc

    @property
    def built_from(self) -> float:
        """Start of the event-time range the reference covers (Unix seconds)."""
        return float(self.reference["from"])

    @property
    def built_to(self) -> float:
        """End of the event-time range the reference covers (Unix seconds)."""
        return float(self.reference["to"])

    def counts(self) -> dict[str, int]:
        """Values per monitored name in the reference (sparse features show up here)."""
        return {name: h.count for name, h in sorted(self.to_reference().histograms.items())}

    @classmethod
    def of_events(
        cls,
        events: Iterable[InferenceEvent] | Iterable[Sequence[InferenceEvent]],
        spec: MonitorSpec,
        labels: Mapping[str, str],
        *,
        source: str,
        start: float | None = None,
        end: float | None = None,
        created_by: str = "",
    ) -> Baseline:
        """An unstored (version 0) baseline of ``events`` (or batches of them). Pure.

        The reference covers ``[start, end]`` when given, else the events' own time span.
        Raises :class:`NoEventsError` when there is no event.
        """
        profile = DriftProfile()
        count, first, last = 0, math.inf, -math.inf
        for batch in _batches(events):
            if not batch:
                continue
            profile.add_events(batch, spec)
            count += len(batch)
            first = min(first, min(e.timestamp for e in batch))
            last = max(last, max(e.timestamp for e in batch))
        key = make_series_key(labels)
        if count == 0:
            raise NoEventsError(f"no events for series {key} ({source})")
        reference = Reference.pinned(profile, version=0,
                                     built_from=first if start is None else start,
                                     built_to=last if end is None else end)
        return cls(series_key=key, labels=dict(labels), source=source, events=count,
                   type_mismatches=profile.type_mismatches, spec=spec,
                   reference=reference.to_builtins(), created_by=created_by)


def _batches(
    events: Iterable[InferenceEvent] | Iterable[Sequence[InferenceEvent]],
) -> Iterator[Sequence[InferenceEvent]]:
    pending: list[InferenceEvent] = []
    for item in events:
        if isinstance(item, InferenceEvent):
            pending.append(item)
            if len(pending) >= _BATCH:
                yield pending
                pending = []
        else:
            yield item
    if pending:
        yield pending


# --------------------------------------------------------------------------- versions
def next_version(current: Baseline | None) -> int:
    """The version the next baseline of a series gets: one above the latest stored, from 1."""
    return 1 if current is None else current.version + 1


def stamp(baseline: Baseline, current: Baseline | None, now: float) -> Baseline:
    """``baseline`` as it will be stored after ``current``: next version, created ``now``.

    >>> from pipeline.windows.drift_profile import MonitorSpec
    >>> e = InferenceEvent(event_id="a", timestamp=1.0, model="m", latency_ms=1.0)
    >>> b = Baseline.of_events([e], MonitorSpec(), {"model": "m"}, source="test")
    >>> v1 = stamp(b, None, now=10.0)
    >>> v2 = stamp(b, v1, now=20.0)
    >>> (v1.version, v2.version, v2.to_reference().version, v2.created_at)
    (1, 2, 2, 20.0)
    """
    version = next_version(current)
    reference = {**baseline.reference, "ver": version}
    return msgspec.structs.replace(baseline, version=version, created_at=float(now),
                                   reference=reference)


# --------------------------------------------------------------------------- parsing
def parse_time(text: str) -> float:
    """ISO-8601 (naive means UTC) or Unix seconds → Unix seconds.

    >>> parse_time("2024-06-01T00:00:00Z"), parse_time("2024-06-01"), parse_time("1717200000.5")
    (1717200000.0, 1717200000.0, 1717200000.5)
    """
    raw = text.strip()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid time {text!r}: Unix seconds must be finite and >= 0")
        return value
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"invalid time {text!r}: use ISO-8601 (2024-06-01T12:00:00Z) "
                         "or Unix seconds (1717243200)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def format_time(seconds: float) -> str:
    """Unix seconds → ISO-8601 UTC with ``Z`` (milliseconds only when there are some).

    >>> format_time(1717200000.0), format_time(1717200000.25)
    ('2024-06-01T00:00:00Z', '2024-06-01T00:00:00.250Z')
    """
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    spec = "seconds" if when.microsecond == 0 else "milliseconds"
    return when.isoformat(timespec=spec).replace("+00:00", "Z")


def parse_series_key(text: str) -> dict[str, str]:
    """Inverse of :func:`pipeline.windows.profile.series_key` (backslash escapes honoured).

    >>> parse_series_key("model=gpt-chat|model_version=2024-06|operation=chat")
    {'model': 'gpt-chat', 'model_version': '2024-06', 'operation': 'chat'}
    >>> parse_series_key(r"tenant=a\\|b|model=m")
    {'tenant': 'a|b', 'model': 'm'}
    """
    labels: dict[str, str] = {}
    name: list[str] = []
    value: list[str] | None = None
    chars = iter(text)

    def finish() -> None:
        if value is None or not name:
            raise ValueError(f"invalid series key {text!r}: expected name=value|name=value")
        key = "".join(name)
        if key in labels:
            raise ValueError(f"invalid series key {text!r}: label {key!r} given twice")
        labels[key] = "".join(value)

    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise ValueError(f"invalid series key {text!r}: ends with a backslash")
            (name if value is None else value).append(escaped)
        elif char == "|":
            finish()
            name, value = [], None
        elif char == "=" and value is None:
            value = []
        else:
            (name if value is None else value).append(char)
    finish()
    return labels


def resolve_series(
    settings: Settings, series: str | Mapping[str, str]
) -> tuple[str, dict[str, str]]:
    """(canonical series key, labels), checked against ``metrics.series_labels``."""
    try:
        labels = parse_series_key(series) if isinstance(series, str) else dict(series)
    except ValueError as exc:
        raise BaselineError(str(exc)) from None
    expected = list(settings.metrics.series_labels)
    if set(labels) != set(expected):
        example = "|".join(f"{n}=..." for n in sorted(expected))
        raise BaselineError(
            f"series {make_series_key(labels)!r} has labels {sorted(labels)} but "
            f"metrics.series_labels is {sorted(expected)}; give e.g. {example!r}")
    return make_series_key(labels), labels


# --------------------------------------------------------------------------- ClickHouse
def _label_condition(name: str, value: str) -> str:
    if name in _STRING_COLUMNS:
        return f"{name} = {literal(value)}"
    if name in _EVENT_FIELDS:
        raise BaselineError(f"series label {name!r} is not a string column of the events table")
    return f"attributes[{literal(name)}] = {literal(value)}"  # missing key reads ''


def _ms_time(ms: int) -> str:
    return f"fromUnixTimestamp64Milli(toInt64({int(ms)}), 'UTC')"


def events_sql(
    database: str,
    labels: Mapping[str, str],
    start: float,
    end: float,
    spec: MonitorSpec,
    *,
    after: tuple[int, str] | None = None,
    limit: int = PAGE_SIZE,
) -> str:
    """One page of a series' raw events in ``[start, end)``, ordered by (timestamp, event_id).

    Only the columns ``spec`` monitors are read; ``after`` is the (timestamp ms, event_id) of
    the last row of the previous page (keyset pagination: no OFFSET re-scans).

    >>> sql = events_sql("iw", {"model": "m"}, 0.0, 60.0, MonitorSpec(), limit=10)
    >>> "FROM iw.events FINAL" in sql and "model = 'm'" in sql and sql.endswith("LIMIT 10")
    True
    """
    monitored = spec.monitored()
    columns = ["event_id", "toUnixTimestamp64Milli(timestamp) AS ts_ms"]
    features = sorted(n[len(FEATURE_PREFIX):] for n in monitored if n.startswith(FEATURE_PREFIX))
    if features:
        keys = "[" + ", ".join(literal(f) for f in features) + "]"
        columns += [f"mapFilter((k, v) -> has({keys}, k), features_num) AS features_num",
                    f"mapFilter((k, v) -> has({keys}, k), features_cat) AS features_cat"]
    columns += [n for n in ("prediction", "confidence", *OPERATIONAL) if n in monitored]
    start_ms, end_ms = round(start * 1000), round(end * 1000)
    where = [_label_condition(n, v) for n, v in sorted(labels.items())]
    where += [f"timestamp >= {_ms_time(start_ms)}", f"timestamp < {_ms_time(end_ms)}"]
    if after is not None:
        where.append(f"(timestamp, event_id) > ({_ms_time(after[0])}, {literal(after[1])})")
    return (f"SELECT {', '.join(columns)} FROM {database}.events FINAL "
            f"WHERE {' AND '.join(where)} ORDER BY timestamp, event_id LIMIT {int(limit)}")


def _event_of_row(row: Mapping[str, Any], spec: MonitorSpec) -> InferenceEvent:
    """The monitored fields of a stored event, shaped as the event the producer sent."""
    prediction = row.get("prediction")
    if prediction == "":
        prediction = None  # the sink stores an absent prediction as ''
    elif spec.prediction == "numeric" and isinstance(prediction, str):
        # A string where a number was declared stays a string: counted as a type mismatch.
        with contextlib.suppress(ValueError):
            prediction = float(prediction)
    features = {**(row.get("features_num") or {}), **(row.get("features_cat") or {})}
    return InferenceEvent(
        event_id=row["event_id"], timestamp=row["ts_ms"] / 1000.0, model="-",
        latency_ms=row.get("latency_ms") or 0.0,
        time_to_first_token_ms=row.get("time_to_first_token_ms"),
        input_tokens=row.get("input_tokens"), output_tokens=row.get("output_tokens"),
        cost_usd=row.get("cost_usd"), prediction=prediction,
        confidence=row.get("confidence"), features=features,
    )


def _clickhouse_pages(
    settings: Settings, labels: Mapping[str, str], start: float, end: float,
    spec: MonitorSpec, page_size: int,
) -> Iterator[list[InferenceEvent]]:
    from pipeline.sinks.clickhouse.query import QueryError, run_query

    after: tuple[int, str] | None = None
    while True:
        sql = events_sql(settings.clickhouse.database, labels, start, end, spec,
                         after=after, limit=page_size)
        try:
            result = run_query(settings, sql)
        except QueryError as exc:
            if "UNKNOWN_TABLE" in str(exc) or "UNKNOWN_DATABASE" in str(exc):
                raise BaselineError(
                    f"no events table in ClickHouse database {settings.clickhouse.database!r} "
                    f"({settings.clickhouse_dsn.split('@')[-1]}): has a sink stored events "
                    "there yet?") from exc
            raise
        rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        if rows:
            yield [_event_of_row(row, spec) for row in rows]
        if len(rows) < page_size:
            return
        after = (int(rows[-1]["ts_ms"]), str(rows[-1]["event_id"]))


def build_from_clickhouse(
    settings: Settings,
    series: str | Mapping[str, str],
    start: float,
    end: float,
    spec: MonitorSpec,
    *,
    created_by: str = "",
    page_size: int = PAGE_SIZE,
) -> Baseline:
    """An unstored baseline of the series' raw events in ``[start, end)`` from ClickHouse.

    Reads through the read-only query path (server, store owner over loopback, or the
    embedded store). Raises :class:`NoEventsError` when the range holds no event, and
    :class:`pipeline.sinks.clickhouse.query.QueryError` / ``StoreBusyError`` when the store
    cannot answer.
    """
    if end <= start:
        raise BaselineError(f"--to {format_time(end)} must be after --from {format_time(start)}")
    key, labels = resolve_series(settings, series)
    source = f"clickhouse:{format_time(start)}..{format_time(end)}"
    pages = _clickhouse_pages(settings, labels, start, end, spec, page_size)
    try:
        return Baseline.of_events(pages, spec, labels, source=source, start=start, end=end,
                                  created_by=created_by)
    except NoEventsError:
        raise NoEventsError(f"no events for series {key} between {format_time(start)} "
                            f"and {format_time(end)}") from None
