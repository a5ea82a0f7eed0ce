"""The dashboard's actions in the audit trail: who (the HTTP user), what, how it ended.

The app runs on the real engine (the module's store); silences go to a list instead of
the topic (as in test_server.py) and the audit publisher to another list.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.audit import Auditor, silence_detail
from pipeline.sinks.clickhouse.query import run_readonly
from pipeline.ui.live import Hub
from pipeline.ui.server import Credentials, make_app
from schemas.audit import AuditEvent
from tests.unit.conftest import Store
from tests.unit.ui.test_server import RecordingBook

AUTH = {"Authorization": "Basic " + base64.b64encode(b"inferwatch:s3cret").decode()}


class BrokenBook(RecordingBook):
    """A silences backend whose topic is away."""

    async def add(self, *args: Any) -> Any:
        raise ConnectionError("broker away")


def run(store: Store, check: Any, book: Any) -> list[AuditEvent]:
    sent: list[AuditEvent] = []

    async def send(events: Any) -> None:
        sent.extend(events)

    async def go() -> None:
        audit = Auditor(store.settings, "ui", send=send)
        await audit.start()
        app = make_app(lambda sql: run_readonly(store.client, sql), hub=Hub(),
                       credentials=Credentials("inferwatch", "s3cret"), silences=book,
                       audit=audit)
        try:
            async with TestClient(TestServer(app)) as client:
                await check(client)
        finally:
            await audit.close()
    asyncio.run(go())
    return sent


def test_silences_and_queries_from_the_dashboard_are_audited(ui_store: Store,
                                                              caplog) -> None:
    book = RecordingBook()

    async def check(client: TestClient) -> None:
        made = await (await client.post("/api/silences", headers=AUTH, json={
            "matchers": ["model=m2"], "duration": "1h", "comment": "deploy",
            "created_by": "someone else"})).json()
        assert (await client.post(f"/api/silences/{made['id']}/expire",
                                  headers=AUTH)).status == 200
        assert (await client.post("/api/silences/nope/expire", headers=AUTH)).status == 400
        bad = await client.post("/api/silences", headers=AUTH, json={"matchers": []})
        assert bad.status == 400  # not a silence: reported, nothing tried, not recorded
        ok = await client.post("/api/query", headers=AUTH,
                               json={"sql": "SELECT number FROM numbers(3)"})
        assert ok.status == 200
        failed = await client.post("/api/query", headers=AUTH,
                                   json={"sql": "SELECT * FROM no_such_table"})
        assert failed.status == 502

    with caplog.at_level(logging.INFO, logger="inferwatch.audit"):
        events = run(ui_store, check, book)
    got = [(e.action, e.outcome) for e in events]
    assert got == [("silence.add", "ok"), ("silence.expire", "ok"),
                   ("silence.expire", "refused"), ("query.run", "ok"), ("query.run", "failed")]
    assert {(e.actor, e.source) for e in events} == {("inferwatch", "ui")}
    added, expired, unknown, query, failure = events
    assert added.target == expired.target == book.published[0].id
    assert added.detail["matchers"] == "model=m2" and added.detail["comment"] == "deploy"
    assert added.detail["created_by"] == "someone else"  # what was typed, beside who it was
    # the same detail as `inferwatch silence add/expire` records, plus where it came from
    assert added.detail == {**silence_detail(book.published[0], "1h"),
                            "remote": added.detail["remote"]}
    assert expired.detail == {**silence_detail(book.published[1]),
                              "remote": expired.detail["remote"]}
    assert unknown.target == "nope"
    assert query.detail["statement"] == "SELECT number FROM numbers(3)"
    assert query.detail["result_rows"] == "3"
    assert "UNKNOWN_TABLE" in failure.detail["reason"]
    lines = [r.getMessage() for r in caplog.records if r.name == "inferwatch.audit"]
    assert len(lines) == 4  # every event but the query that ran (DEBUG: the table has it)
    assert not [line for line in lines if line.startswith("query.run") and ": ok " in line]
    assert lines[0].startswith(f"silence.add {added.target} by inferwatch via ui: ok {{")
    assert all("s3cret" not in line for line in lines)


def test_a_silence_the_broker_did_not_take_is_audited_as_failed(ui_store: Store) -> None:
    async def check(client: TestClient) -> None:
        response = await client.post("/api/silences", headers=AUTH, json={
            "matchers": ["model=m2"], "duration": "1h"})
        assert response.status == 502

    events = run(ui_store, check, BrokenBook())
    assert [(e.action, e.outcome) for e in events] == [("silence.add", "failed")]
    assert events[0].detail["reason"] == "ConnectionError: broker away"
    assert events[0].target and events[0].detail["matchers"] == "model=m2"


@pytest.mark.parametrize("path", ["/api/silences", "/api/query"])
def test_a_request_without_credentials_is_not_an_action(ui_store: Store, path: str) -> None:
    async def check(client: TestClient) -> None:
        assert (await client.post(path, json={"sql": "SELECT 1"})).status == 401

    assert run(ui_store, check, RecordingBook()) == []
