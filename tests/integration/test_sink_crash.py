"""A batch replayed after a crash between the ClickHouse insert and the offset commit.

What we rely on: the events table is a ReplacingMergeTree whose sorting key ends in
event_id, so a replayed row collapses with its first copy (at merge time, and at read
time with FINAL). We do not rely on insert-block deduplication
(non_replicated_deduplication_window): a replayed Kafka batch need not form the
same insert block as the first attempt.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from schemas import InferenceEvent
from tests.integration.harness import ROOT, Pipeline

pytestmark = pytest.mark.integration


def test_replayed_batch_is_not_stored_twice(kafka_bootstrap: str, tmp_path: Path) -> None:
    # the crashed sink's partitions wait for its session to expire before the restart
    pipe = Pipeline(kafka_bootstrap, tmp_path, INFERWATCH_WORKER__SESSION_TIMEOUT_SECONDS="8")
    try:
        n = 5_000
        events = [InferenceEvent(event_id=f"c{i}", timestamp=time.time() - 60 + i / 100,
                                 model="m", latency_ms=float(i % 97)) for i in range(n)]
        pipe.produce((None, msgspec.json.encode(events[i:i + 500]),
                      [("content-type", b"application/json")]) for i in range(0, n, 500))

        crash = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("crash_sink.py"))],
            env=pipe.env, capture_output=True, text=True, cwd=ROOT, timeout=120,
        )
        assert crash.returncode == 137, crash.stdout + crash.stderr
        first = int(re.search(r"inserted (\d+) events", crash.stdout).group(1))
        assert first > 0

        sink = pipe.start_worker(roles="sink")
        pipe.wait_sink_ready(sink)
        assert pipe.wait_count(n) == n
        # The restarted sink re-read from the last commit (none): it inserted everything again.
        assert pipe.owner_scalar("SELECT count() FROM events FINAL") == n
        assert pipe.owner_scalar("SELECT uniqExact(event_id) FROM events") == n
        pipe.stop(sink)
        totals = re.findall(r"totals (\d+)/", pipe.log(sink))
        assert int(totals[-1]) == n, "the replay did not happen; the test proved nothing"
        assert first + int(totals[-1]) > n  # rows written twice, stored once
    finally:
        pipe.close()
