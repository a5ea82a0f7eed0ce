"""Alert lifecycle: for / keep_firing_for, no duplicate firing, repeat_interval, stable
fingerprints, and checkpoints that neither re-fire nor forget."""

from __future__ import annotations

import random

import msgspec
import pytest

from pipeline.alerting.evaluator import Evaluator
from pipeline.alerting.lifecycle import Lifecycle, Transition, fingerprint
from pipeline.alerting.rules import parse_rules


def run(lc: Lifecycle, steps):
    """Feed (time, holds) pairs; return [(kind, at)] of the transitions."""
    out = []
    for now, holds in steps:
        out += [(t.kind, t.at) for t in lc.evaluate(now, holds, float(now))]
    return out


# --------------------------------------------------------------------------- for
def test_for_zero_fires_on_the_first_holding_evaluation():
    lc = Lifecycle()
    assert run(lc, [(60, False), (120, True)]) == [("firing", 120)]
    assert lc.state == "firing" and lc.fired_at == 120


def test_for_pending_then_firing_after_the_duration():
    lc = Lifecycle(for_=120)
    assert run(lc, [(60, True)]) == [("pending", 60)]
    assert lc.state == "pending"
    assert run(lc, [(120, True)]) == []  # held 60 s of 120
    assert run(lc, [(180, True)]) == [("firing", 180)]  # held 120 s
    assert lc.state == "firing"


def test_pending_that_stops_holding_is_cancelled_and_restarts_from_scratch():
    lc = Lifecycle(for_=120)
    assert run(lc, [(60, True), (120, True), (180, False)]) == [
        ("pending", 60), ("cancelled", 180)]
    assert lc.state == "inactive"
    # the clock restarts: 240 pending, 300 not yet, 360 fires
    assert run(lc, [(240, True), (300, True), (360, True)]) == [
        ("pending", 240), ("firing", 360)]


def test_unknown_does_not_hold():
    lc = Lifecycle(for_=60)
    assert run(lc, [(60, True), (120, None)]) == [("pending", 60), ("cancelled", 120)]
    lc = Lifecycle()
    assert run(lc, [(60, True), (120, None)]) == [("firing", 60), ("resolved", 120)]


# --------------------------------------------------------------------------- keep_firing_for
def test_resolves_at_once_without_keep_firing_for():
    lc = Lifecycle()
    transitions = lc.evaluate(60, True, 5.0) + lc.evaluate(120, False, 1.0)
    assert transitions == [Transition("firing", 60, 60, None, 5.0),
                           Transition("resolved", 120, 60, 120, 1.0)]
    assert lc.state == "resolved" and lc.resolved_at == 120


def test_keep_firing_for_holds_a_flapping_alert():
    lc = Lifecycle(keep_firing_for=120)
    steps = [(60, True), (120, False), (180, False), (240, True),  # back within 120 s
             (300, False), (360, False), (420, False)]
    assert run(lc, steps) == [("firing", 60), ("resolved", 420)]


def test_resolved_alert_can_fire_again_as_a_new_episode():
    lc = Lifecycle(for_=60)
    run(lc, [(60, True), (120, True), (180, False)])
    assert lc.state == "resolved"
    assert run(lc, [(240, True), (300, True)]) == [("pending", 240), ("firing", 300)]
    assert lc.fired_at == 300


# --------------------------------------------------------------------------- duplicates, repeats
def test_no_duplicate_firing_while_it_holds():
    lc = Lifecycle(for_=60)
    kinds = [k for k, _ in run(lc, [(t, True) for t in range(60, 6000, 60)])]
    assert kinds == ["pending", "firing"]


def test_repeat_interval_reminds_while_firing():
    lc = Lifecycle(repeat_interval=300, keep_firing_for=120)
    got = run(lc, [(t, True) for t in range(60, 720, 60)] + [(720, False), (780, False),
                                                              (840, False)])
    assert got == [("firing", 60), ("repeat", 360), ("repeat", 660), ("resolved", 840)]
    repeat = [t for t in Lifecycle(repeat_interval=60).evaluate(0, True)]
    assert repeat[0].kind == "firing"


def test_repeat_carries_the_episode_start():
    lc = Lifecycle(repeat_interval=120)
    lc.evaluate(60, True, 1.0)
    lc.evaluate(120, True, 2.0)
    (t,) = lc.evaluate(180, True, 3.0)
    assert t == Transition("repeat", 180, 60, None, 3.0)


