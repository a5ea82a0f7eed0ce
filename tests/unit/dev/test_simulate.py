"""Unit tests of pipeline.dev.simulate: determinism, arrival counts, validity, incidents, replay."""

from __future__ import annotations

import calendar
import csv
import dataclasses
from datetime import datetime
from fractions import Fraction
from itertools import islice
from pathlib import Path

import msgspec
import numpy as np
import pytest

from pipeline.config import IngestLimits
from pipeline.dev.replay import replay, replay_profile
from pipeline.dev.simulate import DEFAULT_MODELS, Incident, synthetic
from pipeline.sources.codec import decode_events, encode_events
from schemas.event import InferenceEvent, ResourceSample

DATA = Path(__file__).parents[3] / "data"
CONV = DATA / "azure_llm_inference_conv_2023.csv"
CODE = DATA / "azure_llm_inference_code_2023.csv"
START = 1_700_000_000.0
HOSTS = sum(m.hosts for m in DEFAULT_MODELS)


def events(records: list) -> list[InferenceEvent]:
    return [r for _, r in records if isinstance(r, InferenceEvent)]


def samples(records: list) -> list[ResourceSample]:
    return [r for _, r in records if isinstance(r, ResourceSample)]


def run(seed: int = 3, rate: float = 1000.0, duration: float = 40.0, incidents=(), **kw) -> list:
    return list(synthetic(seed, rate, duration, START, incidents=incidents, **kw))


def split(records: list, model: str, lo: float, hi: float) -> tuple[list, list]:
    """Events of ``model`` inside and outside the offset window [lo, hi)."""
    inside, outside = [], []
    for offset, r in records:
        if isinstance(r, InferenceEvent) and r.model == model:
            (inside if lo <= offset < hi else outside).append(r)
    return inside, outside


def error_rate(evs: list[InferenceEvent]) -> float:
    return float(np.mean([e.status == "error" for e in evs]))


# --------------------------------------------------------------------------- synthetic


def test_same_seed_gives_identical_records() -> None:
    a = run(seed=11, rate=500.0, duration=5.0)
    b = run(seed=11, rate=500.0, duration=5.0)
    assert len(a) > 2000
    assert a == b
    assert encode_events([r for _, r in a]) == encode_events([r for _, r in b])


def test_different_seeds_differ() -> None:
    a = events(run(seed=1, rate=500.0, duration=5.0))
    b = events(run(seed=2, rate=500.0, duration=5.0))
    assert [e.timestamp for e in a[:50]] != [e.timestamp for e in b[:50]]
    assert [e.latency_ms for e in a[:50]] != [e.latency_ms for e in b[:50]]
    assert {e.event_id for e in a}.isdisjoint({e.event_id for e in b})


def test_event_ids_unique_and_deterministic() -> None:
    evs = events(run(seed=5, rate=1000.0, duration=10.0))
    ids = [e.event_id for e in evs]
    assert len(set(ids)) == len(ids)
    assert ids == [e.event_id for e in events(run(seed=5, rate=1000.0, duration=10.0))]


def test_count_offsets_and_shares_follow_rate_and_duration() -> None:
    rate, duration = 2000.0, 30.0
    records = run(seed=9, rate=rate, duration=duration)
    evs = events(records)
    expected = rate * duration
    assert abs(len(evs) - expected) < 5 * expected**0.5  # Poisson: sd = sqrt(mean)
    # One sample per host per complete second.
    assert len(samples(records)) == HOSTS * int(duration)
    offsets = [o for o, _ in records]
    assert offsets == sorted(offsets)
    assert offsets[0] >= 0.0 and offsets[-1] <= duration
    for offset, r in records:
        assert r.timestamp == START + offset
        if isinstance(r, ResourceSample):
            assert offset == int(offset) >= 1
    # Traffic split by the profiles' shares.
    total = sum(m.share for m in DEFAULT_MODELS)
    for m in DEFAULT_MODELS:
        n = sum(1 for e in evs if e.model == m.name and e.model_version == m.version)
        assert abs(n / len(evs) - m.share / total) < 0.01, m


def test_endless_stream_and_no_resources() -> None:
    records = list(islice(synthetic(1, 100.0, None, START, resources=False), 5000))
    assert len(records) == 5000
    assert not samples(records)
    assert records[-1][0] > 40.0  # went past the first window without stopping


