"""InferWatch → a real Alertmanager (Debian's ``prometheus-alertmanager``, started by the
test on loopback): a latency spike fires, the alert shows in Alertmanager's API with our
labels, annotations and generatorURL, is grouped as Alertmanager is configured, reaches
the webhook receiver Alertmanager notifies, survives an Alertmanager restart without
persistence (it comes back through the periodic re-send, not through a new transition),
and resolves. The example config in deploy/alertmanager passes ``amtool check-config``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT, Pipeline
from tests.integration.test_alerting import (
    RULES,
    Collector,
    Webhook,
    _alerting_env,
    _realtime_traffic,
)

pytestmark = pytest.mark.integration

AM_BIN = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")
# outside the ephemeral range, and away from the test brokers (19092 and its controller
# port 19093, 19292/19293, …)
AM_PORT, HOOK_PORT, DEAD_PORT = 18093, 18095, 18097
AM_URL = f"http://127.0.0.1:{AM_PORT}"
RULE = "ChatLatencyHigh"
RESEND = 2.0
AM_CONFIG = f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{HOOK_PORT}/hook
        send_resolved: true
"""
# The HA pair's second member is down for the whole test: sends to it fail and are
# retried in the background; the live one must not notice.
INFERWATCH_CONFIG = f"""
[alerts]
alertmanager_resend_seconds = {RESEND}
generator_url = "http://inferwatch.test/alerts/{{fingerprint}}?rule={{rule}}"

[[alerts.receivers]]
name = "am-pair"
kind = "alertmanager"
urls = ["{AM_URL}", "http://127.0.0.1:{DEAD_PORT}"]
matchers = ['alertname="{RULE}"', 'severity=~"critical|warning"']
"""

needs_alertmanager = pytest.mark.skipif(AM_BIN is None or AMTOOL is None,
                                        reason="prometheus-alertmanager / amtool not installed")


class Hook(Webhook):
    """The webhook receiver Alertmanager notifies, on the fixed port its config names."""

    def __init__(self) -> None:
        super().__init__(HOOK_PORT, "/hook")

    def statuses(self) -> list[str]:
        return [b["status"] for b in self.bodies if b["groupLabels"].get("alertname") == RULE]


