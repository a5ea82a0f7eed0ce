"""Keys dropped or redacted at ingest (``settings.privacy``): the decoder applies the rules,
and stage 1, the ClickHouse sink (real embedded chDB) and the quality intake never hold a
dropped key, each checked against a run without rules where the key does show up."""

from __future__ import annotations

import time

import msgspec
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.config import (
    IngestLimits,
    MetricsSettings,
    PrivacySettings,
    Settings,
    TopicSettings,
)
from pipeline.quality.intake import JoinIntake
from pipeline.quality.records import FeedbackItem, JoinItem, StubItem
from pipeline.runtime.stage import Record
from pipeline.sinks.clickhouse.batch import Batch
from pipeline.sinks.clickhouse.writer import ClickHouseSink
from pipeline.sources.codec import decode_events
from pipeline.sources.redaction import REDACTED, Redaction
from pipeline.windows.drift_profile import MonitorSpec
from pipeline.windows.partial_stage import PartialStage
from pipeline.windows.partials import Partial, decode_partials
from pipeline.windows.profile import WindowProfile
from schemas.event import InferenceEvent, ResourceSample
from schemas.feedback import FeedbackEvent

NOW = 1_700_000_000.0
LIMITS = IngestLimits()
JSON_H = [("content-type", b"application/json")]
MSGPACK_H = [("content-type", b"application/msgpack")]
PRIVACY = PrivacySettings(drop_attributes=["ip"], redact_attributes=["email"],
                          drop_features=["zip"])
RULES = Redaction.from_settings(PRIVACY)
SECRETS = (b"10.1.2.3", b"alice@example.com", b"10115")


def _event(i: int = 0, t: float = NOW - 5, **extra: object) -> dict:
    return {"event_id": f"e{i}", "timestamp": t, "model": "m", "latency_ms": 5.0,
            "attributes": {"ip": "10.1.2.3", "email": "alice@example.com", "app_feature": "chat"},
            "features": {"zip": "10115", "tokens": 812.0}, **extra}


def _redacted(e: InferenceEvent) -> bool:
    return (e.attributes == {"email": REDACTED, "app_feature": "chat"}
            and e.features == {"tokens": 812.0})


# ------------------------------------------------------------------ the decoder


@pytest.mark.parametrize("encode,headers", [(msgspec.json.encode, JSON_H),
                                            (msgspec.msgpack.encode, MSGPACK_H)])
def test_single_events_and_batches_leave_the_decoder_redacted(encode, headers) -> None:
    for value in (encode(_event()), encode([_event(i) for i in range(5)])):
        out = decode_events(value, headers, LIMITS, NOW, redaction=RULES)
        assert out.events and not out.rejections
        assert all(_redacted(e) for e in out.events)
        assert all(s not in msgspec.json.encode(out.events) for s in SECRETS)


def test_the_slow_path_redacts_good_elements_and_dead_letters_keep_raw_bytes() -> None:
    bad = _event(9, latency_ms=-1)  # a schema rejection beside good elements
    out = decode_events(msgspec.json.encode([_event(0), bad, _event(1, t=NOW + 1e6)]),
                        JSON_H, LIMITS, NOW, redaction=RULES)
    (good,) = out.events
    assert _redacted(good)
    reasons = sorted(r.reason for r in out.rejections)
    assert reasons == ["future_timestamp", "schema"]
    # the DLQ is the raw record, by design: its retention is privacy.dlq_retention_days
    assert all(b"alice@example.com" in r.raw for r in out.rejections)


def test_without_rules_nothing_changes_and_from_settings_says_none() -> None:
    assert Redaction.from_settings(PrivacySettings()) is None
    value = msgspec.json.encode([_event(i) for i in range(3)])
    plain = decode_events(value, JSON_H, LIMITS, NOW)
    same = decode_events(value, JSON_H, LIMITS, NOW, redaction=None)
    assert plain.events == same.events
    assert plain.events[0].attributes["ip"] == "10.1.2.3"  # the control: rules do something


def test_feedback_attributes_are_dropped_and_redacted_too() -> None:
    fb = {"feedback_id": "f1", "request_id": "r1", "timestamp": NOW - 1, "kind": "label",
          "label": "spam", "attributes": {"ip": "10.1.2.3", "email": "alice@example.com",
                                          "channel": "web"}}
    out = decode_events(msgspec.json.encode([fb]), JSON_H, LIMITS, NOW, FeedbackEvent,
                        redaction=RULES)
    (record,) = out.events
    assert record.attributes == {"email": REDACTED, "channel": "web"}


def test_resource_samples_pass_untouched() -> None:
    sample = {"timestamp": NOW - 1, "host": "gpu-1", "cpu_util": 0.5}
    out = decode_events(msgspec.json.encode(sample), JSON_H, LIMITS, NOW, ResourceSample,
                        redaction=RULES)
    assert [s.host for s in out.events] == ["gpu-1"]


