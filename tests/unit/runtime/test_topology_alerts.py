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


# ------------------------------------------------------------------ changed state only
class RecordingChangelog(MemoryChangelog):
    """The in-memory changelog, keeping the keys of every write (one list per write)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []

    async def write(self, partition, changes):
        self.writes.append(list(changes))
        await super().write(partition, changes)


def quiet_world(windows: int = 12) -> tuple[MemoryTopics, RecordingChangelog, dict]:
    """Both series on partition 0: ``a`` slow in windows 3-5, ``b`` never; a replayed
    window and a correction of an old window of ``b`` that would hold (corrections do not
    move alerts), after the restart points."""
    topics = MemoryTopics(1)
    for i in range(windows):
        for model in "ab":
            slow = model == "a" and 3 <= i < 6
            topics.append(METRICS, window(T0 + 10 * i, 5000.0 if slow else 100.0, model),
                          partition=0)
        if i == 8:
            topics.append(METRICS, window(T0 + 10 * 7, 100.0, "b"), partition=0)  # replay
            late = msgspec.json.decode(window(T0 + 10 * 6, 9000.0, "b"))
            topics.append(METRICS, msgspec.json.encode({**late, "version": 2}), partition=0)
    return topics, RecordingChangelog(), {}


def run_quiet(restart_after: int | None) -> tuple[list, RecordingChangelog]:
    topics, changelog, committed = quiet_world()
    r = runner(topics, changelog, committed)

    async def go():
        await r.assign([(METRICS, 0)])
        if restart_after is not None:
            for _ in range(restart_after):
                await r.poll(max_records=1, wall=T0 + 200)
            await r.restart()  # a new process: state from the changelog only
        while await r.poll(max_records=1, wall=T0 + 200):  # a step per window
            pass
    asyncio.run(go())
    return transitions(topics), changelog


def test_an_unchanged_inactive_series_writes_no_state_record_in_a_window():
    _, changelog = run_quiet(None)
    first_b = next(i for i, keys in enumerate(changelog.writes) if "series|model=b" in keys)
    later = [k for keys in changelog.writes[first_b + 1:] for k in keys]
    assert not [k for k in later if "model=b" in k]  # neither its labels nor an alert
    assert any(k.startswith("clock|") for k in later)  # its latest window: the clock only
    # the series that fired wrote its alert while the episode lasted, then stopped
    a_alert = [i for i, keys in enumerate(changelog.writes) if "alert|model=a|Slow" in keys]
    assert a_alert and len(a_alert) <= 5
    after = {k.split("|")[0] for keys in changelog.writes[a_alert[-1] + 1:] for k in keys}
    assert after == {"clock", "offset", "out"}  # out: the acknowledged resolve, deleted


@pytest.mark.parametrize("restart_after", [1, 2, 5, 8, 12, 17, 18, 19, 20, 22])
def test_a_restart_after_quiet_windows_gives_the_alerts_of_an_uninterrupted_run(
        restart_after):
    reference_events, _ = run_quiet(None)
    assert [(s, st) for s, st, _ in reference_events] == [
        ("model=a", "firing"), ("model=a", "resolved")]
    got, _ = run_quiet(restart_after)
    assert got == reference_events


def test_the_earlier_layout_of_the_state_is_read_and_rewritten():
    from pipeline.alerting.evaluator import Evaluator

    topics, changelog, committed = quiet_world()
    reference_events, _ = run_quiet(None)
    ev = Evaluator(RULES)  # the state after windows 0-3, as the earlier layout wrote it
    records = topics.log[METRICS][0][:8]
    for record in records:
        ev.evaluate(msgspec.json.decode(record.value, type=WindowMetrics))
    for key in ("model=a", "model=b"):
        changelog.partitions[0][f"series|{key}"] = msgspec.msgpack.encode(ev.state(key))
    changelog.partitions[0]["offset"] = str(records[-1].offset).encode()
    r = runner(topics, changelog, committed)

    async def go():
        await r.assign([(METRICS, 0)])
        await r.drain(wall=T0 + 200)
    asyncio.run(go())
    assert transitions(topics) == reference_events[1:]  # fired before: the resolve only
    header = msgspec.msgpack.decode(changelog.partitions[0]["series|model=a"])
    assert "alerts" not in header and "alert|model=a|Slow" in changelog.partitions[0]
