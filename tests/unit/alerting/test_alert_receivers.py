"""Receivers as data: routing by matchers, the shorthand settings, the Alertmanager API v2
body, HA fan-out, the periodic re-send (also after a worker restart), config errors and
the notification metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from pipeline.alerting.notify.alertmanager import AlertmanagerWebhook
from pipeline.alerting.notify.alertmanager_api import RESENDS_AHEAD, AlertmanagerAPI
from pipeline.alerting.notify.base import Notifier, rfc3339
from pipeline.alerting.notify.sender import WebhookSender
from pipeline.alerting.notify.slack import SlackWebhook
from pipeline.alerting.receivers import (
    MAX_BATCH,
    RESOLVED_RETENTION,
    Resend,
    Router,
    build_receivers,
    receiver_specs,
)
from pipeline.alerting.rules import parse_rules
from pipeline.alerting.stage import AlertRuleStage
from pipeline.config import (
    AlertReceiverSettings,
    AlertSettings,
    ConfigError,
    Settings,
    load_settings,
)
from pipeline.runtime.memory import MemoryRunner, MemoryTopics
from pipeline.runtime.state import MemoryChangelog
from pipeline.telemetry import REGISTRY
from schemas.alert import AlertEvent
from schemas.metrics import WindowMetrics

T0 = 1_700_000_000.0


def alert(n: int = 0, *, severity: str = "critical", team: str = "llm", state: str = "firing",
          **kw) -> AlertEvent:
    return AlertEvent(
        fingerprint=f"{n:016x}", rule="HighErrorRate", state=state, severity=severity,
        labels={"alertname": "HighErrorRate", "severity": severity, "team": team,
                "model": f"m{n}"},
        annotations={"summary": "errors", "runbook_url": "https://rb/x"},
        window_start=T0 - 60, window_end=T0, starts_at=T0,
        ends_at=T0 + 300 if state == "resolved" else None, **kw)


def receiver(name: str, kind: str = "webhook", matchers: tuple[str, ...] = (),
             urls: tuple[str, ...] = ("http://hook",), **kw) -> AlertReceiverSettings:
    return AlertReceiverSettings(name=name, kind=kind, urls=list(urls),  # type: ignore[arg-type]
                                 matchers=list(matchers), **kw)


def routed(router: Router, *events: AlertEvent) -> dict[str, list[str]]:
    return {name: [e.labels["model"] for e in evs]
            for name, evs in router.route(events).items()}


# --------------------------------------------------------------------------- routing
def test_first_matching_receiver_wins_unless_it_continues():
    router = Router(build_receivers(AlertSettings(receivers=[
        receiver("pager", "alertmanager", ['severity="critical"'], continue_=True),
        receiver("ml", matchers=["team=~ml|llm"]),
        receiver("rest", "slack"),
    ])))
    assert routed(router, alert(1)) == {"pager": ["m1"], "ml": ["m1"]}  # continue, then ml
    assert routed(router, alert(2, severity="warning")) == {"ml": ["m2"]}  # stops at ml
    assert routed(router, alert(3, severity="info", team="search")) == {"rest": ["m3"]}


def test_an_alert_no_receiver_matches_goes_nowhere_and_muted_alerts_go_nowhere():
    router = Router(build_receivers(AlertSettings(receivers=[
        receiver("pager", matchers=['severity="critical"'])])))
    assert routed(router, alert(1, severity="info")) == {}
    assert routed(router, alert(2, silenced=True, silenced_by=["s"])) == {}
    assert routed(router, alert(3, inhibited=True, inhibited_by=["f" * 16])) == {}
    assert routed(router, alert(4)) == {"pager": ["m4"]}


def test_negative_matchers_and_missing_labels():
    router = Router(build_receivers(AlertSettings(receivers=[
        receiver("not-llm", matchers=["team!=llm"]),
        receiver("no-region", matchers=['region=""'])])))
    assert routed(router, alert(1, team="search")) == {"not-llm": ["m1"]}
    assert routed(router, alert(2)) == {"no-region": ["m2"]}  # a missing label is ""


def test_webhook_and_slack_group_by_the_receivers_or_the_rules_group_by():
    router = Router(build_receivers(AlertSettings(receivers=[
        receiver("per-model", continue_=True, group_by=["alertname", "model"]),
        receiver("per-rule", "slack")])), group_by=("alertname",))
    requests = router.requests([alert(1), alert(2)])
    by_receiver: dict[str, list[int]] = {}
    for notifier, g in requests:
        by_receiver.setdefault(notifier.receiver, []).append(len(g.alerts))
    assert by_receiver == {"per-model": [1, 1], "per-rule": [2]}
    kinds = {n.receiver: type(n) for n, _ in requests}
    assert kinds == {"per-model": AlertmanagerWebhook, "per-rule": SlackWebhook}


# --------------------------------------------------------------------------- shorthands
def test_shorthand_settings_become_receivers_that_take_everything_first():
    settings = AlertSettings(webhook_urls=["http://a", "http://b"],
                             slack_webhook_url="https://hooks.slack.com/x",
                             alertmanager_urls=["http://am:9093"],
                             receivers=[receiver("pager", matchers=['severity="critical"'])])
    specs = receiver_specs(settings)
    assert [(s.name, s.kind, s.urls, s.continue_, s.matchers) for s in specs] == [
        ("alertmanager", "alertmanager", ["http://am:9093"], True, []),
        ("webhook", "webhook", ["http://a", "http://b"], True, []),
        ("slack", "slack", ["https://hooks.slack.com/x"], True, []),
        ("pager", "webhook", ["http://hook"], False, ['severity="critical"'])]
    router = Router(build_receivers(settings))
    assert set(routed(router, alert(1))) == {"alertmanager", "webhook", "slack", "pager"}
    assert set(routed(router, alert(2, severity="info"))) == {"alertmanager", "webhook",
                                                              "slack"}


def test_shorthands_from_the_environment():
    settings = load_settings(environ={
        "INFERWATCH_ALERTS__WEBHOOK_URLS": "http://a, http://b",
        "INFERWATCH_ALERTS__ALERTMANAGER_URLS": "http://am1:9093,http://am2:9093",
        "INFERWATCH_ALERTS__ALERTMANAGER_RESEND_SECONDS": "30"})
    receivers = build_receivers(settings.alerts)
    assert [(r.name, [n.url for n in r.notifiers]) for r in receivers] == [
        ("alertmanager", ["http://am1:9093/api/v2/alerts", "http://am2:9093/api/v2/alerts"]),
        ("webhook", ["http://a", "http://b"])]
    assert receivers[0].notifiers[0].resend_seconds == 30.0  # type: ignore[attr-defined]


def test_no_receivers_no_router():
    assert not Router(build_receivers(AlertSettings()))


# --------------------------------------------------------------------------- config
def config(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "inferwatch.toml"
    path.write_text(text)
    return load_settings(path, environ={})


RECEIVER = """
[alerts]
[[alerts.receivers]]
name = "pager"
kind = "alertmanager"
urls = ["http://am1:9093", "http://am2:9093"]
matchers = ['severity="critical"', "team=~ml|llm"]
continue = true
"""


def test_receivers_from_a_toml_file(tmp_path: Path):
    (r,) = config(tmp_path, RECEIVER).alerts.receivers
    assert (r.name, r.kind, r.urls, r.matchers, r.continue_) == (
        "pager", "alertmanager", ["http://am1:9093", "http://am2:9093"],
        ['severity="critical"', "team=~ml|llm"], True)


@pytest.mark.parametrize(("change", "message"), [
    (("team=~ml|llm", "team ~ llm"), "receiver 'pager': invalid matcher 'team ~ llm'"),
    (("team=~ml|llm", "team=~(llm"), "receiver 'pager': invalid regular expression '(llm'"),
    (('"alertmanager"', '"pagerduty"'), "Invalid enum value 'pagerduty'"),  # kind
    (('"http://am2:9093"', '"am2:9093"'), "receiver 'pager': url 'am2:9093' is not http"),
    (('urls = ["http://am1:9093", "http://am2:9093"]', "urls = []"), "length >= 1"),
    (("continue = true", "contiue = true"), "unknown field `contiue`"),
    (('name = "pager"', 'name = "pager duty"'), "Expected `str` matching regex"),
])
def test_a_bad_receiver_fails_at_load_naming_the_file_and_the_problem(
        tmp_path: Path, change: tuple[str, str], message: str):
    with pytest.raises(ConfigError) as exc:
        config(tmp_path, RECEIVER.replace(*change))
    assert str(exc.value).startswith(f"{tmp_path / 'inferwatch.toml'}:")
    assert message in str(exc.value)
    assert "$.alerts.receivers" in str(exc.value)


def test_a_receiver_named_twice_fails(tmp_path: Path):
    with pytest.raises(ConfigError, match="receiver 'pager' is defined twice"):
        config(tmp_path, RECEIVER + RECEIVER.replace("[alerts]\n", ""))
    with pytest.raises(ConfigError, match="receiver 'webhook' is defined twice"):
        config(tmp_path, RECEIVER.replace('"pager"', '"webhook"').replace(
            "[alerts]", '[alerts]\nwebhook_urls = ["http://x"]'))


def test_bad_shorthand_url_and_generator_url_fail(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"receiver .slack. \(shorthand\): url .hooks. is not"):
        config(tmp_path, '[alerts]\nslack_webhook_url = "hooks"\n')
    with pytest.raises(ConfigError, match=r"only \{fingerprint\} and \{rule\} can be replaced"):
        config(tmp_path, '[alerts]\ngenerator_url = "http://x/{id}"\n')
    with pytest.raises(ConfigError, match="alertmanager_resend_seconds"):
        config(tmp_path, "[alerts]\nalertmanager_resend_seconds = 0\n")


# --------------------------------------------------------------------------- API v2 body
def api(**kw) -> AlertmanagerAPI:
    return AlertmanagerAPI("http://am:9093/", resend_seconds=60.0, clock=lambda: T0 + 100,
                           **kw)


def test_api_v2_body_of_a_firing_alert():
    e = msgspec.structs.replace(alert(1), labels={**alert(1).labels, "tenant": ""})
    (body,) = api(generator_url="http://ui/a/{fingerprint}?r={rule}").body(
        Router([])._groups(build_receivers(AlertSettings(alertmanager_urls=["http://x"]))[0],
                           [e])[0])
    assert body == {
        "labels": {"alertname": "HighErrorRate", "severity": "critical", "team": "llm",
                   "model": "m1"},  # an empty label is left out (Alertmanager refuses it)
        "annotations": {"summary": "errors", "runbook_url": "https://rb/x"},
        "startsAt": rfc3339(T0),
        "endsAt": rfc3339(T0 + 100 + RESENDS_AHEAD * 60.0),  # valid for 4 re-sends
        "generatorURL": f"http://ui/a/{1:016x}?r=HighErrorRate",
    }


def test_api_v2_resolved_alert_ends_in_the_past_never_before_it_started():
    am = api()
    assert am.alert(alert(1, state="resolved"), now=T0 + 1000)["endsAt"] == rfc3339(T0 + 300)
    # its window ends after "now" (clock skew): still in the past, so it resolves now
    assert am.alert(alert(1, state="resolved"), now=T0 + 100)["endsAt"] == rfc3339(T0 + 100)
    # now is before the start: endsAt = startsAt, still not before it
    assert am.alert(alert(1, state="resolved"), now=T0 - 50)["endsAt"] == rfc3339(T0)
    assert "generatorURL" not in am.alert(alert(1), now=T0)  # none configured


def test_api_v2_url_takes_a_base_or_the_full_path():
    assert AlertmanagerAPI("http://am:9093").url == "http://am:9093/api/v2/alerts"
    assert AlertmanagerAPI("http://am:9093/api/v2/alerts").url == \
        "http://am:9093/api/v2/alerts"
    assert AlertmanagerAPI("https://am/prefix/").url == "https://am/prefix/api/v2/alerts"


def test_api_v2_keeps_the_notifier_promises():
    am: Notifier = api()
    g = Router([])._groups(build_receivers(AlertSettings(alertmanager_urls=["http://x"]))[0],
                           [alert(1), alert(2, state="resolved")])[0]
    assert msgspec.json.decode(am.encode(g)) == am.body(g) and am.body(g) == am.body(g)
    assert am.content_type == "application/json" and am.kind == "alertmanager"


# --------------------------------------------------------------------------- HA, batches
def test_every_alertmanager_of_an_ha_pair_gets_every_alert_in_batches():
    router = Router(build_receivers(AlertSettings(
        alertmanager_urls=["http://am1:9093", "http://am2:9093"])))
    events = [alert(n) for n in range(MAX_BATCH + 10)]
    requests = router.requests(events)
    by_url: dict[str, list[int]] = {}
    for notifier, g in requests:
        by_url.setdefault(notifier.url, []).append(len(g.alerts))
    assert by_url == {"http://am1:9093/api/v2/alerts": [MAX_BATCH, 10],
                      "http://am2:9093/api/v2/alerts": [MAX_BATCH, 10]}
    sent = {a.fingerprint for n, g in requests if "am1" in n.url for a in g.alerts}
    assert sent == {e.fingerprint for e in events}


def test_resend_goes_to_alertmanager_receivers_only():
    router = Router(build_receivers(AlertSettings(alertmanager_urls=["http://am:9093"],
                                                  webhook_urls=["http://hook"])))
    assert {n.receiver for n, _ in router.requests([alert(1)])} == {"alertmanager", "webhook"}
    assert {n.receiver for n, _ in router.resend([alert(1)])} == {"alertmanager"}


# --------------------------------------------------------------------------- schedule
def test_resend_schedule():
    r = Resend(60.0)
    assert [r.due(T0 + t) for t in (0, 1, 59, 60, 61, 125)] == [
        True, False, False, True, False, True]
    r.soon()  # alerts restored: at the next chance
    assert r.due(T0 + 126) and not r.due(T0 + 127)


def test_resolutions_are_resent_for_a_while_and_forgotten_when_the_alert_fires_again():
    r = Resend(60.0)
    r.observe([alert(1, state="resolved"), alert(2, state="resolved")], now=T0)
    assert [(e.fingerprint[-1], e.state) for e in r.batch([alert(3)], now=T0 + 60)] == [
        ("3", "firing"), ("1", "resolved"), ("2", "resolved")]
    r.observe([alert(1)], now=T0 + 61)  # a new episode of alert 1
    r.observe([alert(2, repeat=True)], now=T0 + 61)  # a reminder is not a new episode
    assert [e.fingerprint[-1] for e in r.batch([], now=T0 + 120)] == ["2"]
    assert r.batch([], now=T0 + RESOLVED_RETENTION + 1) == []
    # an alert firing again is sent as firing, not as its old resolution
    r.observe([alert(4, state="resolved")], now=T0)
    assert [e.state for e in r.batch([alert(4)], now=T0 + 1)] == ["firing"]


# --------------------------------------------------------------------------- the stage
class FakeSender:
    """Records what the stage hands over: (receiver, url, body)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, object]] = []
        self.stats = WebhookSender().stats

    def submit(self, notifier: Notifier, group) -> bool:
        self.sent.append((notifier.receiver, notifier.url, notifier.body(group)))
        return True

    def take(self) -> list[tuple[str, str, object]]:
        out, self.sent = self.sent, []
        return out


