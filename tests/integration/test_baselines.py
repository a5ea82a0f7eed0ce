"""Pinned baselines on real Kafka and the real ClickHouse engine, through the CLI.

Events go through the sink into ClickHouse; ``inferwatch baseline set`` builds a baseline from
them (through the worker that owns the embedded store), from a JSON-lines file and from a
Parquet file; the stored references must hold exactly the events of the range, and versions
of a series must count 1, 2, 3.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.dev.publish import publish
from pipeline.scoring.baseline_files import build_from_file
from pipeline.scoring.baseline_topic import follow_baselines, publish_baseline, read_baselines
from pipeline.scoring.baselines import Baseline
from pipeline.windows.drift_profile import DriftProfile, MonitorSpec
from pipeline.windows.profile import series_key
from schemas.event import InferenceEvent
from tests.integration.harness import ROOT, Pipeline

pytestmark = pytest.mark.integration

SERIES_A = {"model": "gpt-chat", "model_version": "2024-06", "operation": "chat"}
SERIES_B = {"model": "gpt-chat", "model_version": "2024-09", "operation": "chat"}
KEY_A, KEY_B = series_key(SERIES_A), series_key(SERIES_B)
SPEC = MonitorSpec(numeric_features=("x",), categorical_features=("lang",))
FEATURE_ARGS = ("--numeric-features", "x", "--categorical-features", "lang")


def _events(labels: dict[str, str], prefix: str, n: int, start: float,
            step: float) -> list[InferenceEvent]:
    """Varied events: some without prediction, ttft or tokens, so counts differ by name."""
    return [
        InferenceEvent(
            event_id=f"{prefix}-{i}", timestamp=round(start + i * step, 3),
            model=labels["model"], model_version=labels["model_version"],
            operation=labels["operation"], latency_ms=50.0 + (i * 37) % 900,
            time_to_first_token_ms=None if i % 4 == 0 else 10.0 + i % 50,
            input_tokens=100 + i, output_tokens=None if i % 7 == 0 else 20 + i % 300,
            cost_usd=0.0001 * (i % 13), confidence=(i % 10) / 10,
            prediction=None if i % 5 == 0 else ("yes" if i % 3 else "no"),
            features={"x": (i % 17) - 8.5, "lang": ("en", "de", "fr")[i % 3]},
        )
        for i in range(n)
    ]


def _profile(events: list[InferenceEvent]) -> DriftProfile:
    profile = DriftProfile()
    profile.add_events(events, SPEC)
    return profile


def _cli(pipe: Pipeline, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "pipeline", *args], env=pipe.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def _list_versions(pipe: Pipeline) -> dict[str, int]:
    lines = _cli(pipe, "baseline", "list").stdout.splitlines()
    return {line.split("  ")[0]: int(line.split("  ")[1].lstrip("v")) for line in lines}


def _write_parquet(path: Path, events: list[InferenceEvent]) -> None:
    import pyarrow as pa  # a dependency of chDB, hence always installed with it
    import pyarrow.parquet as pq

    rows = [msgspec.to_builtins(e) for e in events]
    features = pa.struct([("x", pa.float64()), ("lang", pa.string())])
    table = pa.table({
        "event_id": [r["event_id"] for r in rows],
        "timestamp": pa.array([round(e.timestamp * 1000) for e in events],
                              type=pa.timestamp("ms", tz="UTC")),
        **{name: [r.get(name) for r in rows] for name in (
            "model", "model_version", "operation", "latency_ms", "time_to_first_token_ms",
            "input_tokens", "output_tokens", "cost_usd", "confidence", "prediction")},
        "features": pa.array([r["features"] for r in rows], type=features),
    })
    pq.write_table(table, path, row_group_size=25)  # several row groups: order must hold


async def _topic_shape(pipe: Pipeline) -> tuple[int, str]:
    topic = pipe.settings.topics.baselines
    admin = AIOKafkaAdminClient(bootstrap_servers=pipe.settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        (topic_info,) = await admin.describe_topics([topic])
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs = {c[0]: c[1] for c in described[0].resources[0][4]}
        return len(topic_info["partitions"]), configs["cleanup.policy"]
    finally:
        await admin.close()


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    pipe = Pipeline(kafka_bootstrap, tmp_path,
                    INFERWATCH_TOPICS__BASELINES=f"iwtest.{uuid.uuid4().hex[:8]}.baselines")
    yield pipe
    pipe.close()


def test_baseline_set_from_clickhouse_json_and_parquet_versions_and_follow(
    pipe: Pipeline, tmp_path: Path,
) -> None:
    assert asyncio.run(_topic_shape(pipe)) == (1, "compact")

    worker = pipe.start_worker(roles="sink")
    pipe.wait_sink_ready(worker)
    t0 = float(int(time.time()) - 7200)
    in_range = _events(SERIES_A, "a", 300, t0, 0.3)  # t0 .. t0+89.7
    after = _events(SERIES_A, "late", 40, t0 + 100, 1.0)  # same series, after --to
    other = _events(SERIES_B, "b", 80, t0, 1.0)  # same range, another series
    edge = _events(SERIES_A, "edge", 1, t0 + 90, 1.0)  # exactly at --to: excluded
    everything = in_range + after + other + edge
    records = [(0.0, e) for e in everything]
    asyncio.run(publish(pipe.settings, records, speed=0, batch_size=100))
    assert pipe.wait_count(len(everything)) == len(everything)
    assert _list_versions(pipe) == {}

    # 1. From ClickHouse, through the worker that owns the embedded store.
    out = _cli(pipe, "baseline", "set", "--series", KEY_A, "--from", str(t0),
               "--to", str(t0 + 90), *FEATURE_ARGS)
    assert f"stored baseline v1 for {KEY_A}: 300 events from clickhouse:" in out.stdout
    stored = asyncio.run(read_baselines(pipe.settings))[KEY_A]
    reference = stored.to_reference()
    assert stored.version == reference.version == 1 and stored.events == 300
    assert reference.histograms == _profile(in_range).histograms  # exactly the range's events
    assert reference["latency_ms"].count == reference["feature.x"].count == 300
    assert reference["prediction"].count == sum(e.prediction is not None for e in in_range)
    assert (reference.built_from, reference.built_to) == (t0, t0 + 90)
    assert _list_versions(pipe) == {KEY_A: 1}

    # 2. From a JSON-lines file: the same events, the next version.
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in in_range))
    out = _cli(pipe, "baseline", "set", "--series", KEY_A, "--file", str(jsonl), *FEATURE_ARGS)
    assert f"stored baseline v2 for {KEY_A}: 300 events from file:{jsonl}" in out.stdout
    assert _list_versions(pipe) == {KEY_A: 2}
    v2 = asyncio.run(read_baselines(pipe.settings))[KEY_A]
    assert v2.to_reference().histograms == reference.histograms

    # 3. From a Parquet file, for another series; the time range filters the file.
    parquet = tmp_path / "b.parquet"
    _write_parquet(parquet, other)
    out = _cli(pipe, "baseline", "set", "--series", KEY_B, "--file", str(parquet),
               "--from", str(t0), "--to", str(t0 + 60), *FEATURE_ARGS)
    assert f"stored baseline v1 for {KEY_B}: 60 events from file:{parquet}" in out.stdout
    b1 = asyncio.run(read_baselines(pipe.settings))[KEY_B]
    assert b1.to_reference().histograms == _profile(other[:60]).histograms
    assert _list_versions(pipe) == {KEY_A: 2, KEY_B: 1}
    only_b = _cli(pipe, "baseline", "list", "--series", KEY_B).stdout
    assert only_b.startswith(f"{KEY_B}  v1  created ") and KEY_A not in only_b
    assert "60 events" in only_b and f"file:{parquet}" in only_b

    # 4. Clear errors: an empty range, a bad file; neither stores anything.
    empty = _cli(pipe, "baseline", "set", "--series", KEY_A, "--from", str(t0 + 1000),
                 "--to", str(t0 + 2000), ok=False)
    assert empty.returncode == 1
    assert f"no events for series {KEY_A} between " in empty.stderr
    bad = tmp_path / "bad.jsonl"
    lines = jsonl.read_bytes().splitlines()
    bad.write_bytes(b"\n".join([lines[0], lines[1].replace(b'"latency_ms":', b'"latency_ms":-')]))
    refused = _cli(pipe, "baseline", "set", "--series", KEY_A, "--file", str(bad), ok=False)
    assert refused.returncode == 1 and f"{bad}: line 2: Expected `float` >= 0.0" in refused.stderr
    assert _list_versions(pipe) == {KEY_A: 2, KEY_B: 1}

    # 5. A follower (what a worker runs) loads the latest and sees the next version arrive.
    async def follow() -> tuple[int, Baseline]:
        store: dict[str, Baseline] = {}
        updates: list[tuple[str, int]] = []
        loaded, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(follow_baselines(
            pipe.settings, store, stop=stop, loaded=loaded,
            on_update=lambda b, key: updates.append((key, b.version if b else 0))))
        await asyncio.wait_for(loaded.wait(), 60)
        assert {k: b.version for k, b in store.items()} == {KEY_A: 2, KEY_B: 1}
        assert sorted(updates) == [(KEY_A, 1), (KEY_A, 2), (KEY_B, 1)]
        stored = await publish_baseline(pipe.settings, build_from_file(jsonl, SPEC, KEY_A))
        deadline = time.monotonic() + 30
        while store[KEY_A].version < stored.version and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 10)
        return stored.version, store[KEY_A]

    version, followed = asyncio.run(follow())
    assert version == 3 and followed.version == 3
    assert followed.to_reference().histograms == reference.histograms