def test_resource_samples_do_not_change_the_events() -> None:
    with_resources = run(seed=12, rate=300.0, duration=5.0)
    without = run(seed=12, rate=300.0, duration=5.0, resources=False)
    assert samples(with_resources) and not samples(without)
    assert [(o, r) for o, r in with_resources if isinstance(r, InferenceEvent)] == without


def test_resource_samples_follow_the_load() -> None:
    records = run(seed=13, rate=60.0, duration=120.0)
    counts = np.zeros(120)
    for offset, r in records:
        if isinstance(r, InferenceEvent) and r.model == "gpt-chat" and r.model_version == "2024-06":
            counts[int(offset)] += 1
    gpu = np.zeros(120)
    for s in samples(records):
        if s.host.startswith("gpt-chat-2024-06-"):
            gpu[round(s.timestamp - START) - 1] += s.gpu_util / 3
    assert np.corrcoef(counts, gpu)[0, 1] > 0.7
    assert {s.host for s in samples(records)} == {
        h for m in DEFAULT_MODELS for h in m.host_names()}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 0.0}, "rate"),
        ({"duration": -1.0}, "duration"),
        ({"incidents": ["latency_spike@1+2:model=nope"]}, "nope"),
        ({"incidents": ["bogus"]}, "bad incident"),
    ],
)
def test_bad_arguments_fail_at_call_time(kwargs: dict, match: str) -> None:
    args = {"seed": 1, "rate": 10.0, "duration": 1.0, "start": START} | kwargs
    with pytest.raises(ValueError, match=match):
        synthetic(**args)


def test_every_record_passes_validation_and_the_codec() -> None:
    incidents = [
        "latency_spike@2+3:model=gpt-chat:factor=8",
        "error_burst@4+3:factor=0.5",
        "feature_drift@6+3",
        "token_surge@8+2:factor=6",
    ]
    records = run(seed=21, rate=1500.0, duration=10.0, incidents=incidents)
    records += list(replay(CODE, 4, START, limit=1500, resources=True))
    evs, res = events(records), samples(records)
    assert len(evs) > 15_000 and len(res) > 100
    # All error types and outcomes are represented, so their fields get validated too.
    assert {e.error_type for e in evs} >= {"timeout", "rate_limited", "server_error",
                                          "content_filter", None}
    assert {e.finish_reason for e in evs} >= {"stop", "length", "content_filter", None}
    assert any(e.feedback_score is not None for e in evs)
    assert any(e.confidence is not None for e in evs)
    for record in evs + res:
        decoded = msgspec.json.decode(msgspec.json.encode(record), type=type(record))
        assert decoded == record
    now = max(r.timestamp for r in evs + res)
    for contract, recs in ((InferenceEvent, evs), (ResourceSample, res)):
        for i in range(0, len(recs), 500):
            batch = recs[i : i + 500]
            out = decode_events(encode_events(batch), {}, IngestLimits(), now=now,
                                contract=contract)
            assert out.rejections == []
            if contract is InferenceEvent:  # the codec records whether a cost was sent
                batch = [msgspec.structs.replace(
                    e, cost_source=None if e.cost_usd is None else "given") for e in batch]
            assert out.events == batch


def test_event_fields_are_consistent() -> None:
    evs = events(run(seed=8, rate=1000.0, duration=10.0))
    by_op: dict[str, list[InferenceEvent]] = {}
    for e in evs:
        by_op.setdefault(e.operation, []).append(e)
        if e.status == "error":
            assert e.error_type and e.http_status and e.http_status >= 400
        else:
            assert e.error_type is None and e.http_status == 200
        assert e.latency_ms >= (e.queue_wait_ms or 0.0)
        assert e.features["language"] and e.features["client"]
        assert e.attributes["app_feature"] and e.tenant and e.region and e.service
    for e in by_op["chat"] + by_op["text_completion"]:
        if e.status == "ok":
            assert e.time_to_first_token_ms is not None
            assert e.latency_ms >= e.time_to_first_token_ms
            assert e.cache_read_tokens is not None and e.input_tokens is not None
            assert e.cache_read_tokens <= e.input_tokens
            assert e.cache_hit == (e.cache_read_tokens > 0)
            if e.model == "code-complete":  # sends no cost: the pipeline prices it
                assert e.cost_usd is None
            else:
                assert e.cost_usd is not None and e.cost_usd > 0
    assert all(e.time_to_first_token_ms is None for e in by_op["embeddings"])
    assert all(e.confidence is not None and e.prediction for e in by_op["classify"]
               if e.status == "ok")
    assert {e.model_version for e in evs if e.model == "gpt-chat"} == {"2024-06", "2024-09"}
    # Heavy tail: p99.9 far above the median.
    lat = np.array([e.latency_ms for e in by_op["embeddings"]])
    assert np.percentile(lat, 99.9) > 5 * np.median(lat)


