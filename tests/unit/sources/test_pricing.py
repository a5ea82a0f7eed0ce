"""Cost from a price table: matching, versions, arithmetic, bad files, and the path an
event takes (decode → stage-1 window sums, decode → stored row) on the real parts.

Tables are written as files and loaded, as a worker does; times are UTC.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from pathlib import Path

import msgspec
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.config import IngestLimits, MetricsSettings, PricingSettings, Settings, TopicSettings
from pipeline.dev.simulate import DEFAULT_MODELS, synthetic
from pipeline.runtime.stage import Record
from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.client import _statements, apply_migrations, migrations
from pipeline.sinks.clickhouse.writer import ClickHouseSink
from pipeline.sources.codec import decode_events
from pipeline.sources.pricing import (
    Prices,
    PriceTableError,
    load_prices,
    price_table,
    stamp_costs,
)
from pipeline.windows.partial_stage import PartialStage
from pipeline.windows.partials import Partial, decode_partials
from pipeline.windows.profile import WindowProfile
from schemas.event import InferenceEvent

TABLE = """\
version = "test-1"

[[prices]]
model = "gpt-4o*"
input_per_million = 5.0
output_per_million = 15.0
valid_from = 2024-05-13

[[prices]]
model = "gpt-4o*"
input_per_million = 2.5
output_per_million = 10.0
cache_read_per_million = 1.25
valid_from = 2024-10-02

[[prices]]
model = "gpt-4o-mini*"
input_per_million = 0.15
output_per_million = 0.6
cache_read_per_million = 0.075
valid_from = 2024-07-18

[[prices]]
model = "gpt-4o-mini"
input_per_million = 0.2
output_per_million = 0.8
valid_from = 2024-07-18

[[prices]]
model = "gpt-4o-mini*"
provider = "azure"
input_per_million = 0.165
output_per_million = 0.66
valid_from = 2024-07-18

