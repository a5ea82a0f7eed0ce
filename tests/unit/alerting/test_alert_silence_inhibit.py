"""Silences, inhibition and grouping: muted alerts are still recorded, flagged."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.alerting.evaluator import Evaluator
from pipeline.alerting.grouping import group, group_key
from pipeline.alerting.inhibit import InhibitRule, inhibited_by
from pipeline.alerting.matchers import compile_matchers, parse_matcher
from pipeline.alerting.rules import parse_rules
from pipeline.alerting.silences import Silences, new_silence, validate_silence
from schemas.alert import AlertEvent, Matcher, Silence


# --------------------------------------------------------------------------- matchers
@pytest.mark.parametrize(("text", "name", "op", "value"), [
    ("model=gpt-chat", "model", "=", "gpt-chat"),
    ("model = gpt-chat ", "model", "=", "gpt-chat"),
    ('model="gpt chat"', "model", "=", "gpt chat"),
    ("model!=x", "model", "!=", "x"),
    ("region=~eu-.*", "region", "=~", "eu-.*"),
    ('region!~"us-.*"', "region", "!~", "us-.*"),
    ("team=", "team", "=", ""),
])
def test_parse_matcher(text, name, op, value):
    assert parse_matcher(text) == Matcher(name=name, op=op, value=value)


@pytest.mark.parametrize("text", ["model", "=x", "1abc=x", "model~x", "region=~eu-("])
def test_parse_matcher_rejects(text):
    with pytest.raises(ValueError):
        parse_matcher(text)


@pytest.mark.parametrize(("matcher", "labels", "hit"), [
    ("model=m", {"model": "m"}, True),
    ("model=m", {"model": "mm"}, False),
    ("model=m", {}, False),
    ("model!=m", {}, True),  # missing label is ""
    ("model=", {}, True),
    ("model=~m.*", {"model": "mx"}, True),
    ("model=~m", {"model": "mx"}, False),  # anchored
    ("model=~x|y", {"model": "y"}, True),
    ("model!~m.*", {"model": "mx"}, False),
])
def test_matcher_semantics(matcher, labels, hit):
    assert compile_matchers([parse_matcher(matcher)]).matches(labels) is hit


# --------------------------------------------------------------------------- silences
def test_silence_lifetime_and_expiry():
    s = Silences()
    sil = new_silence(["model=m"], duration="2h", now=1000.0, comment="deploy",
                      created_by="ops", silence_id="s1")
    assert (sil.starts_at, sil.ends_at) == (1000.0, 8200.0)
    s.add(sil)
    labels = {"alertname": "Slow", "model": "m"}
    assert s.muting(labels, 999.0) == []  # not started
    assert s.muting(labels, 1000.0) == ["s1"]
    assert s.muting(labels, 8199.0) == ["s1"]
    assert s.muting(labels, 8200.0) == []  # ended
    expired = s.expire("s1", now=2000.0)
    assert expired.ends_at == 2000.0
    assert s.muting(labels, 2500.0) == []
    assert [x.id for x in s.all()] == ["s1"]  # kept for the record
    assert s.active(2500.0) == []
    assert s.prune(now=2000.0 + 86400, retention=3600) == 1 and len(s) == 0
    with pytest.raises(KeyError):
        s.expire("nope", now=0.0)


def test_silence_must_not_match_everything():
    with pytest.raises(ValueError, match="every alert"):
        new_silence(["model=~.*"], duration="1h", now=0.0)
    with pytest.raises(ValueError, match="every alert"):
        new_silence(["model!=x"], duration="1h", now=0.0)
    with pytest.raises(ValueError, match="end after"):
        validate_silence(Silence(id="x", matchers=[Matcher(name="a", value="b")],
                                 starts_at=10.0, ends_at=10.0))
    with pytest.raises(ValueError, match="duration"):
        new_silence(["model=m"], duration="forever", now=0.0)


def test_silences_round_trip_for_durable_storage():
    s = Silences([new_silence(["model=m", "region=~eu-.*"], duration="1h", now=0.0,
                              silence_id="a", comment="c"),
                  new_silence(["alertname=Slow"], duration=60, now=10.0, silence_id="b")])
    raw = msgspec.json.encode(s.to_builtins())
    back = Silences.from_builtins(msgspec.json.decode(raw))
    assert back.all() == s.all()
    with pytest.raises(msgspec.ValidationError):
        Silences.from_builtins([{"id": "x", "matchers": [], "starts_at": 0, "ends_at": 1}])


RULES = parse_rules("""
inhibit_rules:
  - source_match: {severity: critical}
    target_match: {severity: warning}
    equal: [model]
rules:
  - name: Down
    condition: error_rate > 0.5
    severity: critical
  - name: Slow
    condition: p99_latency_ms > 2000
    severity: warning
  - name: Note
    condition: requests > 0
    severity: info
