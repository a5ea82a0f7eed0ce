"""Pinned baselines without a broker or a store: parsing, the record, versions, SQL, files."""

from __future__ import annotations

import msgspec
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import Settings
from pipeline.scoring.baseline_files import _clean_row, parse_events_json
from pipeline.scoring.baseline_topic import _keep
from pipeline.scoring.baselines import (
    Baseline,
    BaselineError,
    _event_of_row,
    events_sql,
    format_time,
    next_version,
    parse_series_key,
    parse_time,
    resolve_series,
    stamp,
)
from pipeline.windows.drift_profile import DriftProfile, MonitorSpec
from pipeline.windows.profile import series_key
from schemas.event import InferenceEvent

LABELS = {"model": "gpt-chat", "model_version": "2024-06", "operation": "chat"}
SPEC = MonitorSpec(numeric_features=("x",), categorical_features=("lang",))


def _events(n: int, start: float = 1_700_000_000.0) -> list[InferenceEvent]:
    return [
        InferenceEvent(event_id=f"e{i}", timestamp=start + i, model="gpt-chat",
                       latency_ms=10.0 + i, input_tokens=i, output_tokens=2 * i,
                       cost_usd=0.001 * i, cost_source="given",  # as decoding marks it
                       time_to_first_token_ms=5.0 + i,
                       prediction="yes" if i % 3 else "no", confidence=0.5,
                       features={"x": float(i), "lang": "en" if i % 2 else "de"})
        for i in range(n)
    ]


def _baseline(n: int = 20) -> Baseline:
    return Baseline.of_events(_events(n), SPEC, LABELS, source="test")


# --------------------------------------------------------------------------- times
@pytest.mark.parametrize(("text", "expected"), [
    ("2024-06-01T00:00:00Z", 1717200000.0),
    ("2024-06-01T02:00:00+02:00", 1717200000.0),
    ("2024-06-01 00:00:00", 1717200000.0),  # naive: UTC
    ("2024-06-01", 1717200000.0),
    ("1717200000", 1717200000.0),
    (" 1717200000.25 ", 1717200000.25),
])
def test_parse_time_accepts_iso_8601_and_unix_seconds(text: str, expected: float) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "-5", "nan", "inf", "2024-13-01"])
def test_parse_time_rejects_garbage_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match="invalid time"):
        parse_time(text)


def test_format_time_round_trips_through_parse_time() -> None:
    for t in (0.0, 1717200000.0, 1717200000.125):
        assert parse_time(format_time(t)) == t


# --------------------------------------------------------------------------- series keys
@pytest.mark.parametrize("labels", [
    LABELS,
    {"model": "a|b", "model_version": "v=1", "operation": "back\\slash"},
    {"model": "", "model_version": "", "operation": ""},
])
def test_parse_series_key_inverts_series_key(labels: dict[str, str]) -> None:
    assert parse_series_key(series_key(labels)) == labels


@pytest.mark.parametrize("text", ["", "model", "model=a|model=b", "model=a|", "model=a\\"])
def test_parse_series_key_rejects_malformed_keys(text: str) -> None:
    with pytest.raises(ValueError, match="invalid series key"):
        parse_series_key(text)


def test_resolve_series_canonicalises_and_checks_the_configured_labels() -> None:
    key, labels = resolve_series(Settings(), "operation=chat|model=gpt-chat|model_version=2024-06")
    assert key == series_key(LABELS) and labels == LABELS
    with pytest.raises(BaselineError, match=r"series_labels is \['model', 'model_version'"):
        resolve_series(Settings(), "model=gpt-chat")


# --------------------------------------------------------------------------- the record
def test_baseline_counts_every_event_and_round_trips_as_json() -> None:
    b = _baseline(20)
    assert b.events == 20 and b.version == 0
    counts = b.counts()
    assert counts["latency_ms"] == counts["feature.x"] == counts["prediction"] == 20
    assert counts["feature.lang"] == 20 and b.to_reference()["feature.lang"].counts == {
        "en": 10, "de": 10}
    decoded = msgspec.json.decode(msgspec.json.encode(b), type=Baseline)
    assert decoded == b and decoded.to_reference() == b.to_reference()
    assert (b.built_from, b.built_to) == (1_700_000_000.0, 1_700_000_019.0)


def test_baseline_reference_equals_a_profile_of_the_same_events() -> None:
    events = _events(50)
    profile = DriftProfile()
    profile.add_events(events, SPEC)
    ref = Baseline.of_events(events, SPEC, LABELS, source="t", start=0.0, end=2e9).to_reference()
    assert ref.histograms == profile.histograms
    assert (ref.source, ref.built_from, ref.built_to) == ("pinned", 0.0, 2e9)


def test_baseline_of_no_events_is_an_error() -> None:
    with pytest.raises(BaselineError, match="no events for series model=gpt-chat"):
        Baseline.of_events([], SPEC, LABELS, source="t")


