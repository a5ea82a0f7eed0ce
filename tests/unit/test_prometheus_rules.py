"""deploy/prometheus: the scrape configuration and the rules for the pipeline's own health,
checked and unit-tested by the real ``promtool`` (the Debian ``prometheus`` package).

Skipped, saying why, only where promtool is not installed. Every alert of the rules file
must have a test that fires it and one where it must not fire, and every metric a rule
reads must be one the worker serves: a renamed metric fails here, not in production.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.telemetry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
CONFIG = DEPLOY / "prometheus.yml"
RULES = DEPLOY / "rules" / "inferwatch.rules.yml"
TESTS = DEPLOY / "rules" / "inferwatch.rules.test.yml"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus'; "
    "`make system-deps` installs it as root)")


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_the_files_exist() -> None:
    for path in (CONFIG, RULES, TESTS):
        assert path.is_file(), f"{path} is missing"


@needs_promtool
def test_promtool_accepts_the_scrape_config_and_finds_the_rules() -> None:
    out = promtool("check", "config", str(CONFIG))
    assert "SUCCESS: 1 rule files found" in out


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    out = promtool("check", "rules", str(RULES))
    count = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    assert f"SUCCESS: {count} rules found" in out


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    out = promtool("test", "rules", str(TESTS))
    assert "SUCCESS" in out


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {"InferWatchWorkerDown", "InferWatchConsumerLagGrowing",
            "InferWatchDeadLettersHigh", "InferWatchSinkFailing"} <= alerts
    spec = yaml.safe_load(TESTS.read_text())
    assert spec["rule_files"] == [RULES.name]
    cases = [c for t in spec["tests"] for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fires == alerts, f"alerts never shown firing: {alerts - fires}"
    assert silent == alerts, f"alerts with no must-not-fire case: {alerts - silent}"


def test_the_rules_read_only_metrics_the_worker_serves() -> None:
    served = {m.name for m in REGISTRY.collect()}
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs = " ".join(r["expr"] for g in groups for r in g["rules"])
    read = set(re.findall(r"\b(inferwatch_[a-z_]+?)(?:_total|_bucket|_count|_sum)?\b", exprs))
    assert read, "no inferwatch metric found in the rules"
    assert read <= served, f"rules read metrics nobody serves: {read - served}"