# --------------------------------------------------------------------------- time
def test_older_evaluations_are_ignored_and_the_same_time_replays():
    lc = Lifecycle()
    first = lc.evaluate(60, True, 1.0)
    assert lc.evaluate(60, True, 1.0) == first  # a replay: the same transitions again
    assert lc.evaluate(30, False) == []  # older: ignored
    assert lc.state == "firing"
    assert lc.evaluate(120, True) == []
    assert lc.evaluate(120, True) == []  # replay of a quiet evaluation: still nothing


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_restore_neither_refires_nor_forgets():
    lc = Lifecycle(for_=60)
    run(lc, [(60, True), (120, True)])
    assert lc.firing
    data = msgspec.msgpack.decode(msgspec.msgpack.encode(lc.to_builtins()))
    back = Lifecycle.from_builtins(data, for_=60)
    assert back.firing and back.fired_at == 120
    assert back.evaluate(180, True) == []  # does not fire again
    (t,) = back.evaluate(240, False)  # and does not forget: it resolves
    assert (t.kind, t.starts_at, t.ends_at) == ("resolved", 120, 240)


def test_restore_then_replay_of_the_last_window_returns_its_transitions_again():
    lc = Lifecycle()
    (fired,) = lc.evaluate(60, True, 1.0)
    back = Lifecycle.from_builtins(lc.to_builtins())
    assert back.evaluate(60, True, 1.0) == [fired]


@pytest.mark.parametrize("seed", range(20))
def test_restoring_after_every_step_changes_nothing(seed):
    rng = random.Random(seed)
    config = {"for_": rng.choice([0, 60, 180]), "keep_firing_for": rng.choice([0, 120]),
              "repeat_interval": rng.choice([None, 300])}
    steps = [(60.0 * i, rng.random() < 0.6 if rng.random() > 0.1 else None)
             for i in range(1, 80)]
    straight = Lifecycle(**config)
    expected = [straight.evaluate(t, h, t) for t, h in steps]
    restored = Lifecycle(**config)
    got = []
    for t, h in steps:
        restored = Lifecycle.from_builtins(
            msgspec.json.decode(msgspec.json.encode(restored.to_builtins())), **config)
        got.append(restored.evaluate(t, h, t))
    assert got == expected
    assert sum(1 for ts in expected for x in ts if x.kind == "firing") == \
        sum(1 for ts in expected for x in ts if x.kind == "resolved") + straight.firing


def test_bad_checkpoints_are_rejected():
    with pytest.raises(ValueError, match="format"):
        Lifecycle.from_builtins({"format": 99})
    data = Lifecycle().to_builtins() | {"state": "exploded"}
    with pytest.raises(ValueError, match="state"):
        Lifecycle.from_builtins(data)


# --------------------------------------------------------------------------- fingerprint
def test_fingerprint_is_stable_and_ignores_label_order():
    a = fingerprint("HighP99Latency", {"model": "m", "operation": "chat", "model_version": "1"})
    b = fingerprint("HighP99Latency", {"operation": "chat", "model_version": "1", "model": "m"})
    assert a == b
    assert len(a) == 16 and int(a, 16) >= 0
    # pinned: changing the recipe would orphan every alert in flight
    assert fingerprint("HighP99Latency", {"model": "m"}) == "d776db060319a0ed"


@pytest.mark.parametrize(("rule", "labels"), [
    ("Other", {"model": "m"}),
    ("HighP99Latency", {"model": "n"}),
    ("HighP99Latency", {"model": "m", "operation": ""}),
    ("HighP99Latency", {"mode": "lm"}),
])
def test_fingerprint_differs_for_other_alerts(rule, labels):
    assert fingerprint(rule, labels) != fingerprint("HighP99Latency", {"model": "m"})


# --------------------------------------------------------------------------- evaluator
RULES = parse_rules("""
rules:
  - name: Slow
    condition: p99_latency_ms > 2000
    for: 1m
    severity: warning
    annotations: {summary: "p99 {{ value }} ms"}
""")