""")


def window(end, *, model="m", error_rate=0.0, p99=100.0, operation="chat"):
    labels = {"model": model, "operation": operation}
    return {"series_key": f"model={model}|operation={operation}", "labels": labels,
            "window_start": end - 60.0, "window_end": float(end), "requests": 100,
            "error_rate": error_rate, "latency_p99_ms": p99}


def by_rule(events):
    return {e.rule: e for e in events}


def test_silenced_alerts_are_still_published_flagged():
    silences = Silences([new_silence(["alertname=Slow", "model=m"], duration="1h", now=0.0,
                                     silence_id="quiet")])
    ev = Evaluator(RULES, silences)
    events = by_rule(ev.evaluate(window(60, p99=3000)))
    assert events["Slow"].silenced and events["Slow"].silenced_by == ["quiet"]
    assert not events["Note"].silenced
    # muting is evaluated at `now` when given (wall clock), else at the window end
    later = by_rule(ev.evaluate(window(120, p99=100), now=7200.0))
    assert later["Slow"].state == "resolved" and not later["Slow"].silenced


# --------------------------------------------------------------------------- inhibition
def test_firing_critical_inhibits_warning_with_equal_labels():
    ev = Evaluator(RULES)
    events = by_rule(ev.evaluate(window(60, error_rate=0.9, p99=3000)))
    assert not events["Down"].inhibited
    assert events["Slow"].inhibited and events["Slow"].inhibited_by == [events["Down"].fingerprint]
    assert not events["Note"].inhibited  # info is not a target


def test_inhibition_needs_equal_labels_and_a_firing_source():
    ev = Evaluator(RULES)
    ev.evaluate(window(60, model="a", error_rate=0.9))  # critical on model a
    other = by_rule(ev.evaluate(window(60, model="b", p99=3000)))
    assert not other["Slow"].inhibited  # different model
    same = by_rule(ev.evaluate(window(60, model="a", operation="embed", p99=3000)))
    assert same["Slow"].inhibited  # same model, other series: equal is on model only
    ev.evaluate(window(120, model="a", error_rate=0.0, p99=3000))  # critical resolves
    ev2 = by_rule(ev.evaluate(window(120, model="a", operation="embed", p99=100)))
    assert ev2["Slow"].state == "resolved" and not ev2["Slow"].inhibited


def test_inhibited_by_semantics():
    rule = InhibitRule(compile_matchers([parse_matcher("severity=critical")]),
                       compile_matchers([parse_matcher("severity=~warning|critical")]),
                       equal=("model", "region"))
    source = {"severity": "critical", "model": "m"}  # no region
    target = {"severity": "warning", "model": "m"}  # no region either: equal
    assert inhibited_by(target, "t", [rule], {"s": source}) == ["s"]
    assert inhibited_by({**target, "region": "eu"}, "t", [rule], {"s": source}) == []
    # an alert never inhibits itself, even when it matches source and target
    assert inhibited_by(source, "s", [rule], {"s": source}) == []


def test_restored_firing_alerts_still_inhibit():
    ev = Evaluator(RULES)
    ev.evaluate(window(60, error_rate=0.9))
    state = ev.state("model=m|operation=chat")
    new = Evaluator(RULES)
    new.restore("model=m|operation=chat", state)
    events = by_rule(new.evaluate(window(60, model="m", operation="embed", p99=3000)))
    assert events["Slow"].inhibited
    new.forget("model=m|operation=chat")  # partition revoked: its alerts no longer inhibit
    events = by_rule(new.evaluate(window(120, model="m", operation="embed", p99=3000)))
    assert events == {}  # Slow already firing: no new event
    assert not new.firing("Slow")[0].inhibited


# --------------------------------------------------------------------------- grouping
def event(fp, *, model="m", state="firing", severity="warning", silenced=False, rule="Slow"):
    return AlertEvent(fingerprint=fp * 16, rule=rule, state=state, severity=severity,
                      labels={"alertname": rule, "model": model, "severity": severity},
                      annotations={"summary": f"{rule} on {model}", "runbook_url": "u"},
                      window_start=0.0, window_end=60.0, starts_at=60.0, silenced=silenced)


def test_grouping_by_labels():
    events = [event("a", model="m1"), event("b", model="m2"), event("c", model="m1",
                                                                    state="resolved")]
    groups = group(events, ["alertname", "model"])
    assert [g.key for g in groups] == ['{}:{alertname="Slow", model="m1"}',
                                       '{}:{alertname="Slow", model="m2"}']
    g1 = groups[0]
    assert [a.fingerprint[0] for a in g1.alerts] == ["a", "c"]
    assert g1.status == "firing"
    assert g1.common_labels() == {"alertname": "Slow", "model": "m1", "severity": "warning"}
    assert g1.common_annotations() == {"runbook_url": "u", "summary": "Slow on m1"}
    resolved = group([event("c", state="resolved")], ["alertname"])[0]
    assert resolved.status == "resolved"


def test_grouping_all_labels_and_muted_alerts():
    events = [event("a"), event("b", model="m2"), event("c", silenced=True)]
    assert len(group(events, ["..."])) == 2  # c is silenced and left out
    assert len(group(events, ["..."], include_muted=True)) == 2  # a and c share labels
    assert len(group(events, [])) == 1  # everything in one group
    assert group_key({}) == "{}:{}"
    assert group_key({"a": 'x"y'}) == '{}:{a="x\\"y"}'
