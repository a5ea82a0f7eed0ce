"""The FeedbackEvent contract: its rules and bounds, its JSON Schema, and its decoding."""

from __future__ import annotations

import json

import jsonschema
import msgspec
import pytest

from pipeline.config import IngestLimits, TopicSettings
from pipeline.sources.codec import MSGPACK, decode_events, encode_events
from schemas import FeedbackEvent, export_json_schemas

NOW = 1_800_000_000.0
LIMITS = IngestLimits()
JSON_H = {"content-type": b"application/json"}
MSGPACK_H = {"content-type": b"application/msgpack"}


def good(**overrides) -> dict:
    feedback = {"feedback_id": "f1", "event_id": "e1", "timestamp": NOW - 1,
                "kind": "label", "label": "spam", "source": "human_review"}
    feedback.update(overrides)
    return {k: v for k, v in feedback.items() if v is not ...}  # ... = leave the field out


def decode(value, headers=JSON_H):
    return decode_events(value, headers, LIMITS, NOW, FeedbackEvent)


def decode_one(feedback: dict) -> FeedbackEvent:
    return msgspec.json.decode(json.dumps(feedback).encode(), type=FeedbackEvent)


# --------------------------------------------------------------------------- accepted
@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({}, "label", "spam"),
        ({"label": 3}, "label", 3.0),  # numeric ground truth
        ({"label": -2.5}, "label", -2.5),
        ({"kind": "satisfaction", "label": ..., "satisfaction": 0}, "satisfaction", 0.0),
        ({"kind": "satisfaction", "label": ..., "satisfaction": 1}, "satisfaction", 1.0),
        ({"kind": "business", "label": ..., "value": -120.5}, "value", -120.5),
        ({"event_id": ..., "request_id": "r" * 256}, "request_id", "r" * 256),
        ({"request_id": "r1"}, "request_id", "r1"),  # both ids is fine
        ({"label": None, "kind": "business", "value": 1, "satisfaction": None}, "value", 1.0),
    ],
)
def test_valid_feedback_decodes(overrides, field, expected):
    feedback = decode_one(good(**overrides))
    assert getattr(feedback, field) == expected


def test_round_trips_in_json_and_msgpack_and_omits_defaults():
    feedback = FeedbackEvent(
        feedback_id="f1", request_id="r1", timestamp=NOW, kind="business", value=42.0,
        source="checkout", attributes={"currency": "EUR"},
    )
    assert b"satisfaction" not in encode_events(feedback)  # omit_defaults
    for ctype, headers in (("application/json", JSON_H), (MSGPACK, MSGPACK_H)):
        out = decode(encode_events(feedback, ctype), headers)
        assert out.rejections == []
        assert out.events == [feedback]


def test_unknown_fields_are_ignored():
    assert decode_one(good(rating_scale="5-stars")).label == "spam"


# --------------------------------------------------------------------------- rejected
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"event_id": ...}, "event_id or the request_id"),
        ({"event_id": None, "request_id": None}, "event_id or the request_id"),
        ({"label": ...}, "kind 'label' needs the field 'label'"),
        ({"kind": "satisfaction"}, "needs the field 'satisfaction'"),  # label given instead
        ({"kind": "business", "label": ...}, "needs the field 'value'"),
        ({"satisfaction": 0.5}, "carries only 'label', not 'satisfaction'"),
        ({"kind": "satisfaction", "label": ..., "satisfaction": 1, "value": 3},
         "carries only 'satisfaction', not 'value'"),
        ({"kind": "thumbs"}, "$.kind"),
        ({"kind": ...}, "`kind`"),
        ({"feedback_id": ...}, "`feedback_id`"),
        ({"feedback_id": ""}, "$.feedback_id"),
        ({"timestamp": ...}, "`timestamp`"),
        ({"timestamp": -1}, "$.timestamp"),
        ({"event_id": ""}, "$.event_id"),
        ({"event_id": "e" * 129}, "$.event_id"),
        ({"request_id": ""}, "$.request_id"),  # a join key is never empty
        ({"request_id": "r" * 257}, "$.request_id"),
        ({"label": "x" * 257}, "$.label"),
        ({"label": 1e16}, "$.label"),
        ({"label": True}, "$.label"),
        ({"kind": "satisfaction", "label": ..., "satisfaction": 1.01}, "$.satisfaction"),
        ({"kind": "satisfaction", "label": ..., "satisfaction": -0.01}, "$.satisfaction"),
        ({"kind": "business", "label": ..., "value": 1e16}, "$.value"),
        ({"source": "s" * 129}, "$.source"),
        ({"attributes": {"k": 1}}, "$.attributes"),
        ({"attributes": {f"k{i}": "v" for i in range(33)}}, "$.attributes"),
    ],
)
def test_invalid_feedback_is_a_schema_rejection(overrides, needle):
    raw = json.dumps(good(**overrides)).encode()
    out = decode(raw)
    assert out.events == []
    (rejection,) = out.rejections
    assert (rejection.reason, rejection.index, rejection.raw) == ("schema", None, raw)
    assert needle in rejection.detail


