"""Drift baselines from a file of ``InferenceEvent`` records: a JSON array, JSON lines or
Parquet, validated with :mod:`pipeline.sources.codec` as live events are (only the schema:
a reference may be old or synthetic). Parquet is read with chDB's ``file()`` table
function (chDB is already a dependency). Any invalid record fails the build with the
file name and the line or row of each."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from pipeline.config import IngestLimits
from pipeline.scoring.baselines import (
    Baseline,
    BaselineError,
    NoEventsError,
    format_time,
    parse_series_key,
)
from pipeline.sinks.clickhouse.sql import identifier, literal
from pipeline.sources.codec import decode_events
from pipeline.sources.pricing import Prices, stamp_costs
from pipeline.windows.drift_profile import MonitorSpec
from pipeline.windows.profile import series_key as make_series_key
from schemas.event import InferenceEvent

__all__ = ["build_from_file", "parse_events_json"]

_CHUNK = 10_000  # records validated per decode call when reading a file
_MAX_PROBLEMS = 5  # bad records named in an error; the rest are counted
# A baseline file may hold old (or synthetic future) events: only the schema is enforced.
_FILE_LIMITS = IngestLimits(
    max_message_bytes=1 << 62, max_decompressed_bytes=1 << 62, max_batch_events=1 << 62,
    max_future_seconds=1e12, max_past_seconds=1e12,
)
_ENCODER = msgspec.json.Encoder()


class _Problems:
    """Bad records of a file: the first few named, all counted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.count = 0

    def add(self, where: str, detail: str) -> None:
        self.count += 1
        if len(self.lines) < _MAX_PROBLEMS:
            self.lines.append(f"{self.name}: {where}: {detail}")

    def raise_if_any(self) -> None:
        if self.count:
            more = self.count - len(self.lines)
            tail = [f"... and {more} more bad record(s)"] if more else []
            raise BaselineError("\n".join([*self.lines, *tail]))


def _line_of_byte(data: bytes, detail: str) -> str:
    match = re.search(r"\(byte (\d+)\)", detail)
    if match is None:
        return "file"
    line = data.count(b"\n", 0, int(match.group(1))) + 1
    return f"line {line}"


def _validate_records(records: Sequence[tuple[str, bytes]], problems: _Problems,
                      now: float) -> list[InferenceEvent]:
    """Decode (where, JSON object bytes) records as one batch; bad ones go to ``problems``."""
    payload = b"[" + b",".join(raw for _, raw in records) + b"]"
    decoded = decode_events(payload, {}, _FILE_LIMITS, now)
    if any(r.index is None for r in decoded.rejections):  # malformed JSON: find which one
        events: list[InferenceEvent] = []
        for where, raw in records:
            one = decode_events(raw, {}, _FILE_LIMITS, now)
            events.extend(one.events)
            for rejection in one.rejections:
                problems.add(where, rejection.detail)
        return events
    for rejection in decoded.rejections:
        problems.add(records[rejection.index or 0][0], rejection.detail)
    return decoded.events


