"""The dashboard's HTTP server without a browser: auth on every route, pages and assets
served, JSON shapes from the real engine, silences validated, SSE framing."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.sinks.clickhouse.query import run_readonly
from pipeline.ui.live import Hub, decode_record
from pipeline.ui.server import STATIC, Credentials, make_app
from tests.unit.conftest import Store
from tests.unit.ui.conftest import key

AUTH = {"Authorization": "Basic " + base64.b64encode(b"inferwatch:s3cret").decode()}


class RecordingBook:
    """The silences endpoints' backend with the topic replaced by a list (the real
    SilenceBook writes the silences topic; the integration test checks that)."""

    def __init__(self) -> None:
        from pipeline.alerting.silences import Silences

        self.store = Silences()
        self.published: list[Any] = []

    def listing(self) -> list[dict]:
        import msgspec

        return [msgspec.to_builtins(s) for s in self.store.all()]

    async def add(self, item: Any) -> None:
        self.store.add(item)
        self.published.append(item)

    async def expire(self, silence_id: str):
        import time

        item = self.store.expire(silence_id, time.time())
        self.published.append(item)
        return item


def run(store: Store, check: Any, hub: Hub | None = None, book: Any = None) -> None:
    async def go() -> None:
        app = make_app(lambda sql: run_readonly(store.client, sql), hub=hub or Hub(),
                       credentials=Credentials("inferwatch", "s3cret"), silences=book)
        async with TestClient(TestServer(app)) as client:
            await check(client)
    asyncio.run(go())


@pytest.mark.parametrize("path", ["/", "/series", "/alerts", "/query", "/api/overview",
                                  "/api/live", "/static/common.js"])
def test_every_route_needs_the_credentials(ui_store: Store, path: str) -> None:
    async def check(client: TestClient) -> None:
        response = await client.get(path)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        wrong = {"Authorization": "Basic " + base64.b64encode(b"inferwatch:nope").decode()}
        assert (await client.get(path, headers=wrong)).status == 401
    run(ui_store, check)


def test_owner_password_is_read_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "clickhouse.owner.json").write_text(json.dumps(
        {"pid": 1, "host": "127.0.0.1", "port": 1, "user": "inferwatch", "password": "own"}))
    creds = Credentials("inferwatch", "", tmp_path / "clickhouse.owner.json", "fallback")
    header = "Basic " + base64.b64encode(b"inferwatch:own").decode()
    assert creds.check(header)
    (tmp_path / "clickhouse.owner.json").unlink()  # no owner: the printed fallback
    assert not creds.check(header)
    assert creds.check("Basic " + base64.b64encode(b"inferwatch:fallback").decode())
    assert not Credentials("inferwatch").check("Basic " + base64.b64encode(b"inferwatch:").decode())


def test_pages_and_bundled_chart_library_are_served(ui_store: Store) -> None:
    async def check(client: TestClient) -> None:
        for path, needle in (("/", "overview.js"), ("/series", "uPlot.iife.min.js"),
                             ("/alerts", "silence-form"), ("/query", "query.js")):
            response = await client.get(path, headers=AUTH)
            assert response.status == 200 and needle in await response.text()
        if (STATIC / "vendor" / "uPlot.iife.min.js").exists():  # after `make ui-assets`
            lib = await client.get("/static/vendor/uPlot.iife.min.js", headers=AUTH)
            assert lib.status == 200 and "uPlot" in await lib.text()
        html = (await (await client.get("/series", headers=AUTH)).text())
        assert "http://" not in html and "https://" not in html  # nothing from a CDN
    run(ui_store, check)


def test_overview_json(ui_store: Store) -> None:
    async def check(client: TestClient) -> None:
        response = await client.get("/api/overview?range=15m&sort=p99_ms&size=2", headers=AUTH)
        body = await response.json()
        assert response.status == 200 and body["total"] == 3
        assert [r["series_key"] for r in body["rows"]] == [key(2), key(1)]
        assert body["rows"][0]["spark"][-1] == body["rows"][0]["p99_ms"]
        assert "total" not in body["rows"][0]
        bad = await client.get("/api/overview?range=2h", headers=AUTH)
        assert bad.status == 400 and "range" in (await bad.json())["error"]
    run(ui_store, check)


def test_series_and_alerts_json(ui_store: Store) -> None:
    async def check(client: TestClient) -> None:
        body = await (await client.get(f"/api/series?key={key(1)}&range=1h",
                                       headers=AUTH)).json()
        assert body["labels"]["model"] == "m1" and body["source"] == "window_metrics"
        assert len(body["metrics"]) == 6 and body["drift"][0]["statistic"] == "ks"
        assert body["anomaly"][0]["change_points"] == ["latency_p99_ms"]
        body = await (await client.get("/api/series?key=x&range=7d", headers=AUTH)).json()
        assert body["source"] == "rollup_1h" and body["metrics"] == []
        alerts = await (await client.get("/api/alerts?range=1h", headers=AUTH)).json()
        assert [a["rule"] for a in alerts["rows"]] == ["HighP99Latency"]
    run(ui_store, check)


def test_query_endpoint_runs_read_only_sql(ui_store: Store) -> None:
    async def check(client: TestClient) -> None:
        ok = await client.post("/api/query", headers=AUTH, json={
            "sql": "SELECT count() AS n FROM window_metrics FINAL"})
        assert (await ok.json())["rows"] == [[18]]
        refused = await client.post("/api/query", headers=AUTH,
                                    json={"sql": "DROP TABLE window_metrics"})
        assert refused.status == 502 and "read-only" in (await refused.json())["error"]
    run(ui_store, check)


def test_silences_created_expired_and_invalid_ones_refused(ui_store: Store) -> None:
    book = RecordingBook()

    async def check(client: TestClient) -> None:
        made = await client.post("/api/silences", headers=AUTH, json={
            "matchers": ["model=m2", " "], "duration": "1h", "comment": "deploy",
            "created_by": "ops"})
        assert made.status == 201
        item = await made.json()
        assert item["matchers"] == [{"name": "model", "value": "m2"}]
        listed = await (await client.get("/api/silences", headers=AUTH)).json()
        assert [s["id"] for s in listed["silences"]] == [item["id"]]
        expired = await client.post(f"/api/silences/{item['id']}/expire", headers=AUTH)
        assert expired.status == 200 and (await expired.json())["ends_at"] < item["ends_at"]
        for body in ({"matchers": ["model=~.*"]}, {"matchers": []},
                     {"matchers": ["model=m2"], "duration": "soon"},
                     {"matchers": [1]}, {"matchers": "model=m2"}, ["model=m2"], "x", None):
            refused = await client.post("/api/silences", headers=AUTH, json=body)
            assert refused.status == 400, body  # said why, not an internal error
            assert (await refused.json())["error"], body
        not_object = "the request body must be a JSON object"
        no_sql = 'the body must hold the statement as "sql", a string'
        for body, why in (([], not_object), ({"statement": "SELECT 1"}, no_sql),
                          ({"sql": 1}, no_sql)):
            refused = await client.post("/api/query", headers=AUTH, json=body)
            assert refused.status == 400, body
            assert (await refused.json())["error"] == why, body
        garbled = await client.post("/api/silences", headers=AUTH, data=b"{not json")
        assert garbled.status == 400
        unknown = await client.post("/api/silences/nope/expire", headers=AUTH)
        assert unknown.status == 400
    run(ui_store, check, book=book)
    assert [p.id for p in book.published] == [book.published[0].id] * 2


def test_writes_from_another_origin_are_refused(ui_store: Store) -> None:
    book = RecordingBook()

    async def check(client: TestClient) -> None:
        body = {"matchers": ["model=m2"], "duration": "1h"}
        evil = await client.post("/api/silences", json=body,
                                 headers={**AUTH, "Origin": "https://evil.example"})
        assert evil.status == 403
        host = f"{client.server.host}:{client.server.port}"
        own = await client.post("/api/silences", json=body,
                                headers={**AUTH, "Origin": f"http://{host}", "Host": host})
        assert own.status == 201
    run(ui_store, check, book=book)
    assert len(book.published) == 1


def test_live_stream_is_server_sent_events_filtered_by_series(ui_store: Store) -> None:
    hub = Hub()

    async def check(client: TestClient) -> None:
        response = await client.get(f"/api/live?series={key(1)}", headers=AUTH)
        assert response.headers["Content-Type"].startswith("text/event-stream")
        first = await response.content.readuntil(b"\n\n")
        assert first == b"retry: 2000\n\n"
        hello = await response.content.readuntil(b"\n\n")
        assert hello.startswith(b"event: hello\n")
        for i in (0, 1):
            value = json.dumps({"series_key": key(i), "window_start": 1.0}).encode()
            hub.publish(decode_record("metrics", value, {}))
        frame = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        event, data = frame.decode().strip().split("\n")
        assert event == "event: metrics"
        assert json.loads(data.removeprefix("data: "))["series_key"] == key(1)
        response.close()
    run(ui_store, check, hub=hub)


def test_decode_record_names_the_contract() -> None:
    resource = decode_record("metrics", b'{"host": "h1"}',
                             {"inferwatch-contract": b"ResourceMetrics"})
    assert resource is not None and resource["kind"] == "resources"
    for other in (b"QualityWindow", b"VersionSummary"):  # not drawn as request windows
        assert decode_record("metrics", b'{"series_key": "model=m"}',
                             {"inferwatch-contract": other}) is None
    window = decode_record("metrics", b'{"series_key": "model=m"}',
                           {"inferwatch-contract": b"WindowMetrics"})
    assert window is not None and window["kind"] == "metrics"
    assert decode_record("alert", b"not json", {}) is None
    assert decode_record("scores", None, {}) is None