def test_decoding_rejects_an_inconsistent_or_malformed_baseline() -> None:
    raw = msgspec.to_builtins(_baseline())
    with pytest.raises(msgspec.ValidationError, match="does not match labels"):
        msgspec.convert({**raw, "series_key": "model=other"}, Baseline)
    with pytest.raises(msgspec.ValidationError, match="malformed reference"):
        msgspec.convert({**raw, "reference": {"v": 1}}, Baseline)
    with pytest.raises(msgspec.ValidationError, match="pinned"):
        msgspec.convert({**raw, "reference": {**raw["reference"], "src": "trailing"}}, Baseline)
    with pytest.raises(msgspec.ValidationError, match=">= 1"):
        msgspec.convert({**raw, "events": 0}, Baseline)


# --------------------------------------------------------------------------- versions
def test_versions_count_from_one_and_only_grow() -> None:
    built = _baseline()
    assert next_version(None) == 1
    v1 = stamp(built, None, now=100.0)
    v2 = stamp(built, v1, now=200.0)
    v3 = stamp(built, v2, now=300.0)
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    assert [v.to_reference().version for v in (v1, v2, v3)] == [1, 2, 3]
    assert v3.created_at == 300.0 and built.version == 0  # the built one is untouched


def test_the_store_keeps_the_latest_version_and_drops_tombstoned_series() -> None:
    built = _baseline()
    v1, v2 = stamp(built, None, 1.0), None
    v2 = stamp(built, v1, 2.0)
    store: dict[str, Baseline] = {}
    assert _keep(store, v1.series_key, v1) and _keep(store, v2.series_key, v2)
    assert not _keep(store, v1.series_key, v1)  # an older record never replaces a newer one
    assert store[v1.series_key].version == 2
    assert _keep(store, v1.series_key, None) and store == {}
    assert not _keep(store, "model=gone", None)


# --------------------------------------------------------------------------- SQL
def test_events_sql_filters_series_and_range_and_reads_only_monitored_columns() -> None:
    sql = events_sql("iw", {**LABELS, "team": "o'brien"}, 10.0, 20.5, SPEC, limit=7)
    assert "FROM iw.events FINAL" in sql
    assert "model = 'gpt-chat'" in sql and "operation = 'chat'" in sql
    assert "attributes['team'] = 'o\\'brien'" in sql  # a non-column label, quote escaped
    assert "toInt64(10000)" in sql and "toInt64(20500)" in sql
    assert "has(['lang', 'x'], k)" in sql and "latency_ms" in sql
    assert sql.endswith("ORDER BY timestamp, event_id LIMIT 7")
    lean = events_sql("iw", LABELS, 0, 1, MonitorSpec(prediction="none", confidence=False,
                                                      operational=False))
    assert "features_num" not in lean and "latency_ms" not in lean and "prediction" not in lean
    paged = events_sql("iw", LABELS, 0, 1, SPEC, after=(1234, "e'9"))
    assert "(timestamp, event_id) > (fromUnixTimestamp64Milli(toInt64(1234), 'UTC'), 'e\\'9')" \
        in paged


def test_events_sql_refuses_a_non_string_event_field_as_label() -> None:
    with pytest.raises(BaselineError, match="http_status"):
        events_sql("iw", {"http_status": "200"}, 0, 1, SPEC)


def test_a_stored_row_becomes_the_event_the_producer_sent() -> None:
    row = {"event_id": "a", "ts_ms": 1500, "latency_ms": 3.0, "prediction": "",
           "features_num": {"x": 1.5}, "features_cat": {"lang": "en"}, "input_tokens": 4}
    event = _event_of_row(row, SPEC)
    assert event.timestamp == 1.5 and event.prediction is None and event.input_tokens == 4
    assert event.features == {"x": 1.5, "lang": "en"}
    numeric = MonitorSpec(prediction="numeric")
    assert _event_of_row({**row, "prediction": "0.25"}, numeric).prediction == 0.25
    assert _event_of_row({**row, "prediction": "yes"}, numeric).prediction == "yes"


# --------------------------------------------------------------------------- files
def _jsonl(events: list[InferenceEvent]) -> bytes:
    return b"".join(msgspec.json.encode(e) + b"\n" for e in events)


def test_json_lines_and_json_arrays_decode_to_the_same_events() -> None:
    events = _events(5)
    assert parse_events_json(_jsonl(events), "e.jsonl") == events
    assert parse_events_json(b"\n" + _jsonl(events) + b"\n\n", "e.jsonl") == events
    assert parse_events_json(msgspec.json.encode(events), "e.json") == events


def test_bad_json_lines_are_named_by_line_and_counted() -> None:
    lines = _jsonl(_events(3)).splitlines()
    bad = [lines[0], b'{"event_id": "x", "timestamp": 1, "model": "m", "latency_ms": -1}',
           lines[1], b"{not json", lines[2]]
    with pytest.raises(BaselineError) as err:
        parse_events_json(b"\n".join(bad), "data/e.jsonl")
    message = str(err.value)
    assert "data/e.jsonl: line 2: Expected `float` >= 0.0 - at `$.latency_ms`" in message
    assert "data/e.jsonl: line 4: JSON is malformed" in message


