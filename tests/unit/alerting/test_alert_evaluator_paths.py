"""The evaluator's quick path (an idle alert whose condition cannot hold costs one call
and changes nothing) and its shared count histories give exactly the events of
evaluating every rule in full with a history of its own; and a series restored from what
:meth:`Evaluator.checkpoint` gave along the way carries on as if nothing happened."""

from __future__ import annotations

import random

import msgspec
import pytest

from pipeline.alerting.evaluator import EVALUATOR_FORMAT, Evaluator
from pipeline.alerting.rules import parse_rules
from pipeline.alerting.variables import window_vars

RULES = parse_rules("""
rules:
  - {name: P99, condition: latency_p99_ms > 900, severity: warning}
  - {name: P99For, condition: latency_p99_ms > 700 and requests >= 20, for: 30s,
     keep_firing_for: 20s, severity: warning,
     annotations: {summary: "{{ value }} > {{ threshold }} since {{ starts_at }} on
       {{ labels.model }} ({{ window_start }}-{{ window_end }})"}}
  - {name: EitherOr, condition: latency_p99_ms > 950 or errors_by_type.timeout > 3,
     severity: info}
  - {name: Low, condition: "not (requests > 5)", severity: info}
  - {name: Ratio, condition: errors / requests > 0.2, value: errors, severity: critical}
  - {name: Repeat, condition: "max(latency_p99_ms, 0) * 1.0 > 800", repeat_interval: 30s,
     severity: info}
  - {name: Bound, type: error_rate_bound, threshold: 0.1, min_requests: 10,
     severity: critical, annotations: {summary: "{{ metrics.requests }} requests,
       bound {{ details.lower_bound:.3f }}", since: "{{ starts_at }}"}}
  - {name: BoundZero, type: error_rate_bound, threshold: 0.0, z: 1.0, severity: info}
  - {name: BoundOver, type: error_rate_bound, threshold: 0.15, over: 30s, severity: info}
  - {name: BoundOverHigh, type: error_rate_bound, threshold: 0.25, over: 30s, z: 1.0,
     severity: critical}
  - {name: Burn, type: burn_rate, objective: 0.9, severity: critical,
     windows: [{long: 1m, short: 20s, burn_rate: 2}]}
""")


def windows(seed: int) -> list[dict]:
    """Three series, 80 windows of 10 s, values drifting in and out of every condition,
    missing values, and now and then a replayed or corrected window."""
    rng = random.Random(seed)
    out, sent = [], []
    for i in range(80):
        for model in "abc":
            requests = rng.choice([0, 3, 8, 40, 120])
            errors = min(requests, int(requests * rng.choice([0.0, 0.05, 0.3])))
            m = {"series_key": f"model={model}", "labels": {"model": model},
                 "window_start": 10.0 * i, "window_end": 10.0 * i + 10, "version": 1,
                 "requests": requests, "errors": errors,
                 "errors_by_type": {"timeout": rng.choice([0, 5])}}
            if rng.random() < 0.85:
                m["latency_p99_ms"] = rng.choice([100.0, 750.0, 850.0, 1000.0])
            out.append(m)
            sent.append(m)
        if rng.random() < 0.2:  # a replay of something sent, or a correction of it
            old = dict(rng.choice(sent[-9:]))
            if rng.random() < 0.5:
                old["version"] += 1
                old["latency_p99_ms"] = 5000.0
                old["errors"] = old["requests"]
            out.append(old)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_the_quick_path_gives_the_events_of_the_full_evaluation(seed):
    quick, full = Evaluator(RULES), Evaluator(RULES)
    full._quick = dict.fromkeys(full._quick)  # every rule in full, every window,
    full._history_keys = dict.fromkeys(full._history_keys)  # with a history of its own
    fired = 0
    for m in windows(seed):
        got, expected = quick.evaluate(m), full.evaluate(m)
        assert got == expected, m
        fired += sum(e.state == "firing" for e in got)
    assert fired > 10  # the conditions did hold, often
    assert quick.firing() == full.firing()
    for now in (900.0, 2000.0):
        assert quick.sweep(now, 60.0) == full.sweep(now, 60.0)


def test_each_condition_says_what_may_be_skipped_and_shared():
    facts = {rule.name: (rule.condition.quick_test() is not None, rule.condition.history_key(),
                         rule.condition.sums_test() is not None) for rule in RULES}
    no_history = (True, None, False)  # a quick test, and no history to keep up to date
    assert facts == {
        "P99": no_history, "P99For": no_history, "EitherOr": no_history, "Low": no_history,
        "Ratio": no_history, "Repeat": no_history, "Bound": no_history,
        "BoundZero": no_history,
        # keys of the shared histories in checkpoints: a change would lose them on restore
        "BoundOver": (False, "error_rate_bound|errors|requests|30", True),
        "BoundOverHigh": (False, "error_rate_bound|errors|requests|30", True),
        "Burn": (False, "burn_rate|errors|20,60", False),
    }


@pytest.mark.parametrize("seed", range(4))
def test_a_quick_or_sums_test_never_rejects_a_window_where_the_condition_holds(seed):
    held = 0
    for rule in RULES:
        condition = rule.condition
        quick, sums, history = condition.quick_test(), condition.sums_test(), \
            condition.new_history()
        for m in windows(seed):
            env = window_vars(m)
            outcome = condition.evaluate(env, m["window_start"], m["window_end"], history)
            if not outcome.holds:
                continue
            held += 1
            if quick is not None:
                assert quick(env) is True, (rule.name, m)
            if sums is not None:
                assert history is not None
                lookback = condition.lookbacks()[0]
                assert sums(history.sum(m["window_end"], lookback)), (rule.name, m)
    assert held > 100


def restored(store: dict) -> Evaluator:
    """A new evaluator from the checkpoints taken so far, as the stage reads them back."""
    ev = Evaluator(RULES)
    for key, labels in store["series"].items():
        end, version = store["clock"].get(key, (None, 0))
        ev.restore(key, {"format": EVALUATOR_FORMAT, "labels": labels, "last_end": end,
                         "last_version": version, "alerts": store["alerts"].get(key, {}),
                         "histories": store["histories"].get(key, {})})
    return ev


@pytest.mark.parametrize("seed", range(4))
def test_a_series_restored_from_its_checkpoints_carries_on_unchanged(seed):
    rng = random.Random(seed)
    straight = Evaluator(RULES)
    ev = Evaluator(RULES)
    store: dict = {"series": {}, "alerts": {}, "histories": {}, "clock": {}}
    restarts = annotated = 0
    for m in windows(seed):
        got = ev.evaluate(m)
        assert got == straight.evaluate(m), m
        annotated += sum(bool(e.annotations) for e in got)
        key = m["series_key"]
        cp = ev.checkpoint(key)
        if cp.series is not None:
            store["series"][key] = cp.series["labels"]
        for rule, data in cp.alerts.items():
            alerts = store["alerts"].setdefault(key, {})
            if data is None:
                alerts.pop(rule, None)
            else:
                alerts[rule] = msgspec.msgpack.decode(msgspec.msgpack.encode(data))
        if cp.histories is not None:
            store["histories"][key] = msgspec.msgpack.decode(msgspec.msgpack.encode(
                cp.histories))
        store["clock"][key] = ev.clock(key)
        if rng.random() < 0.1:
            ev = restored(store)
            restarts += 1
    assert restarts > 5
    assert ev.firing() == straight.firing()
    assert annotated > 5  # annotations were compared too
