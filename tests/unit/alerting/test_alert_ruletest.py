"""Rule tests as data: the shipped tests pass; nothing passes vacuously."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.alerting.ruletest import run_rule_tests

ROOT = Path(__file__).resolve().parents[3]
RULES_DIR = ROOT / "deploy" / "rules"
EXAMPLE_TESTS = RULES_DIR / "example.tests.yml"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(RULES_DIR / "example.rules.yml", tmp_path / "example.rules.yml")
    return tmp_path


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


SERIES = {"model": "gpt-chat", "model_version": "2024-06", "operation": "chat"}
FIRING_LABELS = {**SERIES, "severity": "warning", "team": "llm-platform"}


def latency_test(exp_alerts, *, alertname="HighP99Latency", rule_files=("example.rules.yml",),
                 eval_time="5m"):
    return {
        "rule_files": list(rule_files),
        "tests": [{
            "name": "latency",
            "input_windows": [{"labels": SERIES, "windows": [
                {"requests": 100, "latency_p99_ms": 2500, "times": 6}]}],
            "alert_rule_test": [{"eval_time": eval_time, "alertname": alertname,
                                 "exp_alerts": exp_alerts}],
        }],
    }


# --------------------------------------------------------------------------- shipped
def test_the_shipped_example_tests_pass():
    result = run_rule_tests(EXAMPLE_TESTS)
    assert result.passed, result.report()
    assert len(result.cases) >= 8
    assert result.untested == []  # every example rule is exercised
    assert result.report().startswith(f"PASS {EXAMPLE_TESTS}")


def test_the_shipped_tests_include_must_not_fire_cases():
    data = yaml.safe_load(EXAMPLE_TESTS.read_text())
    empty = [c for t in data["tests"] for c in t["alert_rule_test"] if c["exp_alerts"] == []]
    assert len(empty) >= 5


def test_the_shipped_tests_can_fail(workdir):
    """Break the rule the tests check: they must notice."""
    rules = workdir / "example.rules.yml"
    rules.write_text(rules.read_text().replace("p99_latency_ms > 2000", "p99_latency_ms > 3000"))
    shutil.copy(EXAMPLE_TESTS, workdir / "example.tests.yml")
    result = run_rule_tests(workdir / "example.tests.yml")
    assert not result.passed
    failed = [c.name for c in result.cases if not c.passed]
    assert failed == ["p99 latency above 2 s fires after `for`, resolves after keep_firing_for"]


# --------------------------------------------------------------------------- passing
def test_a_correct_expectation_passes(workdir):
    path = write(workdir / "t.tests.yml", latency_test([{
        "exp_labels": {**SERIES, "severity": "warning", "team": "llm-platform"},
        "exp_annotations": {"contact": "#llm-platform-oncall"}}]))
    result = run_rule_tests(path)
    assert result.passed, result.report()


# --------------------------------------------------------------------------- failing
def test_unknown_rule_fails(workdir):
    path = write(workdir / "t.tests.yml", latency_test([], alertname="HighP99Latencyy"))
    result = run_rule_tests(path)
    assert not result.passed
    (case,) = result.cases
    assert "unknown rule `HighP99Latencyy`" in case.messages[0]
    assert f"{path}:" in case.messages[0]  # with file and line


def test_missing_rule_file_fails(workdir):
    path = write(workdir / "t.tests.yml", latency_test([], rule_files=["nope.rules.yml"]))
    result = run_rule_tests(path)
    assert not result.passed
    assert any("nope.rules.yml" in e and "no such file" in e for e in result.errors)
    assert result.cases and not any(c.passed for c in result.cases)


def test_missing_test_file_fails(tmp_path):
    result = run_rule_tests(tmp_path / "absent.tests.yml")
    assert not result.passed and result.errors == ["no such file"]


def test_broken_rule_file_fails(workdir):
    rules = workdir / "example.rules.yml"
    rules.write_text(rules.read_text().replace("severity: info", "severity: informational"))
    result = run_rule_tests(write(workdir / "t.tests.yml", latency_test([])))
    assert not result.passed
    assert any("invalid severity 'informational'" in e for e in result.errors)


def test_a_wrong_expectation_fails(workdir):
    # expects silence, but the rule fires
    result = run_rule_tests(write(workdir / "a.tests.yml", latency_test([])))
    assert not result.passed
    assert "unexpected alert" in result.cases[0].messages[0]
    # expects the wrong labels
    result = run_rule_tests(write(workdir / "b.tests.yml", latency_test(
        [{"exp_labels": {**FIRING_LABELS, "severity": "critical"}}])))
    assert not result.passed
    assert "is not firing" in result.cases[0].messages[0]
    # expects a wrong annotation
    result = run_rule_tests(write(workdir / "c.tests.yml", latency_test(
        [{"exp_labels": FIRING_LABELS, "exp_annotations": {"summary": "nope"}}])))
    assert not result.passed
    assert "annotation `summary` is 'p99 latency of gpt-chat" in result.cases[0].messages[0]
    # expects an alert before `for` has passed
    result = run_rule_tests(write(workdir / "d.tests.yml", latency_test(
        [{"exp_labels": FIRING_LABELS}], eval_time="2m")))
    assert not result.passed


@pytest.mark.parametrize(("text", "message"), [
    ("rule_files: [example.rules.yml]\ntests: []\n", "tests: expected `array` of length >= 1"),
    ("rule_files: [example.rules.yml]\n", "missing required key `tests`"),
    ("tests:\n  - name: x\n    alert_rule_test:\n"
     "      - {eval_time: 1m, alertname: HighP99Latency, exp_alerts: []}\n",
     "missing required key `rule_files`"),
    ("", "empty test file"),
    ("rule_files: [example.rules.yml]\ntests:\n  - name: x\n    input_windows: []\n",
     "missing required key `alert_rule_test`"),
    ("rule_files: [example.rules.yml]\ntests:\n  - name: x\n    alert_rule_test: []\n",
     "alert_rule_test: expected `array` of length >= 1"),
    ("rule_files: [example.rules.yml]\ntests:\n  - name: x\n    alert_rule_test:\n"
     "      - {eval_time: 1m, alertname: HighP99Latency}\n", "missing required key `exp_alerts`"),
    ("rule_files: [example.rules.yml]\ntest:\n  - name: x\n", "unknown key `test`"),
])
def test_a_test_file_that_checks_nothing_fails(workdir, text, message):
    result = run_rule_tests(write(workdir / "t.tests.yml", text))
    assert not result.passed
    assert any(message in e for e in result.errors), result.errors


def test_unknown_window_key_fails_with_its_position(workdir):
    data = latency_test([])
    data["tests"][0]["input_windows"][0]["windows"][0]["latency_p99"] = 1
    path = write(workdir / "t.tests.yml", data)
    result = run_rule_tests(path)
    assert not result.passed
    msg = result.cases[0].messages[0]
    assert "unknown window key `latency_p99`" in msg and msg.startswith(f"{path}:")


def test_windows_are_placed_by_interval_start_and_explicit_times(workdir):
    data = {
        "rule_files": ["example.rules.yml"],
        "tests": [{
            "name": "explicit",
            "input_windows": [{"labels": SERIES, "interval": "30s", "start": "10m", "windows": [
                {"requests": 100, "latency_p99_ms": 2500, "times": 4},  # ends 10m30s … 12m
                {"window_end": "20m", "requests": 100, "latency_p99_ms": 2500},
            ]}],
            "alert_rule_test": [
                # pending since 10m30s; the 2m of `for` would pass at 12m30s, but the next
                # window is the explicit one ending at 20m
                {"eval_time": "12m30s", "alertname": "HighP99Latency", "exp_alerts": []},
                {"eval_time": "19m59s", "alertname": "HighP99Latency", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "HighP99Latency",
                 "exp_alerts": [{"exp_labels": FIRING_LABELS}]},
            ],
        }],
    }
    result = run_rule_tests(write(workdir / "t.tests.yml", data))
    assert result.passed, result.report()
