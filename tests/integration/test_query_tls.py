"""The store's query endpoint over HTTPS on a real worker: a certificate made here, the
worker serving it, ``inferwatch query`` (pinned to it) and curl (trusting it) reading,
plain HTTP and a client without the TLS settings refused, one with only the
certificate served."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sinks.clickhouse.owner import StoreLock
from tests.integration.harness import ROOT, Pipeline
from tests.unit.sinks.test_query_guard import _certificate

pytestmark = pytest.mark.integration
CURL = shutil.which("curl") or "/usr/bin/curl"


def test_a_worker_with_both_pem_files_answers_https_only(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "query")
    pipe = Pipeline(kafka_bootstrap, tmp_path, INFERWATCH_QUERY__TLS_CERTFILE=str(cert),
                    INFERWATCH_QUERY__TLS_KEYFILE=str(key))
    if not pipe.settings.embedded:
        pipe.close()
        pytest.skip("INFERWATCH_CLICKHOUSE names a server: no embedded endpoint")
    try:
        worker = pipe.start_worker(roles="sink")
        pipe.wait_sink_ready(worker)
        log = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
        found = re.search(r"answers ClickHouse HTTP on https://127\.0\.0\.1:(\d+)", log)
        assert found, log
        owner = StoreLock(pipe.settings.home_path).owner()
        assert owner is not None and owner.port == int(found.group(1))
        assert owner.scheme == "https"  # clients learn it from the owner file

        assert pipe.scalar("SELECT 6 * 7 AS answer") == 42  # `inferwatch query`, pinned

        base = f"https://127.0.0.1:{owner.port}/"
        ok = subprocess.run([CURL, "-sS", "--cacert", str(cert), "-u",
                             f"{owner.user}:{owner.password}", f"{base}?query=SELECT%201"],
                            capture_output=True, text=True, timeout=30)
        assert ok.stdout == "1\n", ok.stderr
        untrusted = subprocess.run([CURL, "-sS", f"{base}ping"], capture_output=True,
                                   text=True, timeout=30)
        assert untrusted.returncode != 0  # the system CAs do not know this certificate
        plain = subprocess.run([CURL, "-sS", f"http://127.0.0.1:{owner.port}/ping"],
                               capture_output=True, text=True, timeout=30)
        assert plain.stdout != "Ok.\n"

        def query(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "pipeline", "query", "-f", "jsonl",
                                   "SELECT 1 AS one"], env=env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=60)
        without = query({k: v for k, v in pipe.env.items() if "__TLS_" not in k})
        assert without.returncode != 0
        assert "the worker owning the store" in without.stderr
        assert "answers HTTPS: set [query] tls_certfile here" in without.stderr
        # a client pins the certificate: it needs that file, not the worker's key
        certificate_only = query({k: v for k, v in pipe.env.items() if "__TLS_KEYFILE" not in k})
        assert certificate_only.returncode == 0, certificate_only.stderr
        assert certificate_only.stdout.strip() == '{"one": 1}'
        assert worker.poll() is None, pipe.log(worker)
    finally:
        pipe.close()
