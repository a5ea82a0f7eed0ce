"""The OTLP bridge stage: records in, event arrays and dead letters out; then stage 1 on
the in-memory runner validating the bridged events element by element. No broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from pipeline.config import IngestLimits, OtlpSettings, Settings, TopicSettings
from pipeline.runtime.memory import MemoryRunner, MemoryTopics
from pipeline.runtime.stage import Record
from pipeline.runtime.state import MemoryChangelog
from pipeline.sources import otlp_stage
from pipeline.sources.codec import decode_events
from pipeline.sources.dlq import BATCH_INDEX, DETAIL, REASON, SOURCE_OFFSET
from pipeline.sources.otlp_stage import OtlpStage
from pipeline.telemetry import OTLP_SPANS
from pipeline.windows.partial_stage import PartialStage
from tests.unit.sources.test_otlp import CURRENT, encode, sdk_spans

PROTO, JSON = "spans.proto", "spans.json"
SETTINGS = Settings(topics=TopicSettings(partitions=2),
                    otlp=OtlpSettings(enabled=True, topics={PROTO: "otlp_proto",
                                                             JSON: "otlp_json"}))
HTTP = {"name": "GET /", "attrs": {"http.request.method": "GET"}}


def records(topic: str, *values: bytes | None) -> list[Record]:
    return [Record(topic, 0, offset, b"k", value) for offset, value in enumerate(values)]


def events_of(step: Any) -> list[dict[str, Any]]:
    return [e for o in step.outputs for e in msgspec.json.decode(o.value)]


def counter(outcome: str) -> float:
    return OTLP_SPANS.labels(outcome=outcome)._value.get()


def test_topics_and_encodings_come_from_the_settings() -> None:
    stage = OtlpStage(SETTINGS)
    assert stage.topics == (PROTO, JSON)
    assert stage.on_assign(PROTO, 0, {}) is None and stage.on_revoke(PROTO, 0) is None
    assert not stage.on_tick(time.time(), lambda t, p: True)


@pytest.mark.parametrize("topic", [PROTO, JSON])
def test_spans_become_event_arrays_and_bad_records_dead_letters(topic: str) -> None:
    encoding = SETTINGS.otlp.topics[topic]
    good = encode(sdk_spans({"attrs": CURRENT}, HTTP, {"attrs": CURRENT}), encoding)
    only_http = encode(sdk_spans(HTTP), encoding)
    bad = b"\x0a\xff\xff garbage"
    stage = OtlpStage(SETTINGS)
    mapped, skipped = counter("mapped"), counter("skipped")
    step = stage.on_batch(topic, 0, records(topic, good, bad, only_http, None), time.time())

    events = events_of(step)
    assert [e["model"] for e in events] == ["gpt-4o-2024-08-06"] * 2
    assert all(o.topic == SETTINGS.topics.events for o in step.outputs)
    assert step.outputs[0].key == events[0]["trace_id"].encode()
    assert dict(step.outputs[0].headers)["content-type"] == b"application/json"
    decoded = decode_events(step.outputs[0].value, step.outputs[0].headers, IngestLimits(),
                            time.time())
    assert len(decoded.events) == 2 and not decoded.rejections

    letters = {dict(d.headers)[SOURCE_OFFSET]: d for d in step.dead_letters}
    assert sorted(letters) == [b"1", b"3"]
    assert letters[b"1"].value == bad and letters[b"1"].key == b"k"
    assert dict(letters[b"1"].headers)[REASON] == b"otlp_malformed"
    assert dict(letters[b"3"].headers)[REASON] == b"empty"
    assert (counter("mapped") - mapped, counter("skipped") - skipped) == (2, 2)
    assert (stage.counts.records, stage.counts.mapped, stage.counts.skipped) == (4, 2, 2)
    assert "2 GenAI spans mapped" in stage.summary() and "otlp_malformed=1" in stage.summary()


def test_outputs_respect_the_event_and_byte_limits() -> None:
    payload = encode(sdk_spans(*[{"attrs": CURRENT}] * 7), "otlp_proto")
    by_count = Settings(otlp=SETTINGS.otlp, limits=IngestLimits(max_batch_events=3))
    step = OtlpStage(by_count).on_batch(PROTO, 0, records(PROTO, payload), time.time())
    assert [len(msgspec.json.decode(o.value)) for o in step.outputs] == [3, 3, 1]
    one = len(step.outputs[2].value)
    by_bytes = Settings(otlp=SETTINGS.otlp, limits=IngestLimits(max_message_bytes=2 * one))
    step = OtlpStage(by_bytes).on_batch(PROTO, 0, records(PROTO, payload), time.time())
    assert [len(msgspec.json.decode(o.value)) for o in step.outputs] == [2, 2, 2, 1]
    assert all(len(o.value) <= 2 * one for o in step.outputs)
    assert len({e["event_id"] for e in events_of(step)}) == 7


def test_any_exception_on_one_record_dead_letters_it_and_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = encode(sdk_spans({"attrs": CURRENT}), "otlp_proto")
    real = otlp_stage.map_spans

    def flaky(value: bytes | None, encoding: Any) -> Any:
        if value == b"poison":
            raise RuntimeError("mapping bug")
        return real(value, encoding)

    monkeypatch.setattr(otlp_stage, "map_spans", flaky)
    stage = OtlpStage(SETTINGS)
    step = stage.on_batch(PROTO, 0, records(PROTO, good, b"poison", good), time.time())
    assert len(events_of(step)) == 2
    [letter] = step.dead_letters
    assert letter.value == b"poison" and dict(letter.headers)[REASON] == b"internal"
    assert b"mapping bug" in dict(letter.headers)["inferwatch-error-detail"]


def test_stage_one_validates_bridged_events_element_by_element() -> None:
    """OTLP topic → bridge → events topic → stage 1, on the in-memory runner: the span
    whose model name is too long is dead-lettered alone, its neighbours are absorbed."""
    topics, dlq = MemoryTopics(2), SETTINGS.topics.dlq
    now = time.time()
    long_name = {**CURRENT, "gen_ai.response.model": "m" * 200}
    payload = encode(sdk_spans({"attrs": CURRENT}, {"attrs": long_name}, {"attrs": CURRENT},
                               start=now - 30), "otlp_json")
    topics.append(JSON, payload, partition=0)

    async def go() -> PartialStage:
        bridge = MemoryRunner(lambda: OtlpStage(SETTINGS), topics, MemoryChangelog(), {}, dlq)
        await bridge.assign([(JSON, 0)])
        assert await bridge.drain(wall=now) == 1
        stage1 = MemoryRunner(lambda: PartialStage(SETTINGS), topics, MemoryChangelog(), {},
                              dlq)
        await stage1.assign([(SETTINGS.topics.events, p) for p in range(2)])
        await stage1.drain(wall=now)
        return stage1.stage  # type: ignore[return-value]

    stage1 = asyncio.run(go())
    assert stage1.counts.events == 2
    [letter] = topics.records(dlq)
    headers = dict(letter.headers)
    assert (headers[REASON], headers[BATCH_INDEX]) == (b"schema", b"1")
    assert msgspec.json.decode(letter.value)["model"] == "m" * 200


def test_a_record_beyond_the_decompressed_limit_is_dead_lettered_undecoded() -> None:
    """A huge record (a broker configured to take it) is not decoded into memory at all;
    the records around it go on."""
    limit = 16_384
    settings = Settings(topics=TopicSettings(partitions=2),
                        limits=IngestLimits(max_decompressed_bytes=limit),
                        otlp=OtlpSettings(enabled=True, topics={PROTO: "otlp_proto"}))
    stage = OtlpStage(settings)
    good = encode(sdk_spans({"attrs": CURRENT}), "otlp_proto")
    huge = good + b"\x00" * limit  # would not even parse; it must not be tried
    step = stage.on_batch(PROTO, 0, records(PROTO, good, huge, good), time.time())
    assert len(events_of(step)) == 2
    [letter] = step.dead_letters
    headers = dict(letter.headers)
    assert (headers[REASON], headers[SOURCE_OFFSET]) == (b"oversize", b"1")
    assert b"limits.max_decompressed_bytes" in headers[DETAIL]