def test_building_one_in_python_checks_the_rules_too():
    with pytest.raises(ValueError, match="event_id or the request_id"):
        FeedbackEvent(feedback_id="f", timestamp=NOW, kind="satisfaction", satisfaction=1.0)
    with pytest.raises(ValueError, match="needs the field 'value'"):
        FeedbackEvent(feedback_id="f", event_id="e", timestamp=NOW, kind="business")


# --------------------------------------------------------------------------- batches
@pytest.mark.parametrize(("dumps", "headers"), [
    (lambda batch: json.dumps(batch).encode(), JSON_H),
    (msgspec.msgpack.encode, MSGPACK_H),
])
def test_a_bad_element_rejects_only_itself(dumps, headers):
    batch = [
        good(feedback_id="a"),
        good(feedback_id="b", event_id=...),  # no event or request id: the post-init rule
        good(feedback_id="c", kind="satisfaction", label=..., satisfaction=0.2),
        good(feedback_id="d", kind="business", label=...),  # no value: the post-init rule
        good(feedback_id="e", timestamp=NOW + LIMITS.max_future_seconds + 60),  # skew checks
        good(feedback_id="f", kind="business", label=..., value=9.5),
    ]
    out = decode_events(dumps(batch), headers, LIMITS, NOW, FeedbackEvent)
    assert [f.feedback_id for f in out.events] == ["a", "c", "f"]
    assert [(r.reason, r.index) for r in out.rejections] == [
        ("schema", 1), ("schema", 3), ("future_timestamp", 4)]
    assert "event_id or the request_id" in out.rejections[0].detail
    assert "needs the field 'value'" in out.rejections[1].detail
    decoded = [msgspec.json.decode(r.raw) if headers is JSON_H else msgspec.msgpack.decode(r.raw)
               for r in out.rejections]
    assert [d["feedback_id"] for d in decoded] == ["b", "d", "e"]  # each its own bytes


def test_an_all_good_batch_takes_the_fast_path():
    batch = [good(feedback_id=f"f{i}") for i in range(50)]
    out = decode(json.dumps(batch).encode())
    assert out.rejections == [] and len(out.events) == 50


def test_stale_feedback_is_rejected_like_a_stale_event():
    out = decode(json.dumps(good(timestamp=NOW - LIMITS.max_past_seconds - 60)).encode())
    assert [r.reason for r in out.rejections] == ["stale_timestamp"]


def test_an_inference_event_is_not_feedback():
    raw = b'{"event_id":"e1","timestamp":1799999999,"model":"m","latency_ms":5}'
    (rejection,) = decode(raw).rejections
    assert rejection.reason == "schema"


# --------------------------------------------------------------------------- topic
def test_the_feedback_topic_is_created_with_the_others():
    topics = TopicSettings()
    assert topics.feedback == "inferwatch.feedback"
    assert topics.feedback in topics.all()
    assert topics.feedback not in topics.compacted()


# --------------------------------------------------------------------------- JSON Schema
@pytest.fixture(scope="module")
def validator(tmp_path_factory):
    directory = tmp_path_factory.mktemp("schemas")
    export_json_schemas(directory)
    schema = json.loads((directory / "FeedbackEvent.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_exported_schema_states_the_bounds(validator):
    body = validator.schema["$defs"]["FeedbackEvent"]
    assert set(body["required"]) == {"feedback_id", "timestamp", "kind"}
    assert body["properties"]["kind"]["enum"] == ["business", "label", "satisfaction"]
    assert {"type": "number", "minimum": 0.0, "maximum": 1.0} in (
        body["properties"]["satisfaction"]["anyOf"])


VALID = [
    good(),
    good(label=7),
    good(event_id=..., request_id="r1", kind="satisfaction", label=..., satisfaction=0.8),
    good(kind="business", label=..., value=-3.5, satisfaction=None, attributes={"a": "b"}),
]
INVALID = [
    good(event_id=...),
    good(event_id=None),
    good(label=...),
    good(label=None),
    good(satisfaction=0.5),
    good(kind="satisfaction"),
    good(kind="business", label=..., value=None),
    good(kind="satisfaction", label=..., satisfaction=2),
    good(feedback_id=""),
    good(kind="thumbs"),
]


@pytest.mark.parametrize("feedback", VALID)
def test_exported_schema_accepts_what_the_decoder_accepts(validator, feedback):
    decode_one(feedback)  # the decoder accepts it …
    validator.validate(feedback)  # … and so does the exported schema


@pytest.mark.parametrize("feedback", INVALID)
def test_exported_schema_rejects_what_the_decoder_rejects(validator, feedback):
    with pytest.raises(msgspec.ValidationError):
        decode_one(feedback)
    assert not validator.is_valid(feedback)
