"""Rule files: the shipped example loads; every error names file, line, column and what
is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.alerting.conditions import (
    BurnRateCondition,
    ErrorRateBoundCondition,
    ThresholdCondition,
)
from pipeline.alerting.maths import BurnWindow
from pipeline.alerting.rules import (
    RuleError,
    RuleFileSpec,
    RuleSet,
    ThresholdRuleSpec,
    check,
    load_rules,
    parse_rules,
    rule_files,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "deploy" / "rules" / "example.rules.yml"


# --------------------------------------------------------------------------- the example
def test_example_rules_check_clean():
    assert EXAMPLE.is_file()
    assert check(EXAMPLE) == []


def test_example_rules_load_into_runtime_objects():
    rules = load_rules(EXAMPLE)
    assert rules.names() == ["HighP99Latency", "HighErrorRate", "LatencySLOBurn",
                             "PromptLengthDrift", "AnomalousTraffic"]
    assert rules.group_by == ("alertname", "model", "model_version")
    assert len(rules.inhibit_rules) == 1

    latency = rules.get("HighP99Latency")
    assert isinstance(latency.condition, ThresholdCondition)
    assert (latency.for_, latency.keep_firing_for, latency.repeat_interval) == (120, 60, 14400)
    assert latency.severity == "warning"
    assert latency.labels == {"team": "llm-platform"}
    assert {"summary", "description", "runbook_url", "resolution", "contact",
            "escalation"} <= set(latency.annotations)
    assert latency.source.endswith("example.rules.yml:" + str(_line_of("- name: HighP99Latency")))

    errors = rules.get("HighErrorRate").condition
    assert isinstance(errors, ErrorRateBoundCondition)
    assert (errors.threshold, errors.z, errors.over) == (0.05, 2.576, 300)

    burn = rules.get("LatencySLOBurn").condition
    assert isinstance(burn, BurnRateCondition)
    assert burn.sli == "latency" and burn.objective == 0.99
    assert burn.windows == (BurnWindow(3600, 300, 14.4), BurnWindow(21600, 1800, 6.0))

    drift = rules.get("PromptLengthDrift")
    assert drift.matches({"operation": "chat"}) and not drift.matches({"operation": "embed"})
    assert rules.get("AnomalousTraffic").severity == "info"


def _line_of(text: str) -> int:
    lines = EXAMPLE.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_every_example_rule_has_runbook_contact_and_escalation():
    for rule in load_rules(EXAMPLE):
        assert {"summary", "runbook_url", "contact", "escalation"} <= set(rule.annotations), \
            rule.name


def test_a_directory_loads_its_rule_files_but_not_its_tests():
    files = rule_files(EXAMPLE.parent)
    assert EXAMPLE in files
    assert all(not f.name.endswith(".tests.yml") for f in files)
    assert load_rules(EXAMPLE.parent).names() == load_rules(EXAMPLE).names()


def test_type_defaults_to_threshold_and_burn_windows_default_to_the_sre_workbook():
    rs = parse_rules("""
rules:
  - name: A
    condition: requests > 1
    severity: info
  - name: B
    type: burn_rate
    objective: 0.999
    severity: critical
""")
    assert rs.get("A").condition.type == "threshold"
    assert rs.get("B").condition.windows == (BurnWindow(3600, 300, 14.4),
                                             BurnWindow(21600, 1800, 6.0))


def test_rule_labels_and_alert_labels():
    rs = parse_rules("""
rules:
  - name: A
    condition: requests > 1
    severity: warning
    labels: {team: t, model: overridden}
""")
    rule = rs.get("A")
    assert rule.alert_labels({"model": "m", "operation": "chat"}) == {
        "model": "overridden", "operation": "chat", "team": "t", "alertname": "A",
        "severity": "warning"}


def test_rule_set_from_spec_is_validated_like_a_file():
    spec = RuleFileSpec(rules=[ThresholdRuleSpec(name="A", severity="info",
                                                 condition="requests > 1")])
    assert RuleSet.from_spec(spec).names() == ["A"]
    bad = RuleFileSpec(rules=[ThresholdRuleSpec(name="A", severity="info",
                                                condition="reqests > 1")])
    with pytest.raises(RuleError, match="unknown variable `reqests`"):
        RuleSet.from_spec(bad)


# --------------------------------------------------------------------------- bad files
def _where(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of needle in text."""
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(needle, pos + 1)
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