RULES = parse_rules("""
rules:
  - name: Slow
    condition: latency_p99_ms > 2000 and requests >= 10
    severity: critical
    annotations:
      summary: "p99 {{ value }} ms"
""")
SETTINGS = Settings(alerts=AlertSettings(
    alertmanager_resend_seconds=60.0, generator_url="http://ui/{fingerprint}",
    stale_after_windows=100,  # no sweep resolving the alert during the test
    receivers=[receiver("pair", "alertmanager", ['severity="critical"'],
                        urls=("http://am1:9093", "http://am2:9093")),
               receiver("hook", matchers=["model=b"])]))


def window(end: float, p99: float, model: str) -> bytes:
    return msgspec.json.encode(WindowMetrics(
        series_key=f"model={model}", labels={"model": model}, window_start=end - 10,
        window_end=end, requests=100, latency_p99_ms=p99))


def test_stage_notifies_routed_receivers_and_resends_firing_alerts_after_a_restart():
    topics = MemoryTopics(1)
    for i, p99 in enumerate([100, 5000, 5000]):
        topics.append(SETTINGS.topics.metrics, window(T0 + 10 * i, p99, "a"), partition=0)
    sender = FakeSender()
    stages: list[AlertRuleStage] = []

    def make() -> AlertRuleStage:
        stages.append(AlertRuleStage(SETTINGS, RULES, sender=sender))  # type: ignore[arg-type]
        return stages[-1]

    r = MemoryRunner(make, topics, MemoryChangelog(), {}, SETTINGS.topics.dlq)

    async def go():
        await r.assign([(SETTINGS.topics.metrics, 0)])
        await r.drain(wall=T0 + 30)
        fired = sender.take()
        await r.tick(T0 + 30)  # a restored-or-new assignment re-sends at once
        first = sender.take()
        await r.tick(T0 + 60)  # not yet due
        quiet = sender.take()
        await r.tick(T0 + 91)
        again = sender.take()
        await r.restart()  # a new stage, its state from the changelog
        await r.tick(T0 + 92)
        restored = sender.take()
        return fired, first, quiet, again, restored

    fired, first, quiet, again, restored = asyncio.run(go())
    # the firing transition: to both Alertmanagers of the pair (the hook's matcher fails)
    assert [(name, url) for name, url, _ in fired] == [
        ("pair", "http://am1:9093/api/v2/alerts"), ("pair", "http://am2:9093/api/v2/alerts")]
    (am_alert,) = fired[0][2]  # type: ignore[misc]
    assert am_alert["labels"] == {"model": "a", "alertname": "Slow", "severity": "critical"}
    assert am_alert["annotations"] == {"summary": "p99 5000 ms"}
    assert am_alert["generatorURL"].startswith("http://ui/")
    assert quiet == []
    for batch in (first, again, restored):
        assert [url for _, url, _ in batch] == ["http://am1:9093/api/v2/alerts",
                                                "http://am2:9093/api/v2/alerts"]
        (resent,) = batch[0][2]  # type: ignore[misc]
        assert resent["labels"] == am_alert["labels"]
        assert resent["startsAt"] == am_alert["startsAt"]  # the same episode
    assert len(stages) == 2
    assert REGISTRY.get_sample_value("inferwatch_alerts", {"state": "firing"}) == 1.0


