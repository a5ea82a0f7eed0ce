"""Any producer may compress its record batches: kcat (librdkafka, an outside client)
sends gzip, snappy, lz4 and zstd batches, and every event is stored and counted in the
window metrics. Without the codecs (cramjam, aiokafka's) the consumers could not read
such a batch at all and the partition would stop for good."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CODEC = 40


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    pipeline = Pipeline(kafka_bootstrap, tmp_path,
                        INFERWATCH_METRICS__IDLE_TIMEOUT_SECONDS="3")  # windows close sooner
    yield pipeline
    pipeline.close()


@pytest.mark.skipif(shutil.which("kcat") is None,
                    reason="kcat (Debian package kcat) is not installed: make test installs "
                           "it when run as root")
def test_batches_compressed_by_any_codec_are_read(pipe: Pipeline, tmp_path: Path) -> None:
    now = time.time()
    for codec in CODECS:
        lines = "\n".join(
            json.dumps({"event_id": f"{codec}-{i}", "timestamp": now - 20 + i * 0.1,
                        "model": f"m-{codec}", "latency_ms": 10.0 + i})
            for i in range(PER_CODEC))
        out = subprocess.run(
            ["kcat", "-P", "-b", pipe.settings.kafka.bootstrap_servers,
             "-t", pipe.settings.topics.events, "-z", codec,
             "-X", "linger.ms=50", "-X", "batch.num.messages=1000"],
            input=lines.encode(), capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()
    worker = pipe.start_worker()
    pipe.wait_sink_ready(worker)
    total = PER_CODEC * len(CODECS)
    assert pipe.wait_count(total, timeout=90) == total, pipe.log(worker)
    per_model = pipe.query("SELECT model, count() AS n FROM events FINAL GROUP BY model "
                           "ORDER BY model")
    assert per_model == [{"model": f"m-{c}", "n": PER_CODEC} for c in sorted(CODECS)]
    # stage 1 read them too: the windows count every event once they close
    sql = "SELECT toInt64(sum(requests)) FROM window_metrics FINAL"
    assert pipe.wait_count(total, timeout=90, sql=sql) == total, pipe.log(worker)