BASE = """\
rules:
  - name: HighP99Latency
    condition: p99_latency_ms > 2000
    severity: warning
"""

BAD_FILES = [
    # (id, text, needle at the reported position, message fragment)
    ("unknown key", BASE + "    sevrity: warning\n", "sevrity",
     "unknown key `sevrity` (did you mean `severity`?)"),
    ("bad expression", BASE.replace("> 2000", ">> 2000"), "> 2000",
     "condition: expected a number, a name or '(', got '>'"),
    ("bad expression quoted", BASE.replace("p99_latency_ms > 2000", '"p99_latency_ms >> 2000"'),
     "> 2000", "condition: expected a number, a name or '(', got '>'"),
    ("unknown variable", BASE.replace("p99_latency_ms", "p99_latncy_ms"), "p99_latncy_ms",
     "condition: unknown variable `p99_latncy_ms` (did you mean `p99_latency_ms`?)"),
    ("invalid severity", BASE.replace("severity: warning", "severity: urgent"), "urgent",
     "invalid severity 'urgent': use critical, warning or info"),
    ("bad duration", BASE + "    for: 5 minutes\n", "5 minutes",
     "for: invalid duration '5 minutes': use e.g. 30s, 5m, 1h30m"),
    ("unknown type", BASE + "    type: treshold\n", "treshold",
     "unknown rule type 'treshold': use threshold, error_rate_bound, burn_rate or "
     "version_comparison"),
    ("missing condition", "rules:\n  - name: A\n    severity: info\n", "name: A",
     "missing required key `condition`"),
    ("duplicate key", BASE + "    severity: info\n", "severity", "duplicate key `severity`"),
    ("duplicate rule", BASE + BASE.replace("rules:\n", ""), "HighP99Latency",
     "duplicate rule name (first defined at"),
    ("bad regex", BASE + "    match_re: {model: 'gpt-('}\n", "'gpt-('",
     "invalid regular expression 'gpt-(' for label 'model'"),
    ("unknown template name", BASE + "    annotations:\n      summary: 'p99 {{ valeu }}'\n",
     "valeu", "annotation `summary`: unknown template name `valeu`"),
    ("unclosed template", BASE + "    annotations:\n      summary: 'p99 {{ value'\n",
     "{{ value", "annotation `summary`: unclosed '{{'"),
    ("number label", BASE + "    labels:\n      priority: 1\n", "1",
     "expected `str`, got `int` (quote the value in YAML)"),
    ("reserved label", BASE + "    labels:\n      severity: high\n", "severity: high",
     "label `severity` is reserved"),
    ("burn windows", "rules:\n  - name: B\n    type: burn_rate\n    objective: 0.99\n"
     "    severity: critical\n    windows:\n      - {long: 5m, short: 1h, burn_rate: 14.4}\n",
     "{long", "windows: need 0 < short < long"),
    ("objective", "rules:\n  - name: B\n    type: burn_rate\n    objective: 99\n"
     "    severity: critical\n", "99", "objective: expected `float` < 1.0"),
    ("invalid YAML", BASE + "    labels: {team: [\n", None, "invalid YAML"),
    ("not a list", "rules: {name: A}\n", "{name", "rules: expected `array`, got `object`"),
    ("top-level typo", "rule:\n  - name: A\n", "rule", "unknown key `rule` (did you mean"),
    ("value must be a number", BASE + "    value: requests > 1\n", "> 1",
     "value: expected a number, got a condition"),
]