class Alertmanager:
    """One Alertmanager process: no clustering, state in a directory of the test's."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = tmp / "alertmanager.yml"
        self.config.write_text(AM_CONFIG)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        if _ready():
            pytest.fail(f"an Alertmanager already answers on port {AM_PORT} (a leftover run?)")
        self.starts += 1
        storage = self.tmp / f"am-data-{self.starts}"  # fresh: nothing persisted
        log = open(self.tmp / f"alertmanager-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [AM_BIN, f"--config.file={self.config}", f"--storage.path={storage}",
             f"--web.listen-address=127.0.0.1:{AM_PORT}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        proc = self.proc

        def ours_ready() -> bool:  # an Alertmanager left on the port must not pass for ours
            if proc.poll() is not None:
                raise AssertionError(f"Alertmanager exited {proc.returncode}:\n{self.log()}")
            return _ready()

        wait_for(ours_ready, 30, "Alertmanager ready", self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.tmp / f"alertmanager-{self.starts}.log").read_text(errors="replace")[-3000:]

    def alerts(self) -> list[dict[str, Any]]:
        return [a for a in _get("/api/v2/alerts") if a["labels"].get("alertname") == RULE]

    def groups(self) -> list[dict[str, Any]]:
        return _get("/api/v2/alerts/groups")


def _get(path: str) -> Any:
    with urllib.request.urlopen(AM_URL + path, timeout=5) as resp:
        return json.load(resp)


def _ready() -> bool:
    try:
        with urllib.request.urlopen(AM_URL + "/-/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_for(check: Callable[[], Any], seconds: float, what: str,
             context: Callable[[], str] = lambda: "") -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.25)
    raise AssertionError(f"no {what} after {seconds:g}s\n{context()}")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path)
    am.start()
    yield am
    am.stop()


@needs_alertmanager
def test_example_alertmanager_config_is_valid(tmp_path: Path) -> None:
    shipped, ours = ROOT / "deploy/alertmanager/alertmanager.yml", tmp_path / "am.yml"
    assert shipped.is_file(), "the example Alertmanager config is missing"
    ours.write_text(AM_CONFIG)
    for config in (shipped, ours):
        out = subprocess.run([AMTOOL, "check-config", str(config)], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS" in out.stdout


@needs_alertmanager
def test_alert_reaches_alertmanager_survives_its_restart_and_resolves(
    kafka_bootstrap: str, tmp_path: Path, alertmanager: Alertmanager,
) -> None:
    hook = Hook()
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    config = tmp_path / "inferwatch.toml"
    config.write_text(INFERWATCH_CONFIG)
    pipe = Pipeline(kafka_bootstrap, tmp_path, INFERWATCH_CONFIG=str(config),
                    **_alerting_env(rules))
    collector = None
    traffic = None
    try:
        assert [r.name for r in pipe.settings.alerts.receivers] == ["am-pair"]
        worker = pipe.start_worker(roles="process")
        pipe.wait_processor_ready(worker)
        collector = Collector(pipe)
        traffic = threading.Thread(target=_realtime_traffic, daemon=True, args=(
            pipe, 65, "latency_spike@6+45:model=gpt-chat:factor=6"))
        traffic.start()

        # Firing: in Alertmanager's API with our labels, annotations and link.
        alerts = wait_for(lambda: len(alertmanager.alerts()) == 2 and alertmanager.alerts(),
                          90, "firing alerts in Alertmanager", lambda: pipe.log(worker))
        for alert in alerts:
            labels = alert["labels"]
            assert labels["severity"] == "critical" and labels["model"] == "gpt-chat"
            assert labels["model_version"] in ("2024-06", "2024-09")
            assert alert["annotations"]["runbook"] == "https://runbooks.example/latency"
            assert alert["annotations"]["summary"].startswith("p50 ")
            assert alert["generatorURL"].startswith("http://inferwatch.test/alerts/")
            assert alert["generatorURL"].endswith(f"?rule={RULE}")
            assert alert["status"]["state"] == "active"
        starts = {a["fingerprint"]: a["startsAt"] for a in alerts}

        # Grouped as Alertmanager is configured: one group by alertname, both alerts.
        groups = [g for g in alertmanager.groups() if g["labels"] == {"alertname": RULE}]
        assert len(groups) == 1, alertmanager.groups()
        assert groups[0]["receiver"]["name"] == "hook"
        assert len(groups[0]["alerts"]) == 2

        # Alertmanager notified its webhook receiver.
        def both_notified() -> dict[str, Any] | None:  # the group holds both by now
            return next((b for b in hook.bodies if b["status"] == "firing" and len(
                {a["labels"]["model_version"] for a in b["alerts"]}) == 2), None)

        body = wait_for(both_notified, 20, "firing notification of both alerts")
        assert body["receiver"] == "hook" and body["commonLabels"]["alertname"] == RULE
        assert body["groupLabels"] == {"alertname": RULE}

        # Restart Alertmanager with fresh storage: the re-send brings the alerts back,
        # with their original start, and no new transition was published meanwhile.
        events_before = len(collector.events)
        notified_before = len(hook.bodies)
        alertmanager.stop()
        restarted_at = time.time()
        alertmanager.start()
        again = wait_for(lambda: len(alertmanager.alerts()) == 2 and alertmanager.alerts(),
                         RESEND * 5 + 5, "alerts back after the restart", alertmanager.log)
        assert time.time() - restarted_at < RESEND * 5 + 10
        assert {a["fingerprint"]: a["startsAt"] for a in again} == starts
        new = [e for _, e in collector.events[events_before:] if not e.repeat]
        assert not [e for e in new if e.state == "firing"], new
        wait_for(lambda: len(hook.bodies) > notified_before, 20,
                 "notification from the restarted Alertmanager")

        # Resolved: gone from the active alerts, and the hook hears it.
        wait_for(lambda: "resolved" in hook.statuses(), 120, "resolved notification",
                 lambda: pipe.log(worker))
        wait_for(lambda: not alertmanager.alerts(), 30, "alerts resolved in Alertmanager")
        resolved = [b for b in hook.bodies if b["status"] == "resolved"]
        assert {a["status"] for b in resolved for a in b["alerts"]} == {"resolved"}
        # Resolved by our post, not by Alertmanager timing the alert out: the end it
        # reports is the resolving window's end InferWatch published (a timed-out alert
        # would end at the endsAt of the last firing re-send, seconds later). A version
        # that resolves while the other still fires is reported in a "firing" group
        # notification, so the resolved alerts are read from every body of the group.
        ended = {e.labels["model_version"]: e.ends_at for _, e in collector.events
                 if e.state == "resolved" and e.rule == RULE}
        heard = {a["labels"]["model_version"]: datetime.fromisoformat(a["endsAt"]).timestamp()
                 for b in hook.bodies if b["groupLabels"].get("alertname") == RULE
                 for a in b["alerts"] if a["status"] == "resolved"}
        assert heard.keys() == ended.keys() == {"2024-06", "2024-09"}, (heard, ended)
        for version, ends_at in ended.items():
            assert heard[version] == pytest.approx(ends_at, abs=1.0), version
        # The dead member of the pair never blocked anything; its failures were logged.
        worker_log = Path(worker.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        assert f"notification to http://127.0.0.1:{DEAD_PORT}/api/v2/alerts failed" in worker_log
    finally:
        if traffic is not None:
            traffic.join(timeout=120)
        if collector is not None:
            collector.close()
        pipe.close()
