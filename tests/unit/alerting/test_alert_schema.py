"""The AlertEvent and Silence contracts: round trips, and what decoding rejects."""

from __future__ import annotations

import msgspec
import pytest

from schemas.alert import ALERT_SCHEMA_VERSION, AlertEvent, Matcher, Silence

EVENT = AlertEvent(
    fingerprint="0123456789abcdef", rule="HighP99Latency", state="resolved", severity="warning",
    series_key="model=m", series_labels={"model": "m"},
    labels={"alertname": "HighP99Latency", "model": "m", "severity": "warning"},
    annotations={"summary": "p99 2500 ms"}, value=900.0, threshold=2000.0,
    window_start=1_700_000_000.0, window_end=1_700_000_060.0, starts_at=1_699_999_000.0,
    ends_at=1_700_000_060.0, silenced=True, silenced_by=["s1"])


@pytest.mark.parametrize("codec", [msgspec.json, msgspec.msgpack])
def test_alert_event_round_trips(codec):
    assert codec.decode(codec.encode(EVENT), type=AlertEvent) == EVENT


def test_alert_event_carries_its_schema_version_and_ignores_unknown_fields():
    assert EVENT.schema_version == ALERT_SCHEMA_VERSION  # omitted on the wire while default
    raw = msgspec.json.decode(msgspec.json.encode(EVENT))
    raw["added_later"] = 1
    assert msgspec.json.decode(msgspec.json.encode(raw), type=AlertEvent) == EVENT


@pytest.mark.parametrize(("field", "value"), [
    ("fingerprint", "XYZ"),
    ("state", "pending"),
    ("severity", "page"),
    ("window_end", -1.0),
    ("starts_at", "yesterday"),
])
def test_alert_event_rejects_bad_values(field, value):
    raw = msgspec.json.decode(msgspec.json.encode(EVENT))
    raw[field] = value
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(raw), type=AlertEvent)


def test_silence_contract():
    s = Silence(id="s1", matchers=[Matcher(name="model", op="=~", value="gpt-.*")],
                starts_at=0.0, ends_at=10.0, created_by="ops", comment="deploy")
    assert msgspec.json.decode(msgspec.json.encode(s), type=Silence) == s
    for bad in ({"id": "s", "matchers": [], "starts_at": 0, "ends_at": 1},
                {"id": "s", "matchers": [{"name": "m", "op": "~"}], "starts_at": 0, "ends_at": 1},
                {"id": "s", "matchers": [{"name": "1m"}], "starts_at": 0, "ends_at": 1},
                {"id": "s", "matchers": [{"name": "m"}], "starts_at": 0, "ends_at": 1, "x": 1}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, type=Silence)