@pytest.mark.parametrize(("text", "needle", "message"),
                         [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_rule_files_report_file_line_column_and_what(tmp_path, text, needle, message):
    path = tmp_path / "bad.rules.yml"
    path.write_text(text)
    problems = check(path)
    assert problems, "a bad file must not check clean"
    first = problems[0]
    assert first.file == str(path)
    assert message in first.message, str(first)
    if needle is not None:
        nth = 1 if message.startswith(("duplicate key", "duplicate rule")) else 0
        assert (first.line, first.column) == _where(text, needle, nth), str(first)
    else:
        assert first.line is not None
    with pytest.raises(RuleError) as info:
        load_rules(path)
    assert str(first) in str(info.value)
    assert str(info.value).startswith(f"{path}:")


def test_problem_text_is_file_line_column_message(tmp_path):
    path = tmp_path / "x.yml"
    path.write_text(BASE + "    sevrity: warning\n")
    assert str(check(path)[0]) == \
        f"{path}:5:5: rule `HighP99Latency`: unknown key `sevrity` (did you mean `severity`?)"


def test_a_rule_with_a_misspelt_key_is_still_checked_as_if_spelt_right(tmp_path):
    path = tmp_path / "x.yml"
    path.write_text("""\
rules:
  - name: A
    condition: reqests > 1
    sevrity: loud
    for: soon
""")
    messages = [(p.line, p.column, p.message) for p in check(path)]
    assert messages == [  # the misspelt key's value is checked as the key it should be
        (4, 5, "rule `A`: unknown key `sevrity` (did you mean `severity`?)"),
        (4, 14, "rule `A`: severity: invalid severity 'loud': use critical, warning or info"),
    ]
    path.write_text(path.read_text().replace("loud", "info"))
    messages = [(p.line, p.message) for p in check(path)]
    assert messages == [  # and once it decodes, the rest of the rule is checked too
        (3, "rule `A`: condition: unknown variable `reqests` (did you mean `requests`?)"),
        (4, "rule `A`: unknown key `sevrity` (did you mean `severity`?)"),
        (5, "rule `A`: for: invalid duration 'soon': use e.g. 30s, 5m, 1h30m"),
    ]
    with pytest.raises(RuleError):
        load_rules(path)


def test_every_bad_rule_is_reported_not_just_the_first(tmp_path):
    path = tmp_path / "two.yml"
    path.write_text("""\
rules:
  - name: A
    condition: requets > 1
    severity: info
  - name: B
    condition: requests > 1
    severity: loud
  - name: C
    condition: requests > 1
    severity: info
    for: soon
""")
    problems = check(path)
    assert [p.line for p in problems] == [3, 7, 11]


def test_problems_in_several_files_name_their_file(tmp_path):
    (tmp_path / "a.yml").write_text(BASE)
    (tmp_path / "b.yml").write_text(BASE + "  - name: Other\n    condition: requests > 1\n"
                                           "    severity: x\n")
    problems = check(tmp_path)
    assert [(p.file, p.line) for p in problems] == [(str(tmp_path / "b.yml"), 2),
                                                    (str(tmp_path / "b.yml"), 7)]
    assert "first defined at " + str(tmp_path / "a.yml") + ":2" in problems[0].message
    assert "invalid severity 'x'" in problems[1].message


def test_missing_empty_and_odd_files_are_problems(tmp_path):
    assert str(check(tmp_path / "nope.yml")[0]).endswith("nope.yml: no such file or directory")
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing\n")
    assert "empty rule file" in check(empty)[0].message
    scalar = tmp_path / "scalar.yml"
    scalar.write_text("just text\n")
    assert check(scalar)[0].line == 1
    nothing = tmp_path / "norules.yml"
    nothing.write_text("rules: []\n")
    assert "no rules" in check(nothing)[0].message
    empty_dir = tmp_path / "d"
    empty_dir.mkdir()
    assert "no rule files" in check(empty_dir)[0].message


def test_group_by_must_agree_between_files(tmp_path):
    (tmp_path / "a.yml").write_text("group_by: [alertname]\n" + BASE)
    (tmp_path / "b.yml").write_text("group_by: [model]\n" + BASE.replace("HighP99", "Other"))
    problems = check(tmp_path)
    assert len(problems) == 1 and "group_by differs" in problems[0].message


def test_inhibit_rules_are_validated(tmp_path):
    path = tmp_path / "i.yml"
    path.write_text(BASE + "inhibit_rules:\n  - source_match: {severity: critical}\n"
                           "    equal: [model]\n    targt_match: {severity: warning}\n")
    problem = check(path)[0]
    assert "unknown key `targt_match` (did you mean `target_match`?)" in problem.message
    assert (problem.line, problem.column) == (8, 5)
