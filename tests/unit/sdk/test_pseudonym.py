"""Pseudonymised identities in the SDK: what leaves the producer is a keyed HMAC, or nothing.

Records are read back from the producer's buffer (the bytes it would send), decoded as the
consumers decode them; no broker (a closed port: nothing is ever sent).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from pipeline.config import IngestLimits, KafkaSettings, PrivacySettings, Settings
from pipeline.sdk.producer import Producer
from pipeline.sdk.pseudonym import Pseudonyms, pseudonym
from pipeline.sources.codec import decode_events
from schemas.event import InferenceEvent
from schemas.feedback import FeedbackEvent

KEY = "k3y-for-tests-only-0123456789abcdef"
OTHER_KEY = "another-key-for-tests-0123456789ab"
ENV = "INFERWATCH_PSEUDONYM_KEY"
RAW_USER = "alice@example.com"


def _down() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


DOWN = _down()


def _settings(fields: list[str] | None = None, key_env: str = ENV) -> Settings:
    privacy = PrivacySettings(key_env=key_env) if fields is None else PrivacySettings(
        pseudonymize=fields, key_env=key_env)
    return Settings(kafka=KafkaSettings(bootstrap_servers=DOWN), privacy=privacy)


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Producer]]:
    """Producers under a given key (None: the variable unset), closed after the test."""
    made: list[Producer] = []

    def make(fields: list[str] | None = None, key: str | None = KEY, **kwargs: object
             ) -> Producer:
        if key is None:
            monkeypatch.delenv(ENV, raising=False)
        else:
            monkeypatch.setenv(ENV, key)
        producer = Producer(_settings(fields), **kwargs)  # type: ignore[arg-type]
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close(timeout=0.05)


def _tracked(producer: Producer, **fields: object) -> InferenceEvent:
    """Track one inference; the event as the consumers will decode it from the buffer."""
    before = len(producer._pending())
    with producer.track("gpt-x", **fields):  # type: ignore[arg-type]
        pass
    pending = producer._pending()
    assert len(pending) == before + 1, producer.stats
    return pending[-1]  # type: ignore[return-value]


def _sent_bytes(producer: Producer) -> bytes:
    with producer._cond:
        return b"".join(data for _, _, data in producer._buf)


def _consumers_accept(producer: Producer) -> list[InferenceEvent]:
    with producer._cond:
        values = [data for _, _, data in producer._buf]
    out = [decode_events(v, {}, IngestLimits(), time.time()) for v in values]
    assert all(not o.rejections for o in out), [o.rejections for o in out]
    return [e for o in out for e in o.events]


# ------------------------------------------------------------------ the pseudonym itself


def test_the_pseudonym_is_the_documented_hmac_so_other_languages_can_match_it() -> None:
    expected = "h:" + hmac.new(KEY.encode(), RAW_USER.encode(), hashlib.sha256).hexdigest()[:32]
    assert pseudonym(KEY.encode(), RAW_USER) == expected
    assert pseudonym(KEY.encode(), "é") == (
        "h:" + hmac.new(KEY.encode(), "é".encode(), hashlib.sha256).hexdigest()[:32])


def test_same_value_and_key_give_the_same_pseudonym_another_key_another(make) -> None:
    a, b = make(), make()  # two services sharing the key
    ua, ub = _tracked(a, user=RAW_USER).user, _tracked(b, user=RAW_USER).user
    assert ua == ub == pseudonym(KEY.encode(), RAW_USER)
    assert _tracked(a, user="bob").user != ua
    c = make(key=OTHER_KEY)
    assert _tracked(c, user=RAW_USER).user not in (ua, "", RAW_USER)


def test_the_default_pseudonymises_user_and_the_raw_value_is_not_in_the_bytes(make) -> None:
    producer = make()  # privacy.pseudonymize defaults to ["user"]
    event = _tracked(producer, user=RAW_USER, tenant="acme", attributes={"plan": "pro"})
    assert event.user == pseudonym(KEY.encode(), RAW_USER)
    assert (event.tenant, event.attributes) == ("acme", {"plan": "pro"})  # not configured
    assert RAW_USER.encode() not in _sent_bytes(producer)
    assert _consumers_accept(producer)[0].user == event.user


def test_configured_fields_attributes_and_producer_defaults_are_pseudonymised(make) -> None:
    producer = make(["user", "tenant", "request_id", "attributes.email"], tenant="acme-corp")
    event = _tracked(producer, user=RAW_USER, request_id="req-77",
                     attributes={"email": "a@x.io", "plan": "pro"})
    k = KEY.encode()
    assert event.user == pseudonym(k, RAW_USER)
    assert event.tenant == pseudonym(k, "acme-corp")  # a Producer(tenant=...) default too
    assert event.request_id == pseudonym(k, "req-77")
    assert event.attributes == {"email": pseudonym(k, "a@x.io"), "plan": "pro"}
    sent = _sent_bytes(producer)
    for raw in (RAW_USER, "acme-corp", "req-77", "a@x.io"):
        assert raw.encode() not in sent
    _consumers_accept(producer)  # every pseudonym fits the contract's bounds


def test_emit_sends_a_pseudonymised_copy_and_leaves_the_callers_event_alone(make) -> None:
    producer = make(["user", "attributes.email"])
    mine = InferenceEvent(event_id="e1", timestamp=time.time(), model="m", latency_ms=1.0,
                          user=RAW_USER, attributes={"email": "a@x.io"})
    assert producer.emit(mine)
    (sent,) = producer._pending()
    assert sent.user == pseudonym(KEY.encode(), RAW_USER)
    assert mine.user == RAW_USER and mine.attributes == {"email": "a@x.io"}


def test_empty_values_stay_empty_and_events_without_identities_pass_unchanged(make) -> None:
    producer = make(["user", "request_id", "attributes.email"])
    event = _tracked(producer, attributes={"plan": "pro"})
    assert (event.user, event.request_id, event.attributes) == ("", None, {"plan": "pro"})
    plain = InferenceEvent(event_id="e", timestamp=1.0, model="m", latency_ms=1.0)
    assert producer._pseudonyms is not None
    assert producer._pseudonyms.event(plain) is plain  # nothing to replace: no copy


def test_feedback_by_request_id_gets_the_same_pseudonym_so_it_still_joins(make) -> None:
    producer = make(["user", "request_id", "attributes.email"])
    event = _tracked(producer, user=RAW_USER, request_id="req-9")
    assert producer.feedback(request_id="req-9", satisfaction=1.0,
                             attributes={"email": "a@x.io", "channel": "web"})
    feedback = producer._pending()[-1]
    assert isinstance(feedback, FeedbackEvent)
    assert feedback.request_id == event.request_id == pseudonym(KEY.encode(), "req-9")
    assert feedback.attributes == {"email": pseudonym(KEY.encode(), "a@x.io"), "channel": "web"}
    assert b"req-9" not in _sent_bytes(producer)


def test_an_empty_list_turns_pseudonymisation_off(make) -> None:
    producer = make([], key=None)
    assert producer._pseudonyms is None
    assert _tracked(producer, user="u-17").user == "u-17"


# ------------------------------------------------------------------ no key, bad key


def test_without_a_key_one_warning_at_construction_and_the_fields_are_dropped(
        make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    producer = make(["user", "tenant", "attributes.email"], key=None)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert ENV in message and "user, tenant, attributes.email" in message
    assert "dropped" in message and "never sent raw" in message
    caplog.clear()
    for i in range(3):
        event = _tracked(producer, user=f"{RAW_USER}{i}", tenant="acme",
                         attributes={"email": "a@x.io", "plan": "pro"})
        assert (event.user, event.tenant, event.attributes) == ("", "", {"plan": "pro"})
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []  # not per event
    assert producer.stats.dropped == 0  # the events go; only the fields are gone
    assert RAW_USER.encode() not in _sent_bytes(producer)


def test_an_empty_variable_counts_as_missing(make) -> None:
    producer = make(key="")
    assert producer._pseudonyms is not None and producer._pseudonyms.dropping
    assert _tracked(producer, user=RAW_USER).user == ""


def test_a_short_key_is_refused_at_construction_without_echoing_it(make) -> None:
    with pytest.raises(ValueError, match=rf"at least 16 .*{ENV}") as err:
        make(key="short-key")
    assert "short-key" not in str(err.value)


def test_a_name_that_is_no_identity_field_is_refused_at_construction(make) -> None:
    with pytest.raises(ValueError, match=r"'latency_ms', 'attributes\.'.*user, tenant"):
        make(["latency_ms", "attributes."])


def test_the_key_is_read_once_at_construction(make, monkeypatch: pytest.MonkeyPatch) -> None:
    producer = make()
    monkeypatch.setenv(ENV, OTHER_KEY)
    assert _tracked(producer, user=RAW_USER).user == pseudonym(KEY.encode(), RAW_USER)


def test_a_value_that_is_not_a_string_is_dropped_not_stringified(make) -> None:
    producer = make(["user", "attributes.email"])
    event = _tracked(producer, user=12345, attributes={"email": 678})
    assert (event.user, event.attributes) == ("", {})


# ------------------------------------------------------------------ nothing secret in logs


def test_neither_the_key_nor_raw_values_reach_logs_or_reprs(
        make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    producer = make(["user", "attributes.email"])
    _tracked(producer, user=RAW_USER, attributes={"email": "a@x.io"})
    # rejections log their reason: an oversize event and an invalid feedback
    producer.emit(InferenceEvent(event_id="big", timestamp=time.time(), model="m",
                                 latency_ms=1.0, user=RAW_USER, prediction="x" * 2_000_000))
    producer.feedback(request_id=RAW_USER, satisfaction=7.0, attributes={"email": "a@x.io"})
    assert producer.stats.dropped == 2
    text = "\n".join(r.getMessage() for r in caplog.records)
    text += repr(producer) + repr(producer._pseudonyms) + repr(producer._settings.privacy)
    for secret in (KEY, RAW_USER, "a@x.io"):
        assert secret not in text


def test_rules_from_settings_are_none_without_fields_and_validate_the_key() -> None:
    assert Pseudonyms.from_settings(PrivacySettings(pseudonymize=[]), {}) is None
    rules = Pseudonyms.from_settings(PrivacySettings(key_env="MY_KEY"), {"MY_KEY": KEY})
    assert rules is not None and not rules.dropping and rules.fields == ("user",)
    with pytest.raises(ValueError, match="MY_KEY"):
        Pseudonyms.from_settings(PrivacySettings(key_env="MY_KEY"), {"MY_KEY": "x"})
    fb = FeedbackEvent(feedback_id="f", request_id="r", timestamp=1.0, kind="business",
                       value=1.0)
    assert rules.feedback(fb) is fb  # feedback has no user field: nothing to replace