# --------------------------------------------------------------------------- incidents


def test_latency_spike_multiplies_p50_of_the_model_inside_the_window_only() -> None:
    base = run(seed=3)
    spiked = run(seed=3, incidents=["latency_spike@20+10:model=gpt-chat:factor=5"])
    inside, outside = split(spiked, "gpt-chat", 20, 30)
    base_inside, _ = split(base, "gpt-chat", 20, 30)
    ratio = np.median([e.latency_ms for e in inside]) / np.median(
        [e.latency_ms for e in base_inside]
    )
    assert 4.0 < ratio < 6.0
    p50_in = np.median([e.latency_ms for e in inside])
    p50_out = np.median([e.latency_ms for e in outside])
    assert 4.0 < p50_in / p50_out < 6.0
    # Everything else is exactly what it was without the incident.
    untouched = [(o, r) for o, r in spiked if isinstance(r, InferenceEvent)
                 and not (r.model == "gpt-chat" and 20 <= o < 30)]
    assert untouched == [(o, r) for o, r in base if isinstance(r, InferenceEvent)
                         and not (r.model == "gpt-chat" and 20 <= o < 30)]
    emb_in, emb_out = split(spiked, "embed-small", 20, 30)
    assert 0.9 < np.median([e.latency_ms for e in emb_in]) / np.median(
        [e.latency_ms for e in emb_out]) < 1.1
    # Its hosts look saturated while it lasts.
    gpus = [s.gpu_util for s in samples(spiked) if s.model == "gpt-chat"
            and 21 <= s.timestamp - START <= 30]
    assert gpus and min(gpus) >= 0.95


def test_error_burst_raises_the_error_rate() -> None:
    records = run(seed=4, incidents=["error_burst@10+10:factor=0.3"])
    for model in ("gpt-chat", "embed-small", "intent-clf"):
        inside, outside = split(records, model, 10, 20)
        assert 0.25 < error_rate(inside) < 0.36, model
        assert error_rate(outside) < 0.03, model
    inside, _ = split(records, "code-complete", 10, 20)
    assert {e.error_type for e in inside if e.error_type} <= {
        "timeout", "rate_limited", "server_error"}
    assert {e.http_status for e in inside if e.error_type == "rate_limited"} == {429}


def test_feature_drift_shifts_numeric_and_categorical_features() -> None:
    records = run(seed=5, incidents=["feature_drift@10+10:model=gpt-chat:factor=3"])
    inside, outside = split(records, "gpt-chat", 10, 20)
    mean_in = np.mean([e.features["prompt_length"] for e in inside])
    mean_out = np.mean([e.features["prompt_length"] for e in outside])
    assert 2.5 < mean_in / mean_out < 3.5
    english_in = np.mean([e.features["language"] == "en" for e in inside])
    english_out = np.mean([e.features["language"] == "en" for e in outside])
    assert english_out > 0.5 and english_in < 0.1
    other_in, other_out = split(records, "code-complete", 10, 20)
    assert 0.9 < np.mean([e.features["prompt_length"] for e in other_in]) / np.mean(
        [e.features["prompt_length"] for e in other_out]) < 1.1


def test_token_surge_raises_output_tokens() -> None:
    records = run(seed=6, incidents=["token_surge@5+10:factor=4"])
    inside, outside = split(records, "gpt-chat", 5, 15)
    out_in = np.mean([e.output_tokens for e in inside if e.status == "ok" or e.output_tokens])
    out_out = np.mean([e.output_tokens for e in outside if e.status == "ok" or e.output_tokens])
    assert 3.3 < out_in / out_out < 4.7
    assert 0.9 < np.mean([e.input_tokens for e in inside]) / np.mean(
        [e.input_tokens for e in outside]) < 1.1