[[prices]]
model = "late-model"
input_per_million = 1.0
output_per_million = 1.0
valid_from = 2025-01-01
"""


def day(text: str, hour: int = 12) -> float:
    """Unix time of ``text`` (YYYY-MM-DD) at ``hour`` UTC."""
    y, m, d = map(int, text.split("-"))
    return float(calendar.timegm((y, m, d, hour, 0, 0)))


@pytest.fixture(scope="module")
def table_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prices") / "prices.toml"
    path.write_text(TABLE)
    return path


@pytest.fixture
def prices(table_file: Path) -> Prices:
    return load_prices(table_file)


def ev(model: str = "gpt-4o", when: str = "2025-03-01", **fields) -> InferenceEvent:
    return InferenceEvent(event_id=f"e-{model}-{when}", timestamp=day(when), model=model,
                          latency_ms=10.0, **fields)


def rate(prices: Prices, model: str, when: str, provider: str = "") -> float | None:
    found = prices.price(model, provider, day(when))
    return None if found is None else found.input_per_million


# --------------------------------------------------------------------------- matching


def test_exact_name_before_pattern_and_longer_pattern_before_shorter(prices: Prices) -> None:
    assert rate(prices, "gpt-4o-mini", "2025-03-01") == 0.2  # the exact entry
    assert rate(prices, "gpt-4o-mini-2024-07-18", "2025-03-01") == 0.15  # gpt-4o-mini*
    assert rate(prices, "gpt-4o-2024-08-06", "2025-03-01") == 2.5  # gpt-4o*
    assert rate(prices, "gpt-4", "2025-03-01") is None  # no entry matches
    assert rate(prices, "GPT-4O", "2025-03-01") is None  # names are case-sensitive


def test_an_entry_for_a_provider_wins_over_one_for_any_provider(prices: Prices) -> None:
    assert rate(prices, "gpt-4o-mini-2024-07-18", "2025-03-01", "azure") == 0.165
    assert rate(prices, "gpt-4o-mini-2024-07-18", "2025-03-01", "openai") == 0.15
    # the exact name still comes first: specificity of the model before the provider
    assert rate(prices, "gpt-4o-mini", "2025-03-01", "azure") == 0.2


def test_an_event_before_a_price_change_gets_the_old_price(prices: Prices) -> None:
    assert rate(prices, "gpt-4o", "2024-10-01") == 5.0
    assert rate(prices, "gpt-4o", "2024-10-02", ) == 2.5  # the change holds from its day on
    assert prices.price("gpt-4o", "", day("2024-10-02", hour=0)).input_per_million == 2.5
    assert prices.price("gpt-4o", "", day("2024-10-01", hour=23) + 3599.999
                        ).input_per_million == 5.0  # the last instant of the day before
    # an old event arriving late is still priced at its own date, after the newer one
    assert rate(prices, "gpt-4o", "2025-06-01") == 2.5
    assert rate(prices, "gpt-4o", "2024-06-01") == 5.0


def test_before_every_valid_from_there_is_no_price_or_a_less_specific_one(
        prices: Prices) -> None:
    assert rate(prices, "late-model", "2024-12-31") is None
    assert rate(prices, "gpt-4o", "2024-05-12") is None
    # gpt-4o-mini* starts 2024-07-18; before that a mini model falls back to gpt-4o*
    assert rate(prices, "gpt-4o-mini-x", "2024-06-01") == 5.0


def test_lookups_are_cached_per_model_provider_and_day(prices: Prices) -> None:
    first = prices.price("gpt-4o", "", day("2025-03-01", hour=1))
    assert prices.price("gpt-4o", "", day("2025-03-01", hour=23)) is first
    assert len(prices._cache) == 1
    prices.price("gpt-4o", "", day("2025-03-02"))
    prices.price("gpt-4o", "x", day("2025-03-02"))
    assert len(prices._cache) == 3


# --------------------------------------------------------------------------- arithmetic


def cost(prices: Prices, e: InferenceEvent) -> float | None:
    """The cost of ``e`` as the decode path computes it (``stamp_costs``, inlined for
    speed), checked equal to the reference ``Prices.cost``."""
    stamped = msgspec.structs.replace(e)
    stamp_costs([stamped], prices)
    assert stamped.cost_usd == prices.cost(e)
    return stamped.cost_usd


def test_cost_splits_input_into_uncached_and_cache_read(prices: Prices) -> None:
    e = ev("gpt-4o", input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000)
    # 6,000 × $2.50 + 4,000 × $1.25 + 2,000 × $10 per million
    assert cost(prices, e) == pytest.approx((6_000 * 2.5 + 4_000 * 1.25 + 2_000 * 10) / 1e6)


def test_without_a_cache_read_price_cache_reads_cost_the_input_price(prices: Prices) -> None:
    cached = ev("gpt-4o-mini", input_tokens=1_000, output_tokens=0, cache_read_tokens=800)
    plain = ev("gpt-4o-mini", input_tokens=1_000, output_tokens=0)
    assert cost(prices, cached) == cost(prices, plain) == pytest.approx(1_000 * 0.2 / 1e6)


def test_cache_reads_above_the_input_count_are_capped(prices: Prices) -> None:
    e = ev("gpt-4o", input_tokens=100, output_tokens=0, cache_read_tokens=500)
    assert cost(prices, e) == pytest.approx(100 * 1.25 / 1e6)


def test_one_token_count_is_enough_and_none_means_no_cost(prices: Prices) -> None:
    assert cost(prices, ev("gpt-4o", input_tokens=1_000_000)) == pytest.approx(2.5)
    assert cost(prices, ev("gpt-4o", output_tokens=1_000_000)) == pytest.approx(10.0)
    assert cost(prices, ev("gpt-4o", input_tokens=0, output_tokens=0)) == 0.0  # computed: $0
    assert cost(prices, ev("gpt-4o", cache_read_tokens=10)) is None  # no input, no output
    assert cost(prices, ev("gpt-4o")) is None


# --------------------------------------------------------------------------- stamping


def test_missing_cost_is_computed_and_marked(prices: Prices) -> None:
    e = ev("gpt-4o", input_tokens=1_000, output_tokens=100)
    stamp_costs([e], prices)
    assert e.cost_usd == pytest.approx((1_000 * 2.5 + 100 * 10) / 1e6)
    assert e.cost_source == "computed"


def test_a_given_cost_is_kept_and_marked_given(prices: Prices) -> None:
    e = ev("gpt-4o", input_tokens=1_000, output_tokens=100, cost_usd=0.0)
    stamp_costs([e], prices)
    assert (e.cost_usd, e.cost_source) == (0.0, "given")  # a given $0 stays $0


def test_what_the_producer_sent_as_cost_source_is_overwritten(prices: Prices) -> None:
    claims_computed = ev("gpt-4o", cost_usd=1.0, cost_source="computed")
    claims_given = ev("no-such-model", input_tokens=10, cost_source="given")
    claims_computed_no_tokens = ev("gpt-4o", cost_source="computed")
    events = [claims_computed, claims_given, claims_computed_no_tokens]
    stamp_costs(events, prices)
    assert [(e.cost_usd, e.cost_source) for e in events] == [
        (1.0, "given"), (None, None), (None, None)]


def test_pricing_off_computes_nothing_but_still_marks_given_costs() -> None:
    events = [ev("gpt-4o", input_tokens=1_000, cost_source="computed"),
              ev("gpt-4o", cost_usd=0.5)]
    stamp_costs(events, None)
    assert [(e.cost_usd, e.cost_source) for e in events] == [(None, None), (0.5, "given")]
    assert price_table(PricingSettings(enabled=False)) is None


def test_decode_events_prices_what_it_decodes(prices: Prices) -> None:
    now = day("2025-03-01")
    batch = msgspec.json.encode([
        {"event_id": "a", "timestamp": now, "model": "gpt-4o", "latency_ms": 1,
         "input_tokens": 2_000, "output_tokens": 500, "cost_source": "given"},
        {"event_id": "b", "timestamp": now, "model": "gpt-4o", "latency_ms": 1,
         "input_tokens": 2_000, "cost_usd": 0.25, "cost_source": "computed"},
        {"event_id": "c", "timestamp": now, "model": "unpriced", "latency_ms": 1,
         "input_tokens": 2_000},
    ])
    for ctype in ("application/json", "application/msgpack"):
        value = batch if ctype.endswith("json") else msgspec.msgpack.encode(
            msgspec.json.decode(batch))
        out = decode_events(value, {"content-type": ctype.encode()}, IngestLimits(), now + 1,
                            prices=prices)
        assert out.rejections == []
        assert [(e.event_id, e.cost_source) for e in out.events] == [
            ("a", "computed"), ("b", "given"), ("c", None)]
        assert out.events[0].cost_usd == pytest.approx((2_000 * 2.5 + 500 * 10) / 1e6)
        assert out.events[1].cost_usd == 0.25 and out.events[2].cost_usd is None
    # without prices: nothing is computed, the producer's claim is still overwritten
    plain = decode_events(batch, {}, IngestLimits(), now + 1)
    assert [(e.cost_usd, e.cost_source) for e in plain.events] == [
        (None, None), (0.25, "given"), (None, None)]


def test_a_cost_source_outside_the_contract_is_a_schema_rejection() -> None:
    raw = msgspec.json.encode({"event_id": "x", "timestamp": 1.0, "model": "m",
                               "latency_ms": 1, "cost_source": "estimated"})
    out = decode_events(raw, {}, IngestLimits(), 2.0)
    assert out.events == [] and out.rejections[0].reason == "schema"
    assert "cost_source" in out.rejections[0].detail


# --------------------------------------------------------------------------- bad tables


def bad(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PriceTableError) as info:
        load_prices(path)
    return str(info.value).replace(str(path), "FILE")


ENTRY = ('[[prices]]\nmodel = "m"\ninput_per_million = 1.0\noutput_per_million = 2.0\n'
         'valid_from = 2025-01-01\n')


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    message = bad(tmp_path, 'version = "v"\n\n' + ENTRY + "oops = \n")
    assert message.startswith("FILE:8: ")


def test_an_unknown_field_names_its_line(tmp_path: Path) -> None:
    text = 'version = "v"\n' + ENTRY + ENTRY.replace("valid_from", "valid_form")
    message = bad(tmp_path, text)
    assert message.startswith("FILE:11: ") and "valid_form" in message


def test_a_wrong_type_or_bound_names_the_line_of_the_key(tmp_path: Path) -> None:
    text = 'version = "v"\n' + ENTRY + ENTRY.replace("2.0", '"2.0"')
    assert bad(tmp_path, text).startswith("FILE:10: ")
    text = 'version = "v"\n' + ENTRY + ENTRY.replace("input_per_million = 1.0",
                                                      "input_per_million = -1.0")
    message = bad(tmp_path, text)
    assert message.startswith("FILE:9: ") and ">= 0.0" in message
    text = 'version = "v"\n' + ENTRY.replace("2025-01-01", '"January"')
    assert bad(tmp_path, text).startswith("FILE:6: ")


def test_a_missing_field_names_its_entry(tmp_path: Path) -> None:
    text = 'version = "v"\n' + ENTRY + ENTRY.replace("valid_from = 2025-01-01\n", "")
    message = bad(tmp_path, text)
    assert message.startswith("FILE:7: ") and "valid_from" in message
    assert "version" in bad(tmp_path, ENTRY)  # a table must say which it is


def test_two_prices_for_one_model_provider_and_date_are_refused(tmp_path: Path) -> None:
    message = bad(tmp_path, 'version = "v"\n' + ENTRY + "\n" + ENTRY)
    assert message.startswith("FILE:8: ") and "repeats prices[0]" in message
    # another date or another provider is another price
    path = tmp_path / "ok.toml"
    path.write_text('version = "v"\n' + ENTRY + ENTRY.replace("2025-01-01", "2025-02-01")
                    + ENTRY.replace('model = "m"', 'model = "m"\nprovider = "p"'))
    assert len(load_prices(path)) == 3


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match=r"nowhere\.toml: cannot read the price table"):
        load_prices(tmp_path / "nowhere.toml")


def test_a_bad_table_stops_the_stage_and_the_sink_when_they_start(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('version = "v"\n' + ENTRY.replace("1.0", "lots"))
    settings = Settings(home=str(tmp_path), pricing=PricingSettings(table=str(path)))
    with pytest.raises(PriceTableError, match=rf"{path}:4: "):
        PartialStage(settings)
    with pytest.raises(PriceTableError, match=rf"{path}:4: "):
        ClickHouseSink(settings, client=object())


# --------------------------------------------------------------------------- the shipped table


def test_the_shipped_table_loads_and_every_entry_is_sane() -> None:
    shipped = load_prices()
    assert shipped.version == "2025-12-01" and len(shipped) >= 40
    version = dt.date.fromisoformat(shipped.version)
    for entry, _ in shipped._entries:
        name = f"{entry.model} ({entry.provider or 'any'}) from {entry.valid_from}"
        assert dt.date(2022, 1, 1) <= entry.valid_from <= version, name
        assert 0 < entry.input_per_million <= 200, name
        assert entry.output_per_million <= 200, name
        assert entry.cache_read <= entry.input_per_million, name  # a discount, if any
        if not entry.model.startswith("text-embedding") and entry.provider != "inferwatch-sim":
            assert entry.output_per_million >= entry.input_per_million, name
        assert entry.exact or entry.model.endswith("*"), name  # patterns are prefixes
    assert price_table(PricingSettings()).version == shipped.version


@pytest.mark.parametrize(("model", "when", "expected"), [
    ("gpt-4o", "2024-06-01", (5.0, 15.0)),
    ("gpt-4o", "2025-06-01", (2.5, 10.0)),
    ("gpt-4o-mini-2024-07-18", "2025-06-01", (0.15, 0.6)),
    ("gpt-4.1-mini-2025-04-14", "2025-06-01", (0.4, 1.6)),
    ("o3", "2025-05-01", (10.0, 40.0)),
    ("o3", "2025-07-01", (2.0, 8.0)),
    ("o3-mini", "2025-07-01", (1.1, 4.4)),
    ("claude-opus-4-1-20250805", "2025-09-01", (15.0, 75.0)),
    ("claude-opus-4-5-20251101", "2025-12-01", (5.0, 25.0)),
    ("claude-sonnet-4-5-20250929", "2025-10-01", (3.0, 15.0)),
    ("gemini-2.5-flash", "2025-07-01", (0.3, 2.5)),
    ("gemini-2.5-flash-lite", "2025-08-01", (0.1, 0.4)),
])
def test_the_shipped_table_gives_the_list_price_it_documents(
        model: str, when: str, expected: tuple[float, float]) -> None:
    found = load_prices().price(model, "", day(when))
    assert found is not None
    assert (found.input_per_million, found.output_per_million) == expected


def test_the_shipped_table_prices_the_simulator_as_the_simulator_does() -> None:
    """The demo's computed costs are the costs the simulator would have sent."""
    shipped = load_prices()
    start = time.time() - 600
    events = [r for _, r in synthetic(rate=400.0, duration=10.0, seed=5, start=start)
              if isinstance(r, InferenceEvent)]
    silent = [e for e in events if e.cost_usd is None]
    assert {e.model for e in silent} == {"code-complete"}
    profile = next(p for p in DEFAULT_MODELS if p.name == "code-complete")
    checked = 0
    for e in silent:
        assert e.input_tokens is not None and e.output_tokens is not None
        cached = e.cache_read_tokens or 0
        if e.status == "ok":
            sim = ((e.input_tokens - cached) * profile.price_in_per_mtok
                   + cached * profile.price_in_per_mtok * profile.cached_price_ratio
                   + e.output_tokens * profile.price_out_per_mtok) / 1e6
            assert shipped.cost(e) == pytest.approx(sim, rel=1e-9, abs=1e-12)
            checked += 1
    assert checked > 100
    computed = [shipped.cost(e) for e in silent]
    stamp_costs(events, shipped)  # the inlined hot path: the very same numbers
    assert [e.cost_usd for e in silent] == computed
    assert all(e.cost_source == "computed" for e in silent)
    assert {e.cost_source for e in events} == {"given", "computed"}


