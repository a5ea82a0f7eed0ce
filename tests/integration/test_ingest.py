"""Real Kafka → `inferwatch worker` → ClickHouse: exactly-once storage, DLQ, crash, SQL."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from pipeline.dev.publish import publish
from pipeline.dev.simulate import synthetic
from pipeline.sinks.clickhouse.query import QueryError
from schemas import InferenceEvent
from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

N = 100_000
COUNT_SQL = "SELECT count() FROM events FINAL"


def simulate(pipe: Pipeline, n: int, seed: int) -> int:
    """Publish about ``n`` simulated events (batched JSON messages); return the exact count."""
    records = (r for r in synthetic(seed, rate=n / 20, duration=20.0, start=time.time() - 30)
               if isinstance(r[1], InferenceEvent))
    stats = asyncio.run(publish(pipe.settings, records, speed=0, batch_size=500))
    return stats.events


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    pipeline = Pipeline(kafka_bootstrap, tmp_path)
    yield pipeline
    pipeline.close()


def test_100k_simulated_events_stored_exactly_once(pipe: Pipeline) -> None:
    produced = simulate(pipe, N, seed=1)
    assert produced > 0.95 * N
    worker = pipe.start_worker()
    pipe.wait_sink_ready(worker)
    assert pipe.wait_count(produced) == produced, pipe.log(worker)
    time.sleep(1.0)  # anything extra would show up now
    assert pipe.owner_scalar(COUNT_SQL) == produced
    assert pipe.owner_scalar("SELECT uniqExact(event_id) FROM events") == produced


def test_sigkill_mid_run_then_restart_stores_each_event_once(pipe: Pipeline) -> None:
    produced = simulate(pipe, N, seed=2)
    small_batches = {"INFERWATCH_WORKER__SINK_BATCH_SIZE": "4",  # ~2,000 events per insert
                     # the killed member's partitions wait for its session to expire
                     "INFERWATCH_WORKER__SESSION_TIMEOUT_SECONDS": "8"}
    worker = pipe.start_worker(**small_batches)
    pipe.wait_sink_ready(worker)
    at_kill = pipe.wait_count(1, timeout=60)
    pipe.kill(worker)
    assert 0 < at_kill < produced, "the kill did not land mid-run; the test would prove nothing"

    restarted = pipe.start_worker(**small_batches)
    pipe.wait_sink_ready(restarted, timeout=90)
    assert pipe.wait_count(produced, timeout=180) == produced, pipe.log(restarted)
    time.sleep(1.0)
    assert pipe.owner_scalar(COUNT_SQL) == produced
    assert pipe.owner_scalar("SELECT uniqExact(event_id) FROM events") == produced


def _bad_messages(count: int) -> list[tuple[bytes, list, str]]:
    """``count`` malformed messages of many kinds: (value, headers, expected reason)."""
    now = time.time()
    base = {"timestamp": now, "model": "m", "latency_ms": 5.0}
    json_h = [("content-type", b"application/json")]
    msgpack_h = [("content-type", b"application/msgpack")]
    kinds = [
        (lambda i: b"{not json " + str(i).encode(), json_h, "malformed"),
        (lambda i: json.dumps({**base, "event_id": f"bad-{i}", "latency_ms": "slow"}).encode(),
         json_h, "schema"),
        (lambda i: json.dumps({"timestamp": now, "model": "m", "latency_ms": 1}).encode(),
         json_h, "schema"),  # missing event_id
        (lambda i: json.dumps({**base, "event_id": f"bad-{i}", "latency_ms": -3}).encode(),
         json_h, "schema"),
        (lambda i: json.dumps({**base, "event_id": f"bad-{i}", "input_tokens": -1}).encode(),
         json_h, "schema"),
        (lambda i: msgspec.msgpack.encode({**base, "event_id": f"bad-{i}",
                                           "latency_ms": math.nan}), msgpack_h, "schema"),
        (lambda i: json.dumps({**base, "event_id": f"bad-{i}", "timestamp": now + 10**6}).encode(),
         json_h, "future_timestamp"),
        (lambda i: json.dumps({**base, "event_id": f"bad-{i}",
                               "features": {f"f{k}": 1.0 for k in range(100)}}).encode(),
         json_h, "schema"),
        (lambda i: json.dumps({**base, "event_id": f"bad-{i}", "model": "x" * 500}).encode(),
         json_h, "schema"),
        (lambda i: json.dumps({**base, "event_id": f"bad-{i}"}).encode(),
         [("content-type", b"application/xml")], "unsupported_content_type"),
        (lambda i: b"[" + b" " * 300_000 + b"]", json_h, "oversize"),
        (lambda i: gzip.compress(b"[" + b" " * (20 << 20) + b"]"),
         [*json_h, ("content-encoding", b"gzip")], "decompressed_oversize"),
        (lambda i: b"", json_h, "empty"),
        # a batch with one bad element: only that element goes to the DLQ
        (lambda i: json.dumps([{**base, "event_id": f"ok-in-batch-{i}"},
                               {**base, "event_id": f"bad-{i}", "status": "weird"}]).encode(),
         json_h, "schema"),
    ]
    return [(kinds[i % len(kinds)][0](i), kinds[i % len(kinds)][1], kinds[i % len(kinds)][2])
            for i in range(count)]


def test_1000_malformed_messages_all_in_dlq_with_reason_none_stored(pipe: Pipeline) -> None:
    bad = _bad_messages(1000)
    good_ids: list[str] = []
    messages = []
    now = time.time()
    for i, (value, headers, _) in enumerate(bad):
        event = InferenceEvent(event_id=f"good-{i}", timestamp=now, model="m", latency_ms=1.0)
        good_ids.append(event.event_id)
        messages.append((f"good-{i}".encode(), msgspec.json.encode(event), []))
        messages.append((f"bad-{i}".encode(), value, headers))
    in_batches = sum(1 for v, _, _ in bad if v.startswith(b'[{"'))
    pipe.produce(messages)

    worker = pipe.start_worker(INFERWATCH_LIMITS__MAX_MESSAGE_BYTES="100000")
    pipe.wait_sink_ready(worker)
    expected_good = len(good_ids) + in_batches
    assert pipe.wait_count(expected_good) == expected_good, pipe.log(worker)

    letters = pipe.consume_all(pipe.settings.topics.dlq, expected=len(bad))
    assert len(letters) == len(bad)
    reasons = Counter(dict(r.headers)["inferwatch-error-reason"].decode() for r in letters)
    assert reasons == Counter(reason for _, _, reason in bad)
    for record in letters:
        headers = dict(record.headers)
        assert headers["inferwatch-error-detail"]
        assert headers["inferwatch-source-topic"] == pipe.settings.topics.events.encode()
        i = int(record.key.removeprefix(b"bad-"))  # the original key is kept
        original = bad[i][0]
        if "inferwatch-batch-index" in headers:  # the one bad element of a batch
            assert json.loads(record.value)["event_id"] == f"bad-{i}"
        else:  # the original bytes, untouched
            assert (record.value or b"") == original

    assert pipe.owner_scalar("SELECT countIf(startsWith(event_id, 'bad')) FROM events") == 0
    assert pipe.owner_scalar(COUNT_SQL) == expected_good


def test_query_answers_while_worker_runs_and_refuses_writes(pipe: Pipeline) -> None:
    now = time.time()
    events = [InferenceEvent(event_id=f"q{i}", timestamp=now, model=f"m{i % 3}", latency_ms=i)
              for i in range(300)]
    pipe.produce([(None, msgspec.json.encode(events), [])])
    worker = pipe.start_worker()
    pipe.wait_sink_ready(worker)
    assert pipe.wait_count(300) == 300
    assert worker.poll() is None  # the worker owns the store and is still running
    rows = pipe.query("SELECT model, count() AS n FROM events GROUP BY model ORDER BY model")
    assert rows == [{"model": "m0", "n": 100}, {"model": "m1", "n": 100}, {"model": "m2", "n": 100}]
    with pytest.raises(QueryError, match="read-only"):
        pipe.query("INSERT INTO events (event_id, model) VALUES ('x', 'y')")
    with pytest.raises(QueryError, match="read-only"):
        pipe.query("DROP TABLE events")
    assert pipe.owner_scalar(COUNT_SQL) == 300
