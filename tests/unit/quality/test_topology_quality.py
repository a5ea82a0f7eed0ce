"""The quality path on the in-memory runner: inferences and feedback (out of order,
duplicated, for unknown inferences, hostile bytes) through intake, join and quality
windows; a crash at any point of the checkpoint order gives the same final windows and
fates as an uninterrupted run. No broker; milliseconds."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest

from pipeline.config import MetricsSettings, QualitySettings, Settings, TopicSettings
from pipeline.quality.intake import JoinIntake
from pipeline.quality.join_stage import JoinStage
from pipeline.quality.records import OutcomeBatch
from pipeline.quality.stage import QualityStage
from pipeline.quality.versions import SUMS
from pipeline.runtime.memory import Crash, MemoryRunner, MemoryTopics
from pipeline.runtime.state import MemoryChangelog
from pipeline.telemetry import REGISTRY
from schemas.metrics import CONTRACT_HEADER
from schemas.quality import QUALITY_CONTRACT, VERSION_CONTRACT, QualityWindow, VersionSummary

PARTITIONS = 3
SETTINGS = Settings(
    topics=TopicSettings(partitions=PARTITIONS),
    metrics=MetricsSettings(window_seconds=10, lateness_seconds=2, series_labels=["model"]),
    quality=QualitySettings(window_seconds=60, horizon_seconds=3600,
                            wait_for_inference_seconds=120, min_calibration_labels=10),
)
T = SETTINGS.topics
WALL = 1_700_000_000.0
JSON = {"content-type": b"application/json"}


class Pipeline:
    """Shared topics; one runner per stage, each with its own changelog."""

    def __init__(self) -> None:
        self.topics = MemoryTopics(PARTITIONS)
        self.committed: dict = {}
        self.changelogs = [MemoryChangelog() for _ in range(3)]
        makers = [lambda: JoinIntake(SETTINGS), lambda: JoinStage(SETTINGS),
                  lambda: QualityStage(SETTINGS)]
        self.runners = [MemoryRunner(make, self.topics, log, self.committed, T.dlq)
                        for make, log in zip(makers, self.changelogs, strict=True)]

    async def start(self) -> None:
        sources = [[(t, p) for t in (T.events, T.feedback) for p in range(PARTITIONS)],
                   [(T.joins, p) for p in range(PARTITIONS)],
                   [(T.outcomes, p) for p in range(PARTITIONS)]]
        for runner, tps in zip(self.runners, sources, strict=True):
            await runner.assign(tps)

    async def run(self, wall: float, crash: tuple[int, str] | None = None) -> None:
        for i, runner in enumerate(self.runners):
            if crash is not None and crash[0] == i:
                runner.crash_at = crash[1]
                try:
                    await runner.drain(wall)
                    await runner.tick(wall)
                except Crash:
                    await runner.restart()
            await runner.drain(wall)
            await runner.tick(wall)
            await runner.drain(wall)


def produce(topics: MemoryTopics, seed: int) -> None:
    """60 inferences over two minutes; labels for most (some first, some twice), feedback
    for inferences that never came, and bytes that are not feedback."""
    rng = random.Random(seed)
    events = []
    for i in range(60):
        prediction = rng.choice(["cat", "dog"])
        events.append({"event_id": f"ev-{i}", "request_id": f"req-{i}",
                       "timestamp": WALL - 300 + 2 * i, "model": "m", "latency_ms": 100.0,
                       "prediction": prediction, "confidence": 0.6 + 0.3 * rng.random()})
    feedback = []
    for i, event in enumerate(events):
        right = rng.random() < 0.7
        truth = event["prediction"] if right else ("dog" if event["prediction"] == "cat"
                                                   else "cat")
        ref = {"event_id": event["event_id"]} if i % 3 else {"request_id": f"req-{i}"}
        feedback.append({"feedback_id": f"fb-{i}", **ref, "timestamp": WALL - 100 + i,
                         "kind": "label", "label": truth})
        if i % 5 == 0:
            feedback.append({"feedback_id": f"sat-{i}", "event_id": event["event_id"],
                             "timestamp": WALL - 90, "kind": "satisfaction",
                             "satisfaction": 0.0 if i % 10 else 1.0})
    feedback += [feedback[4], feedback[9]]  # re-sent
    feedback.append({"feedback_id": "lost", "event_id": "ev-nope", "timestamp": WALL - 50,
                     "kind": "label", "label": "cat"})
    early, late = feedback[:10], feedback[10:]  # ten labels come before any inference
    for chunk in (early, events[:30], late, events[30:]):
        for start in range(0, len(chunk), 7):
            topics.append(T.feedback if "kind" in chunk[0] else T.events,
                          msgspec.json.encode(chunk[start:start + 7]),
                          key=str(start).encode(), headers=list(JSON.items()))
    topics.append(T.feedback, b'{"feedback_id": 3}', key=b"bad", headers=list(JSON.items()))


def newest(topics: MemoryTopics) -> dict[tuple[str, float], QualityWindow]:
    out: dict[tuple[str, float], QualityWindow] = {}
    for record in topics.records(T.metrics):
        if dict(record.headers)[CONTRACT_HEADER] != QUALITY_CONTRACT:
            continue  # version sums share the topic
        w = msgspec.json.decode(record.value, type=QualityWindow)
        key = (w.basis, w.window_start)
        if key not in out or w.version > out[key].version:
            out[key] = w
    return out


def fates(topics: MemoryTopics) -> dict[str, str]:
    rank = {"joined": 3, "repeat": 2, "unmatched": 1, "duplicate": 0}
    best: dict[str, str] = {}
    for record in topics.records(T.outcomes):
        for fate in msgspec.msgpack.decode(record.value, type=OutcomeBatch).fates:
            fid = fate.feedback.feedback_id
            if fid not in best or rank[fate.status] > rank[best[fid]]:
                best[fid] = fate.status
    return best


async def scenario(crash: tuple[int, str] | None = None) -> Pipeline:
    world = Pipeline()
    produce(world.topics, seed=7)
    await world.start()
    await world.run(WALL, crash)
    await world.run(WALL + 200)  # the wait for unknown inferences is over
    await world.run(WALL + 400)  # every window published
    return world


def version_sums(topics: MemoryTopics) -> dict[str, float]:
    """The version comparison sums published, added up over periods."""
    total: dict[str, float] = {}
    for record in topics.records(T.metrics):
        if dict(record.headers)[CONTRACT_HEADER] == VERSION_CONTRACT:
            summary = msgspec.json.decode(record.value, type=VersionSummary)
            for name in SUMS:
                total[name] = total.get(name, 0) + getattr(summary, name)
    return total


def summary(world: Pipeline) -> dict:
    windows = {key: (w.inferences, w.labelled, w.accuracy, w.satisfaction_count, w.feedback)
               for key, w in newest(world.topics).items()}
    return {"windows": windows, "versions": version_sums(world.topics)}


def _fates_counted(status: str) -> float:
    return REGISTRY.get_sample_value("inferwatch_feedback_total", {"status": status}) or 0.0


def test_every_feedback_is_counted_once_and_accounted_for() -> None:
    unmatched_before = _fates_counted("unmatched")
    world = asyncio.run(scenario())
    assert _fates_counted("unmatched") == unmatched_before + 1  # /metrics says so too
    windows = newest(world.topics)
    inference = [w for (basis, _), w in windows.items() if basis == "inference_time"]
    assert sum(w.inferences for w in inference) == 60
    assert sum(w.labelled for w in inference) == 60  # 62 labels sent, 2 re-sent
    assert sum(w.satisfaction_count for w in inference) == 12
    by_feedback = [w for (basis, _), w in windows.items() if basis == "feedback_time"]
    assert sum(w.labelled for w in by_feedback) == 60
    assert all(w.label_coverage == 1.0 for w in inference)
    sums = version_sums(world.topics)
    assert (sums["inferences"], sums["latency_n"], sums["labelled"]) == (60, 60, 60)
    assert sums["correct"] == sum(round(w.accuracy * w.labelled) for w in inference)
    states = fates(world.topics)
    assert states["lost"] == "unmatched"
    assert sum(s == "joined" for s in states.values()) == 72
    dead = world.topics.records(T.dlq)
    assert len(dead) == 1 and dict(dead[0].headers)["inferwatch-error-reason"] == b"schema"


def test_accuracy_equals_the_labels_that_were_sent() -> None:
    world = asyncio.run(scenario())
    windows = newest(world.topics)
    right = sum(round(w.accuracy * w.labelled) for (b, _), w in windows.items()
                if b == "inference_time")
    # recompute from the produced records
    events = {e["event_id"]: e for r in world.topics.records(T.events)
              for e in msgspec.json.decode(r.value)}
    by_request = {e["request_id"]: e for e in events.values()}
    seen, expected = set(), 0
    for r in world.topics.records(T.feedback):
        try:
            items = msgspec.json.decode(r.value)
        except msgspec.DecodeError:
            continue
        for f in items if isinstance(items, list) else []:
            if f.get("kind") != "label" or f["feedback_id"] in seen:
                continue
            event = events.get(f.get("event_id")) or by_request.get(f.get("request_id"))
            if event is None:
                continue
            seen.add(f["feedback_id"])
            expected += event["prediction"] == f["label"]
    assert right == expected


@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize("phase", ["dead_letters", "changes", "outputs", "commit"])
def test_a_crash_anywhere_gives_the_same_windows(stage: int, phase: str) -> None:
    assert summary(asyncio.run(scenario((stage, phase)))) == summary(asyncio.run(scenario()))