# --------------------------------------------------------------------------- downstream


STAGE = Settings(topics=TopicSettings(partitions=1), metrics=MetricsSettings(
    window_seconds=10, lateness_seconds=2, idle_timeout_seconds=5, series_labels=["model"],
    feature_usage_attributes=[]))


def test_stage_one_window_cost_sum_includes_computed_costs(table_file: Path) -> None:
    settings = msgspec.structs.replace(STAGE, pricing=PricingSettings(table=str(table_file)))
    stage = PartialStage(settings)
    topic = settings.topics.events
    stage.on_assign(topic, 0, {})
    wall = day("2025-03-01")
    t0 = wall - 3600
    events = [
        {"event_id": "given", "timestamp": t0 + 1, "model": "gpt-4o", "latency_ms": 1,
         "cost_usd": 0.5},
        {"event_id": "computed", "timestamp": t0 + 2, "model": "gpt-4o", "latency_ms": 1,
         "input_tokens": 100_000, "output_tokens": 10_000},  # $0.25 + $0.10
        {"event_id": "none", "timestamp": t0 + 3, "model": "gpt-4o", "latency_ms": 1},
    ]
    records = [Record(topic, 0, i, None, msgspec.json.encode(e)) for i, e in enumerate(events)]
    steps = [stage.on_batch(topic, 0, records, wall), stage.on_tick(wall + 1e6, lambda *_: True)]
    partials = [m for s in steps for o in s.outputs
                if isinstance(m := decode_partials(o.value), Partial)]
    (partial,) = partials
    window = WindowProfile.from_builtins(partial.profile)
    assert window.requests == 3
    assert window.cost_usd_sum == pytest.approx(0.5 + 0.35)
    assert window.cost_count == 2  # the event with no tokens has no cost


