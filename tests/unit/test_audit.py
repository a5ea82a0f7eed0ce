"""The audit trail's own parts: events within their bounds, one log line each, nothing lost
silently when Kafka does not take them, and the rules' fingerprints across restarts.

A broker that is not there is a closed local port (a real refused connection); the
Kafka path itself is tested in tests/integration/test_audit.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pipeline.alerting.rules import load_rules
from pipeline.audit import (
    MAX_STATEMENT_CHARS,
    Auditor,
    describe,
    new_event,
    record,
    record_sync,
    rules_loaded,
    statement_detail,
)
from pipeline.config import AlertSettings, AuditSettings, KafkaSettings, Settings
from pipeline.logs import install
from schemas.audit import MAX_DETAIL_ENTRIES, MAX_DETAIL_VALUE, AuditEvent

NOWHERE = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # nothing listens on port 1


def _unpublished(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The events the WARNING lines kept, decoded from their JSON."""
    return [json.loads(r.getMessage().split("kept here: ", 1)[1]) for r in caplog.records
            if r.name == "inferwatch.audit" and r.levelno == logging.WARNING]


def test_an_event_is_cut_to_its_bounds_and_decodes_as_the_sink_decodes_it() -> None:
    event = new_event("query.run", "t" * 5000, actor="a" * 1000, source="query",
                      detail={f"k{i}": "v" * 20_000 for i in range(100)} | {"n": 3})
    assert len(event.actor) == 256 and len(event.target) == 1024
    assert len(event.detail) == MAX_DETAIL_ENTRIES
    assert all(len(v) <= MAX_DETAIL_VALUE for v in event.detail.values())
    raw = msgspec.json.encode(event)
    assert msgspec.json.decode(raw, type=AuditEvent) == event  # validated on the way in
    assert new_event("baseline.set", actor="x", source="cli",
                     detail={"version": 3}).detail == {"version": "3"}


