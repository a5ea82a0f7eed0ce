"""Notifier bodies (Alertmanager webhook format, Slack) and the resilient sender."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import msgspec
import pytest
from aiohttp import web

from pipeline.alerting.grouping import AlertGroup, group
from pipeline.alerting.notify import (
    AlertmanagerAPI,
    AlertmanagerWebhook,
    Notifier,
    SlackWebhook,
    rfc3339,
)
from pipeline.alerting.notify.sender import WebhookSender
from schemas.alert import AlertEvent

T0 = 1_700_000_000.0


def event(fp: str, *, model="gpt-chat", state="firing", severity="critical", rule="HighErrorRate",
          **kw) -> AlertEvent:
    return AlertEvent(
        fingerprint=fp * 16, rule=rule, state=state, severity=severity,
        series_key=f"model={model}", series_labels={"model": model},
        labels={"alertname": rule, "model": model, "severity": severity, "team": "llm"},
        annotations={"summary": f"errors on {model} <high>", "runbook_url": "https://rb/x",
                     "contact": "#oncall", "escalation": "primary then secondary",
                     "description": f"desc {fp}"},
        value=0.11, threshold=0.05, window_start=T0 - 60, window_end=T0, starts_at=T0,
        ends_at=T0 + 300 if state == "resolved" else None, **kw)


def one_group(*events: AlertEvent) -> AlertGroup:
    (g,) = group(events, ["alertname"], include_muted=True)
    return g


# --------------------------------------------------------------------------- Alertmanager
def test_alertmanager_body_has_the_webhook_shape():
    g = one_group(event("a"), event("b", model="gpt-mini", state="resolved"))
    body = AlertmanagerWebhook("http://hook", receiver="oncall",
                               external_url="http://inferwatch",
                               generator_url="http://grafana/d?fp={fingerprint}").body(g)
    assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver",
                         "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                         "alerts"}
    assert body["version"] == "4"
    assert body["groupKey"] == '{}:{alertname="HighErrorRate"}'
    assert body["status"] == "firing"  # one of the two still fires
    assert body["receiver"] == "oncall"
    assert body["groupLabels"] == {"alertname": "HighErrorRate"}
    assert body["commonLabels"] == {"alertname": "HighErrorRate", "severity": "critical",
                                    "team": "llm"}
    assert body["commonAnnotations"] == {"contact": "#oncall",
                                         "escalation": "primary then secondary",
                                         "runbook_url": "https://rb/x"}
    assert body["externalURL"] == "http://inferwatch"
    assert body["truncatedAlerts"] == 0
    firing, resolved = body["alerts"]
    assert set(firing) == {"status", "labels", "annotations", "startsAt", "endsAt",
                           "generatorURL", "fingerprint"}
    assert firing["status"] == "firing"
    assert firing["startsAt"] == "2023-11-14T22:13:20Z"
    assert firing["endsAt"] == "0001-01-01T00:00:00Z"
    assert firing["generatorURL"] == "http://grafana/d?fp=" + "a" * 16
    assert firing["fingerprint"] == "a" * 16
    assert firing["labels"]["model"] == "gpt-chat"
    assert resolved["status"] == "resolved"
    assert resolved["endsAt"] == "2023-11-14T22:18:20Z"


def test_alertmanager_truncates_and_reports_it():
    g = one_group(*(event(c, model=c) for c in "abcde"))
    body = AlertmanagerWebhook("http://hook", max_alerts=2).body(g)
    assert len(body["alerts"]) == 2 and body["truncatedAlerts"] == 3


def test_rfc3339():
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(T0 + 0.5) == "2023-11-14T22:13:20.500Z"


# --------------------------------------------------------------------------- Slack
def test_slack_body_has_text_and_blocks():
    g = one_group(event("a"), event("b", model="gpt-mini", state="resolved"))
    body = SlackWebhook("https://hooks.slack.com/x", channel="#alerts").body(g)
    assert body["text"] == "[FIRING:1] HighErrorRate"
    assert body["channel"] == "#alerts"
    header, first, second = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text",
                                                 "text": "[FIRING:1] HighErrorRate"}}
    text = first["text"]["text"]
    assert first["text"]["type"] == "mrkdwn"
    assert text.startswith(
        ":red_circle: *HighErrorRate* (critical) errors on gpt-chat &lt;high&gt;")
    assert "value: 0.11 (threshold 0.05)" in text
    assert "<https://rb/x|runbook>" in text
    assert "contact: #oncall" in text and "escalation: primary then secondary" in text
    assert "_since 2023-11-14T22:13:20Z_" in text
    assert second["text"]["text"].startswith(":white_check_mark:")
    assert "_resolved 2023-11-14T22:18:20Z_" in second["text"]["text"]


def test_slack_limits_the_number_of_sections():
    g = one_group(*(event(c, model=c) for c in "abcdefgh"))
    body = SlackWebhook("https://x", max_alerts=3).body(g)
    assert len(body["blocks"]) == 1 + 3 + 1
    assert body["blocks"][-1]["elements"][0]["text"] == "… and 5 more"


# --------------------------------------------------------------------------- contract suite
NOTIFIERS = [AlertmanagerWebhook("http://hook"), SlackWebhook("http://hook"),
             AlertmanagerAPI("http://am:9093", clock=lambda: T0 + 1000)]


@pytest.mark.parametrize("notifier", NOTIFIERS, ids=lambda n: n.kind)
def test_every_notifier_keeps_the_same_promises(notifier: Notifier):
    g = one_group(event("a"), event("b", model="gpt-mini", state="resolved"),
                  event("c", model="x", severity="warning"))
    body = notifier.body(g)
    assert json.loads(notifier.encode(g)) == body  # JSON, and encode() is body()
    assert notifier.body(g) == body  # deterministic
    assert notifier.content_type == "application/json"
    text = json.dumps(body)
    for alert in g.alerts:  # every alert is announced
        assert alert.labels["model"] in text
    resolved_only = one_group(event("z", state="resolved"))
    if isinstance(notifier, AlertmanagerAPI):  # resolved: endsAt not after "now"
        (body,) = notifier.body(resolved_only)
        assert body["endsAt"] <= rfc3339(notifier.clock())
    else:
        assert "resolved" in json.dumps(notifier.body(resolved_only)).lower()


# --------------------------------------------------------------------------- sender
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(statuses: list[int], received: list[bytes], delay: float = 0.0):
    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        if delay:
            await asyncio.sleep(delay)
        status = statuses.pop(0) if statuses else 200
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook"


def test_sender_retries_server_errors_then_succeeds():
    async def main():
        received: list[bytes] = []
        runner, url = await serve([500, 503], received)
        sender = WebhookSender(retries=3, backoff=0.01)
        try:
            ok = await sender.notify(AlertmanagerWebhook(url), one_group(event("a")))
        finally:
            await sender.close()
            await runner.cleanup()
        return ok, sender.stats, received

    ok, stats, received = asyncio.run(main())
    assert ok and (stats.sent, stats.failed, stats.retries) == (1, 0, 2)
    assert len(received) == 3
    assert msgspec.json.decode(received[-1])["version"] == "4"


def test_sender_does_not_retry_client_errors():
    async def main():
        received: list[bytes] = []
        runner, url = await serve([400], received)
        sender = WebhookSender(retries=3, backoff=0.01)
        try:
            ok = await sender.send(url, {"x": 1})
        finally:
            await sender.close()
            await runner.cleanup()
        return ok, sender.stats, received

    ok, stats, received = asyncio.run(main())
    assert not ok and stats.failed == 1 and stats.retries == 0 and len(received) == 1
    assert stats.last_error == "HTTP 400"


def test_sender_counts_failures_and_never_raises():
    async def main():
        sender = WebhookSender(retries=2, backoff=0.01, timeout=1)
        ok = await sender.send(f"http://127.0.0.1:{free_port()}/nothing-listens", b"{}")
        bad_url = await sender.send("not a url", b"{}")
        await sender.close()
        return ok, bad_url, sender.stats

    ok, bad_url, stats = asyncio.run(main())
    assert ok is False and bad_url is False
    assert stats.failed == 2 and stats.sent == 0 and stats.retries >= 2


def test_sender_times_out():
    async def main():
        runner, url = await serve([], [], delay=1.0)
        sender = WebhookSender(retries=0, timeout=0.2)
        try:
            start = time.monotonic()
            ok = await sender.send(url, b"{}")
            took = time.monotonic() - start
        finally:
            await sender.close()
            await runner.cleanup()
        return ok, took, sender.stats

    ok, took, stats = asyncio.run(main())
    assert not ok and took < 0.9 and stats.last_error.startswith("timeout")


def test_submit_does_not_block_and_is_bounded():
    async def main():
        received: list[bytes] = []
        runner, url = await serve([], received, delay=0.2)
        sender = WebhookSender(max_pending=2)
        notifier = SlackWebhook(url)
        try:
            start = time.monotonic()
            accepted = [sender.submit(notifier, one_group(event(c))) for c in "abc"]
            returned_after = time.monotonic() - start
            await sender.drain(timeout=5)
        finally:
            await sender.close()
            await runner.cleanup()
        return accepted, returned_after, sender.stats, received

    accepted, returned_after, stats, received = asyncio.run(main())
    assert accepted == [True, True, False]
    assert returned_after < 0.1  # submit returns at once
    assert stats.sent == 2 and stats.dropped == 1 and len(received) == 2