def _record(tp: TopicPartition, offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, value, None, 0,
                          len(value), [("content-type", b"application/json")])


def test_the_stored_row_carries_cost_and_its_source(fresh_store) -> None:
    client, settings = fresh_store
    sink = ClickHouseSink(settings, client)  # the shipped table
    now = time.time() - 60
    value = msgspec.json.encode([
        {"event_id": "row-given", "timestamp": now, "model": "gpt-4o", "latency_ms": 1,
         "input_tokens": 1_000, "cost_usd": 0.01},
        {"event_id": "row-computed", "timestamp": now, "model": "gpt-4o", "latency_ms": 1,
         "input_tokens": 1_000_000, "output_tokens": 100_000, "cost_source": "given"},
        {"event_id": "row-none", "timestamp": now, "model": "in-house-llm", "latency_ms": 1,
         "input_tokens": 1_000},
    ])
    batch = Batch()
    sink.collect({(tp := TopicPartition(settings.topics.events, 0)): [_record(tp, 0, value)]},
                 batch)
    sink.insert(batch)
    assert batch.refused == []
    rows = client.query("SELECT event_id, cost_usd, cost_source FROM events FINAL "
                        "WHERE event_id LIKE 'row-%' ORDER BY event_id").result_rows
    assert rows == [("row-computed", pytest.approx(2.5 + 1.0), "computed"),
                    ("row-given", 0.01, "given"), ("row-none", None, "")]
    by_source = dict(client.query(
        "SELECT cost_source, count() FROM events FINAL WHERE event_id LIKE 'row-%' "
        "GROUP BY cost_source").result_rows)
    assert by_source == {"computed": 1, "given": 1, "": 1}