@pytest.mark.parametrize("action", ["", "drop", "Silence.add", "silence add", "a." * 40])
def test_an_action_that_is_not_a_dotted_name_is_a_bug(action: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        new_event(action, actor="x", source="cli")


def test_a_statement_is_kept_up_to_its_bound_with_length_and_hash() -> None:
    sql = "SELECT " + "1 + " * 5000 + "1"
    detail = statement_detail(sql)
    assert len(detail["statement"]) == MAX_STATEMENT_CHARS
    assert detail["statement"].startswith("SELECT 1 + 1")
    assert detail["statement"].endswith(f"…[{len(sql)} ch]")
    assert detail["statement_chars"] == str(len(sql))
    assert detail["statement_sha256"] == hashlib.sha256(sql.encode()).hexdigest()


def test_a_failed_publish_is_logged_at_warning_with_the_whole_event(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(kafka=NOWHERE)
    event = new_event("silence.add", "s-1", actor="alice", source="cli",
                      detail={"matchers": "model=m"})
    with caplog.at_level(logging.INFO, logger="inferwatch.audit"):
        assert asyncio.run(record(settings, event, timeout=10)) is False
    info = [r.getMessage() for r in caplog.records
            if r.name == "inferwatch.audit" and r.levelno == logging.INFO]
    assert info == [describe(event)]
    (kept,) = _unpublished(caplog)
    assert msgspec.convert(kept, AuditEvent) == event
    assert "KafkaConnectionError" in caplog.records[-1].getMessage()


def test_statements_that_ran_are_logged_at_debug_and_everything_else_at_info(
        caplog: pytest.LogCaptureFixture) -> None:
    """A Grafana board's polling must not bury the changes people make in the log."""
    sent: list[AuditEvent] = []
    auditor = Auditor(Settings(kafka=NOWHERE), "query", send=sent.extend)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="inferwatch.audit"):
        auditor.record("query.run", "inferwatch", actor="grafana", detail={"statement": "x"})
        auditor.record("query.run", "inferwatch", actor="grafana", outcome="refused")
        auditor.record("query.run", "inferwatch", actor="grafana", outcome="failed")
        auditor.record("silence.add", "s-1", actor="alice")
    levels = [(r.levelname, r.getMessage().split(":")[1].strip().split()[0])
              for r in caplog.records if r.name == "inferwatch.audit"
              and "not published" not in r.getMessage()]
    assert levels == [("DEBUG", "ok"), ("INFO", "refused"), ("INFO", "failed"),
                      ("INFO", "ok")]


def test_nothing_is_recorded_when_the_trail_is_off(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(kafka=NOWHERE, audit=AuditSettings(enabled=False))
    with caplog.at_level(logging.DEBUG, logger="inferwatch.audit"):
        assert record_sync(settings, "silence.add", "s-1") is False
        auditor = Auditor(settings, "ui", send=lambda events: None)  # type: ignore[arg-type]
        assert auditor.record("silence.add", actor="bob") is None
    assert [r for r in caplog.records if r.name == "inferwatch.audit"] == []


def test_the_auditor_publishes_in_the_background_and_keeps_what_it_could_not_send(
        caplog: pytest.LogCaptureFixture) -> None:
    sent: list[AuditEvent] = []
    fail = {"now": False}

    async def send(events: Any) -> None:
        if fail["now"]:
            raise ConnectionError("broker away")
        sent.extend(events)

    async def go() -> tuple[list[AuditEvent], list[AuditEvent | None]]:
        auditor = Auditor(Settings(), "query", send=send, max_pending=2)
        early = auditor.record("query.run", actor="a", detail={"n": 0})  # not started yet
        await auditor.start()
        ok = [auditor.record("query.run", actor="a", detail={"n": i}) for i in (1, 2)]
        await asyncio.sleep(0.1)
        fail["now"] = True
        lost = [auditor.record("query.run", actor="a", detail={"n": i}) for i in (3, 4, 5)]
        await auditor.close()
        return [e for e in ok if e is not None], [early, *lost]

    with caplog.at_level(logging.INFO, logger="inferwatch.audit"):
        ok, lost = asyncio.run(go())
    assert sent == ok
    kept = _unpublished(caplog)
    # n=0 before the start, n=5 past max_pending, n=3 and 4 when the send failed
    assert sorted(k["detail"]["n"] for k in kept) == ["0", "3", "4", "5"]
    assert {k["id"] for k in kept} == {e.id for e in lost if e is not None}


def test_lost_events_are_never_folded_by_the_repeat_limiter() -> None:
    """The worker's handlers fold repeats of one message template; each lost audit event
    is a message of its own, so every one is printed."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    install(handlers=[handler], period=30.0)
    logger = logging.getLogger("inferwatch.audit")
    logger.addHandler(handler)
    try:
        settings = Settings(kafka=NOWHERE)
        for i in range(3):
            asyncio.run(record(settings, new_event("silence.add", f"s-{i}", actor="a",
                                                   source="cli"), timeout=10))
    finally:
        logger.removeHandler(handler)
    lines = [line for line in out.getvalue().splitlines() if "kept here" in line]
    assert [json.loads(line.split("kept here: ")[1])["target"] for line in lines] == \
        ["s-0", "s-1", "s-2"]
    assert "repeats suppressed" not in out.getvalue()


def test_rules_are_fingerprinted_and_a_change_between_starts_is_flagged(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yml", tmp_path / "b.yml"
    rule = "  - name: R{}\n    condition: error_rate > 0.{}\n    severity: warning\n"
    first.write_text("rules:\n" + "".join(rule.format(i, i) for i in range(1, 4)))
    # CRLF lines: the digest is of the bytes read, as sha256sum prints it, not of the text
    second.write_bytes(("group_by: [model]\nrules:\n" + rule.format(4, 4)).replace(
        "\n", "\r\n").encode())
    settings = Settings(home=str(tmp_path / "home"),
                        alerts=AlertSettings(rules=str(tmp_path)))
    files = [str(first), str(second)]

    loaded = rules_loaded(settings, load_rules(files))
    assert (loaded.action, loaded.source, loaded.target) == ("rules.load", "worker",
                                                              str(tmp_path))
    sums = {name: hashlib.sha256(Path(name).read_bytes()).hexdigest() for name in files}
    assert loaded.detail["files"] == "\n".join(f"{sums[n]}  {n}" for n in files)
    assert (loaded.detail["rules"], loaded.detail["changed"]) == ("4", "first load")

    again = rules_loaded(settings, load_rules(files))
    assert (again.detail["changed"], again.detail["digest"]) == ("no",
                                                                  loaded.detail["digest"])
    first.write_text(first.read_text() + "# edited\n")
    edited = rules_loaded(settings, load_rules(files))
    assert edited.detail["changed"] == "yes"
    assert edited.detail["previous_digest"] == loaded.detail["digest"]
    assert edited.detail["digest"] != loaded.detail["digest"]
