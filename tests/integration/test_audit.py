"""The audit trail end to end: real broker, a real worker (process + sink, with alert rules),
the real CLI in subprocesses, and the endpoint's own ClickHouse HTTP interface.

A silence added and expired (and one expired that does not exist) through
``inferwatch silence``, a statement run through the endpoint while a runaway one is
stopped by ``query.max_execution_seconds``, one sent with a wrong password, the rules the
worker loaded: each must be a row of ``audit`` with the right actor, action, outcome and
source, and the endpoint's lines in the worker's log.
"""

from __future__ import annotations

import getpass
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline.sinks.clickhouse.owner import StoreLock
from pipeline.sinks.clickhouse.query import QueryError, run_query
from tests.integration.harness import ROOT, Pipeline

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: AuditedLatency
    condition: latency_p99_ms > 5000
    severity: warning
"""
MARKER = "SELECT 41 + 1 AS audited_answer"
RUNAWAY = "SELECT count() FROM numbers(1e12)"


@pytest.fixture
def pipe(kafka_bootstrap: str, tmp_path: Path):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    pipeline = Pipeline(kafka_bootstrap, tmp_path, INFERWATCH_ALERTS__RULES=str(rules),
                        INFERWATCH_QUERY__MAX_EXECUTION_SECONDS="2")
    if not pipeline.settings.embedded:
        pipeline.close()
        pytest.skip("INFERWATCH_CLICKHOUSE names a server: no embedded endpoint to audit")
    pipeline.rules = rules  # type: ignore[attr-defined]
    yield pipeline
    pipeline.close()


def _cli(pipe: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=pipe.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _audit_rows(pipe: Pipeline, want: Callable[[list[dict[str, Any]]], bool],
                timeout: float = 30.0) -> list[dict[str, Any]]:
    """The audit rows that are not this test's own polling, once ``want(rows)`` holds (or
    as they are when ``timeout`` passed)."""
    sql = ("SELECT action, actor, outcome, source, target, detail FROM audit FINAL "
           "WHERE NOT (action = 'query.run' AND detail['statement'] LIKE '%FROM audit FINAL%') "
           "ORDER BY at")
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            result = run_query(pipe.settings, sql)
            rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
        except QueryError:
            rows = []
        if want(rows):
            return rows
        time.sleep(0.5)
    return rows


def test_people_s_changes_and_endpoint_queries_are_in_the_audit_table(pipe: Pipeline) -> None:
    worker = pipe.start_worker()
    pipe.wait_sink_ready(worker)

    added = _cli(pipe, "silence", "add", "--match", "model=gpt-chat", "--for", "1h",
                 "--comment", "deploy", "--by", "on-call")
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    expired = _cli(pipe, "silence", "expire", silence_id)
    assert expired.returncode == 0, expired.stderr
    unknown = _cli(pipe, "silence", "expire", "no-such-silence")
    assert unknown.returncode == 1 and "no silence" in unknown.stderr

    owner = StoreLock(pipe.settings.home_path).owner()
    assert owner is not None
    def connect() -> Any:
        return clickhouse_connect.get_client(host=owner.host, port=owner.port,
                                             username=owner.user, password=owner.password,
                                             send_receive_timeout=60)

    stopped: dict[str, Any] = {}

    def runaway() -> None:
        started = time.monotonic()
        try:
            connect().command(RUNAWAY)
        except DatabaseError as exc:
            stopped["error"] = str(exc)
        stopped["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=runaway)
    thread.start()
    time.sleep(1.0)  # handshake done, the runaway is running
    client = connect()
    try:
        assert client.command(MARKER) == 42  # answered while the runaway runs
        assert thread.is_alive()
    finally:
        client.close()
    thread.join(30)
    assert "TIMEOUT_EXCEEDED" in stopped["error"]
    assert "max_execution_time = 2 s ([query] max_execution_seconds)" in stopped["error"]
    assert stopped["seconds"] < 2 + 5  # the limit, a handshake and a margin
    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
        clickhouse_connect.get_client(host=owner.host, port=owner.port, username="intruder",
                                      password="guess")

    def complete(rows: list[dict[str, Any]]) -> bool:  # the last of each kind is there
        return (any(r["actor"] == "intruder" for r in rows)
                and any(RUNAWAY in r["detail"].get("statement", "") for r in rows)
                and any(r["action"] == "silence.expire" and r["outcome"] == "refused"
                        for r in rows))

    rows = _audit_rows(pipe, complete)
    me = getpass.getuser()
    people = [(r["action"], r["actor"], r["outcome"], r["source"], r["target"])
              for r in rows if r["action"] != "query.run"]
    assert ("silence.add", me, "ok", "cli", silence_id) in people, rows
    assert ("silence.expire", me, "ok", "cli", silence_id) in people
    assert ("silence.expire", me, "refused", "cli", "no-such-silence") in people
    add = next(r for r in rows if r["action"] == "silence.add")
    assert add["detail"]["matchers"] == "model=gpt-chat"
    assert add["detail"]["created_by"] == "on-call"  # what was typed; the actor is the OS user

    rules = [r for r in rows if r["action"] == "rules.load"]
    assert [(r["source"], r["outcome"], r["target"]) for r in rules] == \
        [("worker", "ok", str(pipe.rules))]  # type: ignore[attr-defined]
    digest = hashlib.sha256(pipe.rules.read_bytes()).hexdigest()  # type: ignore[attr-defined]
    assert rules[0]["detail"]["files"] == f"{digest}  {pipe.rules}"  # type: ignore[attr-defined]
    assert rules[0]["detail"]["changed"] == "first load"

    queries = [r for r in rows if r["action"] == "query.run"]
    ran = [r for r in queries if r["detail"].get("statement") == MARKER]
    assert [(r["actor"], r["outcome"], r["source"]) for r in ran] == \
        [(owner.user, "ok", "query")], queries
    assert ran[0]["detail"]["result_rows"] == "1"
    assert float(ran[0]["detail"]["duration_ms"]) >= 0
    timed_out = [r for r in queries if RUNAWAY in r["detail"].get("statement", "")]
    assert [(r["outcome"], r["detail"]["error_code"]) for r in timed_out] == \
        [("refused", "159")], queries
    intruder = [r for r in queries if r["actor"] == "intruder"]
    assert intruder and {r["outcome"] for r in intruder} == {"refused"}
    assert all("statement" not in r["detail"] for r in intruder)

    log = Path(worker.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
    # statements that ran are in the table only (DEBUG); refused ones are logged too
    assert f"query.run inferwatch by {owner.user} via query: ok" not in log
    assert f"query.run inferwatch by {owner.user} via query: refused" in log
    assert "rules.load" in log and owner.password not in log
    assert "audit event not published" not in log
    assert worker.poll() is None, pipe.log(worker)