def test_stage_without_alertmanager_receivers_never_resends():
    settings = Settings(alerts=AlertSettings(webhook_urls=["http://hook"]))
    sender = FakeSender()
    stage = AlertRuleStage(settings, RULES, sender=sender)  # type: ignore[arg-type]
    step = stage.on_tick(T0, lambda topic, partition: True)
    for done in step.done:
        done()
    assert sender.sent == []


# --------------------------------------------------------------------------- metrics
def test_notifications_are_counted_per_receiver_and_outcome():
    def count(receiver: str, outcome: str) -> float:
        return REGISTRY.get_sample_value("inferwatch_notifications_total",
                                         {"receiver": receiver, "outcome": outcome}) or 0.0

    async def go():
        sender = WebhookSender(retries=0, timeout=1, max_pending=0)
        g = Router([])._groups(build_receivers(AlertSettings(
            alertmanager_urls=["http://x"]))[0], [alert(1)])[0]
        am = AlertmanagerAPI("http://127.0.0.1:9/", receiver="counted")
        assert not sender.submit(am, g)  # nothing may be in flight: dropped
        assert not await sender.notify(am, g)  # nothing listens on port 9: failed
        await sender.close()

    before = count("counted", "dropped"), count("counted", "failed")
    asyncio.run(go())
    assert (count("counted", "dropped"), count("counted", "failed")) == (
        before[0] + 1, before[1] + 1)


def test_resend_follows_the_routing_an_alert_stopped_before_alertmanager_is_not_resent():
    router = Router(build_receivers(AlertSettings(receivers=[
        receiver("team-a", matchers=['team="a"']),  # stops: no continue
        receiver("am", "alertmanager", urls=("http://am:9093",)),
    ])))
    assert routed(router, alert(1, team="a"), alert(2)) == {"team-a": ["m1"], "am": ["m2"]}
    resent = [a.labels["model"] for _, g in router.resend([alert(1, team="a"), alert(2)])
              for a in g.alerts]
    assert resent == ["m2"]