def _chunks(records: Iterable[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    chunk: list[tuple[str, bytes]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def parse_events_json(data: bytes, name: str, *, now: float | None = None) -> list[InferenceEvent]:
    """Events of a JSON array or JSON-lines document, validated; pure (``name`` is for errors).

    Every bad record is reported as ``name: line N: problem`` (JSON lines) or
    ``name: element N: problem`` (array, 1-based) in one :class:`BaselineError`.

    >>> good = b'{"event_id": "a", "timestamp": 1, "model": "m", "latency_ms": 5}'
    >>> [e.event_id for e in parse_events_json(good + b"\\n", "x.jsonl")]
    ['a']
    >>> parse_events_json(good + b'\\n{"event_id": "b"}\\n', "x.jsonl")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.scoring.baselines.BaselineError: x.jsonl: line 2: Object missing required field ...
    """
    now = time.time() if now is None else now
    problems = _Problems(name)
    body = data.lstrip()
    events: list[InferenceEvent] = []
    if not body:
        raise BaselineError(f"{name}: the file is empty")
    if body[:1] == b"[":
        decoded = decode_events(data, {}, _FILE_LIMITS, now)
        for rejection in decoded.rejections:
            if rejection.index is not None:
                problems.add(f"element {rejection.index + 1}", rejection.detail)
                continue
            detail = rejection.detail
            try:  # the codec reads a malformed array as a bad single event: say where it breaks
                msgspec.json.decode(data)
            except msgspec.DecodeError as exc:
                detail = str(exc)
            problems.add(_line_of_byte(data, detail), detail)
        events = decoded.events
    else:
        lines = ((f"line {n}", line.strip()) for n, line in enumerate(data.split(b"\n"), 1))
        for chunk in _chunks((w, raw) for w, raw in lines if raw):
            events.extend(_validate_records(chunk, problems, now))
    problems.raise_if_any()
    return events


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row as an event object: nulls mean absent; map/struct/JSON-text features."""
    out = {k: v for k, v in row.items() if v is not None}
    for name in ("features", "attributes"):
        value = out.get(name)
        if isinstance(value, str):
            try:
                value = msgspec.json.decode(value)
            except msgspec.DecodeError:
                continue  # left as is: validation names the column
        if isinstance(value, dict):
            out[name] = {k: v for k, v in value.items() if v is not None}
    return out


def _parquet_records(path: Path) -> Iterator[tuple[str, bytes]]:
    """(``row N``, event JSON) per row, read in file order by chDB's ``file()``."""
    import chdb

    source = f"file({literal(str(path))}, Parquet)"
    try:
        described = chdb.query(f"DESCRIBE {source}", "JSONEachRow").bytes()
        columns = [msgspec.json.decode(line) for line in described.splitlines() if line]
        exprs = []
        for column in columns:
            ident = identifier(column["name"])
            if column["name"] == "timestamp" and "DateTime" in column["type"]:
                ident = f"toUnixTimestamp64Milli(toDateTime64({ident}, 3, 'UTC')) / 1000 AS {ident}"
            exprs.append(ident)
        if not exprs:
            raise BaselineError(f"{path}: the Parquet file has no columns")
        rows = chdb.query(
            f"SELECT {', '.join(exprs)} FROM {source} SETTINGS max_threads = 1, "
            "input_format_parquet_preserve_order = 1, output_format_json_quote_64bit_integers = 0",
            "JSONEachRow").bytes()
    except BaselineError:
        raise
    except Exception as exc:  # chDB raises RuntimeError with ClickHouse's text
        text = " ".join(str(exc).split())[:400] or repr(exc)
        raise BaselineError(f"{path}: cannot read as Parquet: {text}") from exc
    for number, line in enumerate((r for r in rows.split(b"\n") if r), 1):
        yield f"row {number}", _ENCODER.encode(_clean_row(msgspec.json.decode(line)))


def _read_file(path: Path, now: float) -> list[InferenceEvent]:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            problems = _Problems(str(path))
            events: list[InferenceEvent] = []
            for chunk in _chunks(_parquet_records(path)):
                events.extend(_validate_records(chunk, problems, now))
            problems.raise_if_any()
            if not events:
                raise BaselineError(f"{path}: the file has no rows")
            return events
        data = path.read_bytes()
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_events_json(data, str(path), now=now)


def build_from_file(
    path: str | Path,
    spec: MonitorSpec,
    series: str | Mapping[str, str],
    *,
    start: float | None = None,
    end: float | None = None,
    created_by: str = "",
    prices: Prices | None = None,
) -> Baseline:
    """An unstored baseline of ``series`` from a file of ``InferenceEvent`` records.

    JSON array, JSON lines (``.json``, ``.jsonl``, ``.ndjson``, sniffed by the first byte) or
    Parquet (``.parquet``/``.pq``; columns named like the event's fields, ``features`` a map,
    struct or JSON text, nulls meaning absent). The whole file is the reference of ``series``
    (its events' own labels are not filtered on: it may be training data of another version);
    ``start``/``end`` optionally keep only events in ``[start, end)``. Any invalid record fails
    the build with the file name and line/row of each. Events without ``cost_usd`` are
    priced from ``prices``, as the workers price live events.
    """
    file = Path(path)
    labels = parse_series_key(series) if isinstance(series, str) else dict(series)
    events = _read_file(file, time.time())
    kept = [e for e in events if (start is None or e.timestamp >= start)
            and (end is None or e.timestamp < end)]
    if not kept:
        span = (f" between {format_time(start) if start is not None else '-'} and "
                f"{format_time(end) if end is not None else '-'}")
        raise NoEventsError(f"no events for series {make_series_key(labels)} in {file}{span} "
                            f"(the file holds {len(events)})")
    stamp_costs(kept, prices)
    return Baseline.of_events(kept, spec, labels, source=f"file:{file.resolve()}",
                              start=start, end=end, created_by=created_by)
