"""Rule unit tests as data, in the manner of ``promtool test rules``.

A test file names rule files (relative to itself) and test cases. Each case gives input
windows per series and checks which alerts fire at evaluation times::

    rule_files: [example.rules.yml]
    tests:
      - name: p99 above 2 s for 2 minutes fires
        input_windows:
          - labels: {model: gpt-chat, operation: chat}
            interval: 1m            # window length (default 1m); windows follow each other
            start: 0                # start of the first window (default 0)
            windows:
              - {requests: 100, latency_p99_ms: 900}
              - {requests: 100, latency_p99_ms: 2500, times: 3}   # 3 equal windows
              - {requests: 100, scores: {anomaly_score: 0.95}}
        alert_rule_test:
          - eval_time: 4m
            alertname: HighP99Latency
            exp_alerts:
              - exp_labels: {model: gpt-chat, operation: chat, severity: warning}
                exp_annotations: {summary: "…"}
          - eval_time: 1m
            alertname: HighP99Latency
            exp_alerts: []          # must not fire

Window keys are ``WindowMetrics`` fields (or their aliases such as ``p99_latency_ms``),
plus ``times`` (repeat the window) and ``scores``; ``window_start`` / ``window_end`` may be
given to place a window explicitly. ``error_rate`` defaults to ``errors / requests``. At
``eval_time`` every window ending at or before it has been evaluated, in window-end order;
the alerts *firing* then (not pending) of ``alertname`` must be exactly ``exp_alerts``:
labels equal (``alertname`` is implied), and every annotation given equal (annotations
not given are not checked). ``exp_alerts: []`` means the rule must not fire.

Nothing passes vacuously: a missing test or rule file, a rule file with errors, a check
naming a rule that does not exist, a file without tests and a test without checks all fail.

>>> import pathlib
>>> res = run_rule_tests(pathlib.Path(__file__).parents[2] / "deploy/rules/example.tests.yml")
>>> res.passed, len(res.cases) > 0
(True, True)
>>> run_rule_tests("no/such.tests.yml").report().splitlines()[0]
'FAIL no/such.tests.yml: no such file'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec

from pipeline.alerting._yaml import Located, Problem, YamlProblem, convert, load_yaml
from pipeline.alerting.durations import format_duration, parse_duration
from pipeline.alerting.evaluator import Evaluator
from pipeline.alerting.rules import RuleError, RuleSet, load_rules
from pipeline.alerting.variables import ALIASES
from pipeline.windows.profile import series_key as make_series_key
from schemas.alert import AlertEvent
from schemas.metrics import WindowMetrics

__all__ = ["CaseResult", "RuleTestFileSpec", "RuleTestResult", "run_rule_tests"]

Duration = str | float


class _Spec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class InputSeriesSpec(_Spec, kw_only=True):
    labels: dict[str, str]
    interval: Duration = "1m"
    start: Duration = 0.0
    windows: Annotated[list[Any], msgspec.Meta(min_length=1)]


class ExpAlertSpec(_Spec, kw_only=True):
    exp_labels: dict[str, str] = {}
    exp_annotations: dict[str, str] = {}


class AlertCheckSpec(_Spec, kw_only=True):
    eval_time: Duration
    alertname: str
    exp_alerts: list[ExpAlertSpec]


class TestCaseSpec(_Spec, kw_only=True):
    name: str
    input_windows: list[InputSeriesSpec] = []
    alert_rule_test: Annotated[list[AlertCheckSpec], msgspec.Meta(min_length=1)]


class RuleTestFileSpec(_Spec, kw_only=True):
    """A rule test file."""

    rule_files: Annotated[list[str], msgspec.Meta(min_length=1)]
    tests: Annotated[list[TestCaseSpec], msgspec.Meta(min_length=1)]


_VOCABULARY = frozenset(
    name for t in (InputSeriesSpec, ExpAlertSpec, AlertCheckSpec, TestCaseSpec,
                   RuleTestFileSpec) for name in t.__struct_encode_fields__)
_WINDOW_FIELDS = frozenset(WindowMetrics.__struct_fields__) - {"schema_version", "series_key",
                                                                 "labels"}
_WINDOW_KEYS = _WINDOW_FIELDS | set(ALIASES) | {"times", "scores"}


# --------------------------------------------------------------------------- results
@dataclass(slots=True)
class CaseResult:
    """One test case: passed, or the messages saying what differed."""

    name: str
    passed: bool
    messages: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RuleTestResult:
    """All of one test file. ``errors`` are problems of the file itself (it then fails);
    ``untested`` names rules no check mentions (reported, not a failure)."""

    file: str
    errors: list[str] = field(default_factory=list)
    cases: list[CaseResult] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors and bool(self.cases) and all(c.passed for c in self.cases)

    def report(self) -> str:
        """Human-readable outcome, one line per case, failures explained."""
        lines = [f"{'PASS' if self.passed else 'FAIL'} {self.file}"
                 + (f": {self.errors[0]}" if len(self.errors) == 1 else "")]
        if len(self.errors) > 1:
            lines += [f"  {e}" for e in self.errors]
        for c in self.cases:
            lines.append(f"  {'ok  ' if c.passed else 'FAIL'} {c.name}")
            lines += [f"       {m}" for m in c.messages]
        if self.untested:
            lines.append(f"  rules without a check: {', '.join(self.untested)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- running
@dataclass(slots=True)
class _Window:
    end: float
    order: int
    metrics: dict[str, Any]
    scores: dict[str, Any] | None


def run_rule_tests(path: str | Path) -> RuleTestResult:
    """Run the rule tests in ``path``."""
    p = Path(path)
    result = RuleTestResult(str(path))
    if not p.is_file():
        result.errors.append("no such file")
        return result
    try:
        located = load_yaml(p.read_text(encoding="utf-8"), str(p))
    except YamlProblem as exc:
        result.errors.append(str(exc.problem))
        return result
    except (OSError, UnicodeDecodeError) as exc:
        result.errors.append(f"cannot read: {exc}")
        return result
    if located.data is None:
        result.errors.append("empty test file: expected `rule_files:` and `tests:`")
        return result
    spec, problem = convert(located, located.data, (), RuleTestFileSpec, _VOCABULARY)
    if problem is not None:
        result.errors.append(str(problem))
        return result
    assert isinstance(spec, RuleTestFileSpec)
    try:
        rules = load_rules([p.parent / f for f in spec.rule_files])
    except RuleError as exc:
        result.errors += [f"rule file: {pr}" for pr in exc.problems]
        result.cases = [CaseResult(t.name, False, ["not run: the rule files did not load"])
                        for t in spec.tests]
        return result
    checked: set[str] = set()
    for i, case in enumerate(spec.tests):
        result.cases.append(_run_case(located, ("tests", i), case, rules, checked))
    result.untested = [n for n in rules.names() if n not in checked]
    return result


def _windows(located: Located, path: tuple[str | int, ...], case: TestCaseSpec,
             problems: list[Problem]) -> list[_Window]:
    out: list[_Window] = []
    for j, series in enumerate(case.input_windows):
        spath = (*path, "input_windows", j)
        try:
            interval = parse_duration(series.interval)
            cursor = parse_duration(series.start)
        except ValueError as exc:
            problems.append(located.at(spath, str(exc)))
            continue
        if interval <= 0:
            problems.append(located.at((*spath, "interval"), "interval must be > 0"))
            continue
        key = make_series_key(series.labels)
        for k, raw in enumerate(series.windows):
            wpath = (*spath, "windows", k)
            if not isinstance(raw, dict):
                problems.append(located.at(wpath, "a window is a mapping of metrics"))
                continue
            bad = [name for name in raw if name not in _WINDOW_KEYS]
            for name in bad:
                problems.append(located.at((*wpath, name), f"unknown window key `{name}` "
                                           "(not a WindowMetrics field)", key=True))
            if bad:
                continue
            data = {ALIASES.get(n, n): v for n, v in raw.items() if n not in ("times", "scores")}
            times = raw.get("times", 1)
            scores = raw.get("scores")
            if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= 100_000:
                problems.append(located.at((*wpath, "times"), "times must be an integer >= 1"))
                continue
            if scores is not None and not isinstance(scores, dict):
                problems.append(located.at((*wpath, "scores"), "scores must be a mapping"))
                continue
            try:
                explicit = [None if data.get(n) is None else parse_duration(data.pop(n))
                            for n in ("window_start", "window_end")]
            except ValueError as exc:
                problems.append(located.at(wpath, f"window_start/window_end: {exc}"))
                continue
            for copy in range(times):
                start, end = cursor, cursor + interval
                if copy == 0 and explicit != [None, None]:
                    ws, we = explicit
                    start = ws if ws is not None else we - interval  # type: ignore[operator]
                    end = we if we is not None else start + interval
                fields = {**data, "window_start": start, "window_end": end}
                fields.update(series_key=key, labels=series.labels)
                requests, errors = fields.get("requests"), fields.get("errors", 0)
                if ("error_rate" not in fields and isinstance(requests, int) and requests > 0
                        and isinstance(errors, int)):
                    fields["error_rate"] = errors / requests
                metrics, problem = convert(located, fields, wpath, WindowMetrics)
                if problem is not None:
                    problems.append(problem)
                    break
                out.append(_Window(metrics.window_end, len(out),
                                   msgspec.structs.asdict(metrics), scores))
                cursor = metrics.window_end
    out.sort(key=lambda w: (w.end, w.order))
    return out


def _fmt_labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(labels.items())) + "}"


def _compare(check: AlertCheckSpec, got: list[AlertEvent], when: str) -> list[str]:
    messages: list[str] = []
    pool = list(got)
    prefix = f"{check.alertname} at {when}:"
    for exp in sorted(check.exp_alerts, key=lambda e: sorted(e.exp_labels.items())):
        want = {**exp.exp_labels, "alertname": check.alertname}
        match = next((a for a in pool if a.labels == want), None)
        if match is None:
            messages.append(f"{prefix} expected alert {_fmt_labels(want)} is not firing")
            continue
        pool.remove(match)
        for key, value in sorted(exp.exp_annotations.items()):
            actual = match.annotations.get(key)
            if actual != value:
                messages.append(f"{prefix} alert {_fmt_labels(want)}: annotation `{key}` is "
                                f"{actual!r}, expected {value!r}")
    messages += [f"{prefix} unexpected alert {_fmt_labels(a.labels)} is firing" for a in pool]
    if messages and got:
        messages.append(f"{prefix} firing: " + ", ".join(_fmt_labels(a.labels) for a in got))
    return messages


def _run_case(located: Located, path: tuple[str | int, ...], case: TestCaseSpec,
              rules: RuleSet, checked: set[str]) -> CaseResult:
    problems: list[Problem] = []
    windows = _windows(located, path, case, problems)
    checks: list[tuple[float, int, AlertCheckSpec]] = []
    for n, check in enumerate(case.alert_rule_test):
        try:
            checks.append((parse_duration(check.eval_time), n, check))
        except ValueError as exc:
            problems.append(located.at((*path, "alert_rule_test", n, "eval_time"), str(exc)))
    messages = [str(p) for p in problems]
    for n, check in enumerate(case.alert_rule_test):
        checked.add(check.alertname)
        if rules.get(check.alertname) is None:
            where = located.at((*path, "alert_rule_test", n, "alertname"),
                               f"unknown rule `{check.alertname}` (rules: "
                               f"{', '.join(rules.names())})")
            messages.append(str(where))
    if messages:
        return CaseResult(case.name, False, messages)
    evaluator = Evaluator(rules)
    pos = 0
    for at, _, check in sorted(checks, key=lambda c: (c[0], c[1])):
        while pos < len(windows) and windows[pos].end <= at:
            evaluator.evaluate(windows[pos].metrics, windows[pos].scores)
            pos += 1
        got = evaluator.firing(check.alertname)
        messages += _compare(check, got, format_duration(at))
    return CaseResult(case.name, not messages, messages)
