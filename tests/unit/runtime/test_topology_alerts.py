"""Alerting on the in-memory runner: a crash at any point of the checkpoint order, or a
partition moving, neither loses a transition nor publishes one twice as a different
event; a series that stops sending windows is resolved by the sweep. No broker.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from pipeline.alerting.rules import parse_rules
from pipeline.alerting.stage import AlertRuleStage
from pipeline.config import Settings
from pipeline.runtime.memory import Crash, MemoryRunner, MemoryTopics
from pipeline.runtime.state import MemoryChangelog
from schemas.alert import AlertEvent
from schemas.metrics import WindowMetrics

SETTINGS = Settings()
RULES = parse_rules("""
rules:
  - name: Slow
    condition: latency_p99_ms > 2000 and requests >= 10
    severity: warning
""")
METRICS, ALERTS = SETTINGS.topics.metrics, SETTINGS.topics.alerts
T0 = 1_700_000_000.0
PARTS = [(METRICS, p) for p in range(2)]


def window(end: float, p99: float, model: str = "m") -> bytes:
    return msgspec.json.encode(WindowMetrics(
        series_key=f"model={model}", labels={"model": model}, window_start=end - 10,
        window_end=end, requests=100, latency_p99_ms=p99))


def world(slow_from: int = 3, slow_to: int = 6) -> tuple[MemoryTopics, MemoryChangelog, dict]:
    topics = MemoryTopics(2)
    for i in range(10):
        p99 = 5000.0 if slow_from <= i < slow_to else 100.0
        for p, model in enumerate("ab"):
            topics.append(METRICS, window(T0 + 10 * i, p99, model), partition=p)
    return topics, MemoryChangelog(), {}


def runner(topics, changelog, committed) -> MemoryRunner:
    return MemoryRunner(lambda: AlertRuleStage(SETTINGS, RULES), topics, changelog,
                        committed, SETTINGS.topics.dlq)


def transitions(topics: MemoryTopics) -> list[tuple[str, str, float]]:
    """(series, state, starts_at) of every published event, in order, duplicates kept."""
    events = [msgspec.json.decode(r.value, type=AlertEvent) for r in topics.records(ALERTS)]
    return [(e.series_key, e.state, e.starts_at) for e in events]


def reference() -> list:
    topics, changelog, committed = world()
    r = runner(topics, changelog, committed)

    async def go():
        await r.assign(PARTS)
        await r.drain(wall=T0 + 100)
    asyncio.run(go())
    return transitions(topics)


def test_each_series_fires_then_resolves_once():
    got = reference()
    assert sorted((s, st) for s, st, _ in got) == [
        ("model=a", "firing"), ("model=a", "resolved"),
        ("model=b", "firing"), ("model=b", "resolved")]


@pytest.mark.parametrize("phase", ["changes", "outputs", "commit"])
def test_a_crash_then_restart_neither_loses_nor_changes_a_transition(phase):
    topics, changelog, committed = world()
    r = runner(topics, changelog, committed)

    async def go():
        await r.assign(PARTS)
        for _ in range(4):  # up to the firing windows
            await r.poll(max_records=1, wall=T0 + 100)
        r.crash_at = phase
        with pytest.raises(Crash):
            for _ in range(20):
                await r.poll(max_records=1, wall=T0 + 100)
        await r.restart()
        await r.drain(wall=T0 + 100)
    asyncio.run(go())
    got = transitions(topics)
    assert set(got) == set(reference())  # nothing lost, the same events
    assert len(got) - len(set(got)) <= 2  # at most the one step in flight re-sent


def test_a_series_that_stops_sending_windows_is_resolved_by_the_sweep():
    topics, changelog, committed = world(slow_from=8, slow_to=10)  # slow at the end
    r = runner(topics, changelog, committed)

    async def go():
        await r.assign(PARTS)
        await r.drain(wall=T0 + 100)
        await r.tick(T0 + 100)  # not stale yet
        firing = [t for t in transitions(topics) if t[1] == "firing"]
        await r.tick(T0 + 100 + 3600)  # long after the last window
        return firing
    firing = asyncio.run(go())
    assert len(firing) == 2
    assert sorted(s for s, st, _ in transitions(topics) if st == "resolved") == [
        "model=a", "model=b"]