def test_incident_parse_good() -> None:
    inc = Incident.parse("latency_spike@20+10:model=gpt-chat:factor=5")
    assert inc == Incident("latency_spike", 20.0, 10.0, "gpt-chat", 5.0)
    assert inc.end == 30.0
    assert Incident.parse(" error_burst@1.5s+2s ") == Incident("error_burst", 1.5, 2.0, None, 0.3)
    assert Incident.parse("token_surge@0+1:factor=2:model=m").model == "m"
    assert Incident.parse("feature_drift@3+4").factor == 3.0
    for text in ("latency_spike@20+10:model=gpt-chat:factor=5", "error_burst@0+1"):
        assert Incident.parse(str(Incident.parse(text))) == Incident.parse(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "expected KIND@OFFSET"),
        ("latency_spike", "expected KIND@OFFSET"),
        ("latency_spike@20", "expected KIND@OFFSET"),
        ("latency_spike@-1+2", "expected KIND@OFFSET"),
        ("latency_spike@a+2", "expected KIND@OFFSET"),
        ("meltdown@1+2", "unknown kind 'meltdown'"),
        ("latency_spike@1+0", "duration must be > 0"),
        ("latency_spike@1+2:factor=abc", "not a number"),
        ("latency_spike@1+2:factor=0", "factor must be > 0"),
        ("latency_spike@1+2:factor=inf", "factor must be > 0"),
        ("error_burst@1+2:factor=2", "probability <= 1"),
        ("latency_spike@1+2:colour=red", "unknown option 'colour'"),
        ("latency_spike@1+2:model=", "not key=value"),
        ("latency_spike@1+2:model", "not key=value"),
        ("latency_spike@1+2:model=a:model=b", "given twice"),
    ],
)
def test_incident_parse_bad(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        Incident.parse(text)
    assert "bad incident" in str(info.value)


# --------------------------------------------------------------------------- replay


def _trace_rows(path: Path, limit: int) -> list[tuple[Fraction, int, int]]:
    """An independent reading of the trace: exact times as Fractions of a second."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1 : limit + 1]
    out = []
    for ts, n_in, n_out in rows:
        whole, frac = ts.split(".")
        secs = calendar.timegm(datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").timetuple())
        out.append((secs + Fraction(int(frac), 10 ** len(frac)), int(n_in), int(n_out)))
    return out


def test_replay_keeps_rows_tokens_and_arrival_times_exactly() -> None:
    records = list(replay(CONV, 0, START, limit=2000))
    expected = _trace_rows(CONV, 2000)
    assert len(records) == 2000
    assert all(isinstance(r, InferenceEvent) for _, r in records)
    first = expected[0][0]
    assert [o for o, _ in records] == [float(t - first) for t, _, _ in expected]
    assert [r.input_tokens for _, r in records] == [i for _, i, _ in expected]
    assert [r.output_tokens for _, r in records] == [o for _, _, o in expected]
    for offset, r in records:
        assert r.timestamp == START + offset
        assert r.model == "azure-conv" and r.operation == "chat"
    assert len({r.event_id for _, r in records}) == 2000


def test_replay_models_latency_and_cost_from_tokens() -> None:
    evs = [r for _, r in replay(CONV, 1, START, limit=2000)]
    ok = [e for e in evs if e.status == "ok"]
    out = np.array([e.output_tokens for e in ok], dtype=float)
    inp = np.array([e.input_tokens for e in ok], dtype=float)
    lat = np.array([e.latency_ms for e in ok])
    ttft = np.array([e.time_to_first_token_ms for e in ok])
    assert np.corrcoef(out, lat)[0, 1] > 0.8  # decode time ∝ output tokens
    assert np.corrcoef(inp, ttft)[0, 1] > 0.5  # prefill time ∝ input tokens
    assert np.all(lat >= ttft)
    tpot = np.array([e.time_per_output_token_ms for e in ok])
    assert 20 < np.median(tpot) < 50
    prof = replay_profile("azure-conv")
    for e in ok[:100]:
        assert e.input_tokens is not None and e.output_tokens is not None
        assert e.cache_read_tokens is not None
        uncached = e.input_tokens - e.cache_read_tokens
        cost = (uncached * prof.price_in_per_mtok + e.cache_read_tokens * prof.price_in_per_mtok
                * prof.cached_price_ratio + e.output_tokens * prof.price_out_per_mtok) / 1e6
        assert e.cost_usd == pytest.approx(cost, rel=1e-6)


def test_replay_errors_rise_with_context_length() -> None:
    profile = dataclasses.replace(replay_profile("x"), long_context_error=0.6, max_input=8000)
    evs = [r for _, r in replay(CONV, 2, START, profile=profile)]
    ctx = np.array([e.input_tokens for e in evs])
    err = np.array([e.status == "error" for e in evs])
    short, long_ = err[ctx < 1000].mean(), err[ctx > 4000].mean()
    assert long_ > 3 * short
    assert evs[0].model == "x"


def test_replay_is_seeded_and_names_the_model_from_the_file() -> None:
    a = list(replay(CODE, 7, START, limit=300))
    assert a == list(replay(CODE, 7, START, limit=300))
    b = list(replay(CODE, 8, START, limit=300))
    assert [o for o, _ in a] == [o for o, _ in b]
    assert [r.output_tokens for _, r in a] == [r.output_tokens for _, r in b]
    assert [r.latency_ms for _, r in a] != [r.latency_ms for _, r in b]
    assert {(r.model, r.operation) for _, r in a} == {("azure-code", "text_completion")}
    assert {r.model for _, r in replay(CODE, 7, START, model="mine", limit=5)} == {"mine"}


def test_replay_small_crlf_file_exact_offsets(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    lines = [
        "TIMESTAMP,ContextTokens,GeneratedTokens",
        "2023-11-16 18:15:46.6805900,374,44",
        "2023-11-16 18:15:46.6805901,10,20",
        "2023-11-16 18:15:48.9305900,7,8",
    ]
    path.write_bytes("\r\n".join(lines).encode())  # no newline at the end
    records = list(replay(path, 0, START))
    assert [o for o, _ in records] == [0.0, 1e-7, 2.25]
    assert [(r.input_tokens, r.output_tokens) for _, r in records] == [(374, 44), (10, 20), (7, 8)]
    assert records[0][1].model == "tiny"


@pytest.mark.parametrize(
    ("bad_row", "match"),
    [
        ("2023-11-16 18:15:47.0000000,12,abc", "abc"),
        ("2023-11-16 18:15:47.0000000,12", "3 columns"),
        ("2023-11-16 25:15:47.0000000,12,5", "out of range"),
        ("16/11/2023 18:15:47,12,5", "not YYYY-MM-DD"),
        ("2023-11-16 18:15:47.0000000,-3,5", "token counts"),
    ],
)
def test_replay_malformed_row_names_file_and_line(
    tmp_path: Path, bad_row: str, match: str
) -> None:
    path = tmp_path / "bad.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens", "2023-11-16 18:15:46.6805900,374,44",
            bad_row, "2023-11-16 18:15:48.0000000,1,1"]
    path.write_bytes("\r\n".join(rows).encode())
    with pytest.raises(ValueError, match=match) as info:
        replay(path, 0, START)
    assert f"{path}:3:" in str(info.value)


def test_replay_empty_file_and_bad_limit(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\r\n")
    with pytest.raises(ValueError, match="no data rows"):
        replay(path, 0, START)
    with pytest.raises(ValueError, match="limit"):
        replay(CONV, 0, START, limit=0)


# --------------------------------------------------------------------------- publishing
# The sending half (pipeline.dev.publish) driven without a broker: a fake producer whose
# "broker" can be down, then up. The same path against a real broker that stops and
# restarts is tests/integration/test_outage.py.


class FakeBroker:
    """What a fake producer sends to; ``down`` makes start and send fail like aiokafka."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.messages: list[tuple[str, bytes, list]] = []
        self.sends = 0

    def producer(self) -> FakeProducer:
        return FakeProducer(self)


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def start(self) -> None:
        from aiokafka.errors import KafkaConnectionError

        if self.broker.down:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def send(self, topic: str, value: bytes, key=None, headers=None):
        import asyncio

        from aiokafka.errors import KafkaTimeoutError

        self.broker.sends += 1
        future = asyncio.get_running_loop().create_future()
        if self.broker.down:
            future.set_exception(KafkaTimeoutError("Batch is expired"))
        else:
            self.broker.messages.append((topic, value, headers))
            future.set_result(None)
        return future

    async def stop(self) -> None:
        pass


def _sent_ids(broker: FakeBroker) -> list[str]:
    ids = []
    for topic, value, headers in broker.messages:
        if topic.endswith("events"):
            out = decode_events(value, headers, IngestLimits(max_past_seconds=1e10), START + 100)
            ids += [e.event_id for e in out.events]
    return ids


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.dev.publish as publish_module

    monkeypatch.setattr(publish_module, "_BACKOFF_INITIAL", 0.01)
    monkeypatch.setattr(publish_module, "_BACKOFF_MAX", 0.02)


def _publish(records, broker: FakeBroker, **kwargs):
    import asyncio

    from pipeline.config import Settings
    from pipeline.dev.publish import publish

    return asyncio.run(publish(Settings(), records, _connect=broker.producer, **kwargs))


def test_publish_rides_out_an_outage_and_sends_everything(fast_retries, caplog) -> None:
    import asyncio
    import logging

    records = list(synthetic(seed=3, rate=400.0, duration=5.0, start=START))
    generated = events(records)
    broker = FakeBroker(down=True)

    async def broker_returns() -> None:
        await asyncio.sleep(0.3)
        broker.down = False

    def paced():  # the broker comes back while the generator is still going
        task = asyncio.get_event_loop().create_task(broker_returns())
        yield from records
        assert task.done()

    with caplog.at_level(logging.DEBUG, logger="pipeline.dev.publish"):
        stats = _publish(paced(), broker, speed=10.0, batch_size=50)  # 0.5 s of traffic
    assert stats.complete, stats.unsent_line()
    assert stats.outages == 1 and stats.events == len(generated) == stats.generated_events
    assert sorted(_sent_ids(broker)) == sorted(e.event_id for e in generated)
    assert stats.resources == len(samples(records))
    notices = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(notices) == 2, [r.getMessage() for r in notices]  # down once, back once
    assert "unavailable" in notices[0].getMessage()
    assert "reachable again" in notices[1].getMessage()
    assert "Kafka was unreachable 1 time(s)" in stats.line()


def test_publish_reports_what_it_could_not_send(fast_retries) -> None:
    records = list(synthetic(seed=4, rate=200.0, duration=2.0, start=START, resources=False))
    broker = FakeBroker(down=True)
    stats = _publish(records, broker, speed=0, batch_size=20, drain_timeout=0.3)
    assert stats.events == 0 and not stats.complete
    assert stats.unsent_events == stats.generated_events == len(records)
    assert stats.dropped_events == 0  # unpaced: waited for room, dropped nothing
    first, last = records[0][1].timestamp, records[-1][1].timestamp
    assert (stats.unsent_first, stats.unsent_last) == (first, last)
    assert f"NOT sent: {len(records)} of {len(records)} events" in stats.unsent_line()


def test_publish_paced_keeps_its_pace_and_counts_what_a_full_buffer_dropped(fast_retries) -> None:
    import time

    records = list(synthetic(seed=5, rate=500.0, duration=1.0, start=START, resources=False))
    broker = FakeBroker(down=True)
    started = time.monotonic()
    stats = _publish(records, broker, speed=4.0, batch_size=10, buffer_events=100,
                     drain_timeout=0.1)
    assert time.monotonic() - started < 2.0  # 0.25 s of paced traffic, not blocked
    assert stats.dropped_events > 0
    assert stats.unsent_events == stats.generated_events == len(records)
    assert stats.unsent_events - stats.dropped_events <= 100  # what the buffer held


def test_publish_without_any_broker_returns_and_counts_everything_unsent() -> None:
    """The real aiokafka producer against a port nothing listens on."""
    import asyncio

    from pipeline.config import KafkaSettings, Settings
    from pipeline.dev.publish import publish

    records = list(synthetic(seed=6, rate=100.0, duration=1.0, start=START))
    settings = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    stats = asyncio.run(publish(settings, records, speed=0, drain_timeout=0.5))
    assert stats.events == 0 and stats.outages == 1
    assert stats.unsent_events == len(events(records))
    assert stats.unsent_resources == len(samples(records))


def test_simulate_command_reports_unsent_and_exits_1() -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(
        cli, ["simulate", "--rate", "50", "--duration", "1", "--speed", "0",
              "--drain-timeout", "0.3"],
        env={"INFERWATCH_KAFKA": "127.0.0.1:1"})
    assert result.exit_code == 1, result.output
    assert "sent 0 events" in result.output
    assert "NOT sent:" in result.output