def test_bad_json_array_elements_are_named_by_position() -> None:
    items = [msgspec.to_builtins(e) for e in _events(3)]
    items[2]["confidence"] = 7
    with pytest.raises(BaselineError, match=r"e\.json: element 3: .*confidence"):
        parse_events_json(msgspec.json.encode(items), "e.json")
    with pytest.raises(BaselineError, match=r"e\.json: line 3: JSON is malformed"):
        parse_events_json(b"[\n{},\n{,}]", "e.json")


def test_many_bad_records_name_five_and_count_the_rest() -> None:
    data = b"\n".join(b'{"event_id": "x"}' for _ in range(12))
    with pytest.raises(BaselineError) as err:
        parse_events_json(data, "e.jsonl")
    message = str(err.value)
    assert message.count("e.jsonl: line") == 5 and "and 7 more bad record(s)" in message


def test_an_empty_file_is_an_error() -> None:
    with pytest.raises(BaselineError, match=r"e\.jsonl: the file is empty"):
        parse_events_json(b"  \n", "e.jsonl")


def test_parquet_rows_drop_nulls_and_accept_map_struct_or_json_features() -> None:
    row = {"event_id": "a", "request_id": None, "features": {"x": 1.0, "lang": None}}
    assert _clean_row(row) == {"event_id": "a", "features": {"x": 1.0}}
    assert _clean_row({"features": '{"x": 2, "y": null}'}) == {"features": {"x": 2}}
    assert _clean_row({"features": "not json"}) == {"features": "not json"}


# --------------------------------------------------------------------------- CLI (no I/O)
def test_baseline_set_checks_its_arguments_before_touching_anything() -> None:
    runner = CliRunner()
    key = series_key(LABELS)
    out = runner.invoke(cli, ["baseline", "set", "--series", key, "--from", "2024-06-01"], env={})
    assert out.exit_code == 2 and "--from and --to are required unless --file" in out.output
    out = runner.invoke(cli, ["baseline", "set", "--series", key, "--from", "soon",
                              "--to", "2024-06-02"], env={})
    assert out.exit_code == 2 and "invalid time 'soon'" in out.output
    out = runner.invoke(cli, ["baseline", "set", "--series", key, "--from", "2024-06-02",
                              "--to", "2024-06-01"], env={})
    assert out.exit_code == 2 and "is not after --from" in out.output
    out = runner.invoke(cli, ["baseline", "set", "--series", key, "--from", "2024-06-01",
                              "--to", "2024-06-02", "--numeric-features", "a",
                              "--categorical-features", "a"], env={})
    assert out.exit_code == 2 and "both numeric and categorical" in out.output
    out = runner.invoke(cli, ["baseline", "set", "--series", "model=m", "--from", "1",
                              "--to", "2"], env={})
    assert out.exit_code == 1 and "metrics.series_labels" in out.output
    # Features default to the drift section of the config: what the workers monitor.
    out = runner.invoke(cli, ["baseline", "set", "--series", key, "--from", "1", "--to", "2",
                              "--categorical-features", "a"],
                        env={"INFERWATCH_DRIFT__NUMERIC_FEATURES": "a,b"})
    assert out.exit_code == 2 and "both numeric and categorical: ['a']" in out.output
    # A feature privacy drops at ingest is never kept, so never put in a baseline either.
    out = runner.invoke(cli, ["baseline", "set", "--series", key, "--from", "1", "--to", "2",
                              "--categorical-features", "zip,lang"],
                        env={"INFERWATCH_PRIVACY__DROP_FEATURES": "zip"})
    assert out.exit_code == 2 and "'zip': privacy.drop_features drops it" in out.output


def test_baseline_set_help_has_an_example() -> None:
    out = CliRunner().invoke(cli, ["baseline", "set", "--help"])
    assert out.exit_code == 0 and "Example:" in out.output and "--numeric-features" in out.output


def test_a_file_baseline_prices_events_without_cost_as_the_workers_do(tmp_path) -> None:
    """Live windows carry computed costs; a baseline from a file of the same events must
    too, or the cost distribution would drift against a reference with no costs."""
    from pipeline.scoring.baseline_files import build_from_file
    from pipeline.sources.pricing import load_prices

    events = [InferenceEvent(event_id=f"c{i}", timestamp=1_750_000_000.0 + i,
                             model="code-complete", provider="inferwatch-sim",
                             latency_ms=10.0, input_tokens=1000 + i, output_tokens=20)
              for i in range(30)]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(msgspec.json.encode(e) for e in events) + b"\n")
    spec = MonitorSpec(prediction="none", confidence=False, operational=True)
    labels = {"model": "code-complete", "model_version": "1.3", "operation": "chat"}
    priced = build_from_file(path, spec, labels, prices=load_prices())
    unpriced = build_from_file(path, spec, labels)
    assert priced.counts()["cost_usd"] == 30
    assert unpriced.counts().get("cost_usd", 0) == 0