def window(end, p99, *, model="m", version=1):
    return {"series_key": f"model={model}", "labels": {"model": model},
            "window_start": end - 60.0, "window_end": float(end), "version": version,
            "requests": 100, "latency_p99_ms": p99}


def test_evaluator_publishes_firing_and_resolved_once_each():
    ev = Evaluator(RULES)
    events = [e for t, p in [(60, 2500), (120, 2600), (180, 2700), (240, 900), (300, 800)]
              for e in ev.evaluate(window(t, p))]
    assert [(e.state, e.window_end, e.starts_at, e.ends_at) for e in events] == [
        ("firing", 120, 120, None), ("resolved", 240, 120, 240)]
    firing, resolved = events
    assert firing.fingerprint == resolved.fingerprint == fingerprint("Slow", {"model": "m"})
    assert firing.value == 2600 and firing.threshold == 2000
    assert firing.annotations == {"summary": "p99 2600 ms"}
    assert resolved.annotations == {"summary": "p99 2700 ms"}  # the last firing values
    assert resolved.value == 900


def test_evaluator_state_survives_a_crash_without_refiring_or_forgetting():
    ev = Evaluator(RULES)
    ev.evaluate(window(60, 2500))
    (fired,) = ev.evaluate(window(120, 2600))
    saved = msgspec.msgpack.decode(msgspec.msgpack.encode(ev.state("model=m")))

    new = Evaluator(RULES)  # another worker after a crash or rebalance
    new.restore("model=m", saved)
    assert [e.fingerprint for e in new.firing()] == [fired.fingerprint]
    assert new.evaluate(window(120, 2600)) == [fired]  # replay: the same event again
    assert new.evaluate(window(180, 2700)) == []  # no re-fire
    (resolved,) = new.evaluate(window(240, 900))  # not forgotten
    assert (resolved.state, resolved.starts_at) == ("resolved", 120)


def test_a_corrected_window_does_not_move_the_alert():
    ev = Evaluator(RULES)
    ev.evaluate(window(60, 2500))
    assert len(ev.evaluate(window(120, 2600))) == 1
    assert ev.evaluate(window(120, 900, version=2)) == []  # correction of the last window
    assert ev.evaluate(window(60, 900, version=2)) == []  # correction of an older one
    assert [e.rule for e in ev.firing()] == ["Slow"]


def test_series_are_independent():
    ev = Evaluator(RULES)
    for t in (60, 120):
        ev.evaluate(window(t, 2500, model="a"))
        ev.evaluate(window(t, 100, model="b"))
    assert [e.series_labels for e in ev.firing()] == [{"model": "a"}]


def test_sweep_resolves_series_that_went_quiet_and_forgets_them():
    ev = Evaluator(RULES)
    ev.evaluate(window(60, 2500))
    ev.evaluate(window(120, 2500))
    assert ev.sweep(now=150, stale_after=60) == []  # not stale yet
    (resolved,) = ev.sweep(now=200, stale_after=60)
    assert (resolved.state, resolved.ends_at, resolved.window_start) == ("resolved", 200, 120)
    assert ev.series_keys() == []  # nothing active, nothing to look back on: forgotten
    assert ev.firing() == []


def test_sweep_keeps_history_for_rules_that_look_back():
    ev = Evaluator(parse_rules("""
rules:
  - name: Burn
    type: burn_rate
    objective: 0.99
    severity: critical
    windows: [{long: 1h, short: 5m, burn_rate: 14.4}]
"""))
    ev.evaluate({"series_key": "s", "window_start": 0.0, "window_end": 60.0, "requests": 10})
    assert ev.sweep(now=600, stale_after=60) == []
    assert ev.series_keys() == ["s"]  # its hour of history still matters
    ev.sweep(now=3700, stale_after=60)
    assert ev.series_keys() == []


def test_window_metrics_struct_is_accepted():
    from schemas.metrics import WindowMetrics

    ev = Evaluator(parse_rules("""
rules:
  - name: Errors
    condition: error_rate > 0.1
    severity: critical
"""))
    m = WindowMetrics(series_key="model=m", labels={"model": "m"}, window_start=0.0,
                      window_end=10.0, requests=10, errors=5, error_rate=0.5)
    (e,) = ev.evaluate(m)
    assert (e.rule, e.state, e.value, e.labels["severity"]) == ("Errors", "firing", 0.5,
                                                                "critical")