def test_rows_stored_before_the_column_existed_read_as_given_when_they_had_a_cost(
        empty_store) -> None:
    client, settings = empty_store
    db = settings.clickhouse.database
    client.command(f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, "
                   "name String, applied_at DateTime DEFAULT now()) "
                   "ENGINE = ReplacingMergeTree ORDER BY version")
    params = {"db": db, "raw_retention_days": settings.clickhouse.raw_retention_days,
              "aggregate_retention_days": settings.clickhouse.aggregate_retention_days}
    for version, name, template in migrations():
        if version <= 10:
            for statement in _statements(template.format(**params)):
                client.command(statement)
            client.insert(f"{db}.schema_migrations", [(version, name)],
                          column_names=["version", "name"])
    now = time.time() - 60
    for event_id, cost in (("old-cost", 0.2), ("old-free", None)):
        client.command(
            f"INSERT INTO {db}.events (event_id, timestamp, model, latency_ms, cost_usd) "
            f"VALUES ('{event_id}', {now}, 'm', 1, {'NULL' if cost is None else cost})")
    assert apply_migrations(client, settings)[0] == "0011_events_cost_source"
    rows = client.query("SELECT event_id, cost_source FROM events ORDER BY event_id").result_rows
    assert rows == [("old-cost", "given"), ("old-free", "")]


def test_a_process_reads_its_table_once_so_stage_1_and_the_sink_price_alike(
        tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TABLE)
    settings = PricingSettings(table=str(path))
    first = price_table(settings)
    path.write_text("not toml at all")  # edited while the worker runs
    assert price_table(settings) is first