def test_a_key_both_dropped_and_redacted_is_dropped_and_absent_keys_cost_no_copy() -> None:
    rules = Redaction(drop_attributes=["email"], redact_attributes=["email", "name"])
    e = InferenceEvent(event_id="e", timestamp=1.0, model="m", latency_ms=1.0,
                       attributes={"email": "a@x.io", "name": "Al", "plan": "pro"})
    untouched = InferenceEvent(event_id="f", timestamp=1.0, model="m", latency_ms=1.0,
                               attributes={"plan": "pro"})
    before = untouched.attributes
    rules.events([e, untouched])
    assert e.attributes == {"name": REDACTED, "plan": "pro"}
    assert untouched.attributes is before and before == {"plan": "pro"}


# ------------------------------------------------------------------ stage 1


STAGE = Settings(topics=TopicSettings(partitions=1), metrics=MetricsSettings(
    window_seconds=10, lateness_seconds=2, idle_timeout_seconds=5, series_labels=["model"],
    feature_usage_attributes=["app_feature", "ip", "email"]))
SPEC = MonitorSpec(categorical_features=("zip",), operational=False, confidence=False,
                   prediction="none")


def _stage_one_window(privacy: PrivacySettings) -> WindowProfile:
    stage = PartialStage(msgspec.structs.replace(STAGE, privacy=privacy), SPEC)
    topic = STAGE.topics.events
    stage.on_assign(topic, 0, {})
    value = msgspec.json.encode([_event(i, t=NOW - 100 + i) for i in range(4)])
    steps = [stage.on_batch(topic, 0, [Record(topic, 0, 0, None, value, JSON_H)], NOW),
             stage.on_tick(NOW + 1e6, lambda *_: True)]
    (partial,) = [m for s in steps for o in s.outputs
                  if isinstance(m := decode_partials(o.value), Partial)]
    return WindowProfile.from_builtins(partial.profile)


def test_stage_one_feature_usage_and_drift_never_see_dropped_keys() -> None:
    control = _stage_one_window(PrivacySettings())
    assert control.feature_usage["ip"] == {"10.1.2.3": 4}  # the control: it would show
    assert "10115" in control.drift_profile(False)["feature.zip"].counts

    window = _stage_one_window(PRIVACY)
    assert window.requests == 4
    assert window.feature_usage == {"app_feature": {"chat": 4}, "email": {REDACTED: 4}}
    assert "10115" not in window.drift_profile(False)["feature.zip"].counts
    assert all(s not in msgspec.msgpack.encode(window.to_builtins()) for s in SECRETS)


# ------------------------------------------------------------------ the sink, real chDB


def _sink_rows(fresh_store, privacy: PrivacySettings, prefix: str) -> list[tuple]:
    client, settings = fresh_store
    sink = ClickHouseSink(msgspec.structs.replace(settings, privacy=privacy), client)
    now = time.time() - 60
    value = msgspec.json.encode([_event(i, t=now, event_id=f"{prefix}{i}") for i in range(2)])
    tp = TopicPartition(settings.topics.events, 0)
    record = ConsumerRecord(tp.topic, 0, 0, 0, 0, None, value, None, 0, len(value), JSON_H)
    batch = Batch()
    sink.collect({tp: [record]}, batch)
    sink.insert(batch)
    assert batch.refused == [] and batch.rejected == 0
    return client.query(
        "SELECT attributes, features_num, features_cat FROM events FINAL "
        f"WHERE event_id LIKE '{prefix}%' ORDER BY event_id").result_rows


def test_the_sink_stores_rows_without_dropped_keys(fresh_store) -> None:
    control = _sink_rows(fresh_store, PrivacySettings(), "plain-")
    assert control[0][0]["ip"] == "10.1.2.3" and control[0][2] == {"zip": "10115"}

    rows = _sink_rows(fresh_store, PRIVACY, "private-")
    assert len(rows) == 2
    for attributes, numeric, categorical in rows:
        assert attributes == {"email": REDACTED, "app_feature": "chat"}
        assert numeric == {"tokens": 812.0} and categorical == {}


# ------------------------------------------------------------------ the quality intake

ITEMS = msgspec.msgpack.Decoder(list[JoinItem])


def test_the_quality_intake_forwards_redacted_feedback_and_the_same_series() -> None:
    settings = Settings(metrics=MetricsSettings(series_labels=["model", "email"]),
                        privacy=PRIVACY)
    intake = JoinIntake(settings)
    topics = settings.topics
    fb = {"feedback_id": "f1", "event_id": "e0", "timestamp": NOW - 1, "kind": "label",
          "label": "spam", "attributes": {"ip": "10.1.2.3", "email": "alice@example.com"}}
    steps = [
        intake.on_batch(topics.events, 0, [Record(topics.events, 0, 0, None,
                                                  msgspec.json.encode(_event()), JSON_H)], NOW),
        intake.on_batch(topics.feedback, 0, [Record(topics.feedback, 0, 0, None,
                                                    msgspec.json.encode(fb), JSON_H)], NOW),
    ]
    items = [i for s in steps for o in s.outputs for i in ITEMS.decode(o.value)]
    (stub,) = [i.stub for i in items if isinstance(i, StubItem)]
    (feedback,) = [i.feedback for i in items if isinstance(i, FeedbackItem)]
    assert feedback.attributes == {"email": REDACTED}
    assert stub.series_key == f"email={REDACTED}|model=m"  # the key stage 1 gives the series
    sent = b"".join(o.value for step in steps for o in step.outputs)
    assert all(secret not in sent for secret in SECRETS)
