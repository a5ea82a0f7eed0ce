"""``log.format = json``: every line a worker writes, its own and its libraries' (aiokafka,
the stages, the sink), is one JSON object a log store can index."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration


def test_a_json_worker_writes_only_json_lines(kafka_bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(kafka_bootstrap, tmp_path)
    try:
        now = time.time()
        good = [(None, json.dumps({"event_id": f"j-{i}", "timestamp": now - 5, "model": "m",
                                   "latency_ms": 3.0}).encode(), []) for i in range(20)]
        pipe.produce([*good, (None, b"{broken", [])])
        worker = pipe.start_worker(INFERWATCH_LOG__FORMAT="json")
        pipe.wait_sink_ready(worker)
        pipe.wait_processor_ready(worker)
        assert pipe.wait_count(20, timeout=60) == 20, pipe.log(worker)
        assert pipe.stop(worker) == 0
        lines = Path(worker.log_path).read_text().splitlines()  # type: ignore[attr-defined]
        records = [json.loads(line) for line in lines]  # any non-JSON line fails here
        assert len(records) >= 3
        assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
        messages = " | ".join(r["message"] for r in records)
        assert "processing ready" in messages and "sink consuming" in messages
    finally:
        pipe.close()
