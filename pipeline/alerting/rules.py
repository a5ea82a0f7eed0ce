"""Alert rules: YAML → typed spec Structs (:mod:`~pipeline.alerting.rule_spec`, unknown
keys rejected) → runtime :class:`Rule`.

A rule file is a mapping with ``rules`` (a list), optionally ``group_by`` (labels that
group notifications; default ``[alertname]``) and ``inhibit_rules``. A path may also be a
directory: every ``*.yml`` / ``*.yaml`` in it, sorted, except rule tests
(``*.tests.yml`` / ``*.tests.yaml``). See ``deploy/rules/example.rules.yml``.

Each rule has a ``name``, a ``severity`` (critical, warning, info), a ``type`` and that
type's fields, plus optional ``match`` / ``match_re`` on series labels, ``for``,
``keep_firing_for``, ``repeat_interval``, ``labels`` and ``annotations``:

- ``threshold`` (the default type): ``condition`` in the expression language
  (:mod:`pipeline.alerting.expr`), optional ``value`` (what to report; default the left
  side of the first comparison).
- ``error_rate_bound``: ``threshold`` on the Wilson lower bound at ``z`` (default 1.96) of
  ``errors / total`` (default ``errors`` / ``requests``), optionally summed ``over`` a
  lookback, with ``min_requests``.
- ``burn_rate``: ``objective`` (e.g. 0.99), ``sli`` (``errors`` or ``latency``: requests
  slower than the SLO latency) and ``windows`` of ``{long, short, burn_rate}``
  (default: the SRE workbook's 1h/5m at 14.4 and 6h/30m at 6), with ``min_requests``.
- ``version_comparison``: a candidate model version worse than the baseline serving beside
  it over ``quality.compare_seconds``, on ``metrics`` (error_rate, latency_ms, accuracy,
  satisfaction, thumbs_down_rate) at confidence ``level`` with ``min_samples`` per side and
  optional ``margins`` per metric (docs/quality.md).

Annotations are templates (:mod:`pipeline.alerting.templates`) over ``value``,
``threshold``, ``alertname``, ``severity``, ``series_key``, ``window_start``,
``window_end``, ``labels.<name>``, ``metrics.<variable>`` and ``details.<name>``
(per type: e.g. ``details.lower_bound``, ``details.long_burn_rate``).

Every problem is reported with file, line and column: :func:`check` lists them all,
:func:`load_rules` raises :class:`RuleError` carrying them.

>>> rs = parse_rules('''
... rules:
...   - name: HighP99Latency
...     condition: p99_latency_ms > 2000
...     for: 1m
...     severity: warning
...     annotations:
...       summary: "p99 of {{ labels.model }} is {{ value }} ms"
... ''', "inline.yml")
>>> rule = rs.get("HighP99Latency")
>>> rule.for_, rule.condition.type, rs.group_by
(60.0, 'threshold', ('alertname',))
>>> parse_rules('''
... rules:
...   - name: Typo
...     condition: p99_latency_ms > 2000
...     sevrity: warning
... ''', "bad.yml")
Traceback (most recent call last):
...
pipeline.alerting.rules.RuleError: bad.yml:5:5: rule `Typo`: unknown key `sevrity` (did you mean \
`severity`?)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from pipeline.alerting._yaml import Located, Problem, YamlProblem, convert, load_yaml
from pipeline.alerting.conditions import (
    BurnRateCondition,
    Condition,
    ErrorRateBoundCondition,
    ThresholdCondition,
    VersionComparisonCondition,
)
from pipeline.alerting.durations import parse_duration
from pipeline.alerting.expr import Expr, ExprError, Kind, parse
from pipeline.alerting.inhibit import InhibitRule
from pipeline.alerting.matchers import LabelMatcher, compile_matchers, matchers_from_maps
from pipeline.alerting.maths import BurnWindow
from pipeline.alerting.rule_spec import (
    VOCABULARY,
    BurnRateRuleSpec,
    BurnWindowSpec,
    ErrorRateBoundRuleSpec,
    FileShape,
    InhibitRuleSpec,
    RuleFileSpec,
    RuleSpec,
    ThresholdRuleSpec,
    VersionComparisonRuleSpec,
)
from pipeline.alerting.templates import Template, TemplateError, parse_template
from pipeline.alerting.variables import is_known, suggest
from schemas.alert import Severity

__all__ = [
    "BurnRateRuleSpec",
    "BurnWindowSpec",
    "ErrorRateBoundRuleSpec",
    "InhibitRuleSpec",
    "Problem",
    "Rule",
    "RuleError",
    "RuleFile",
    "RuleFileSpec",
    "RuleSet",
    "RuleSpec",
    "ThresholdRuleSpec",
    "VersionComparisonRuleSpec",
    "check",
    "load_rules",
    "parse_rules",
    "rule_files",
]

_HINTS = {
    "severity": "invalid severity {value!r}: use critical, warning or info",
    "type": "unknown rule type {value!r}: use threshold, error_rate_bound, burn_rate or "
            "version_comparison",
    "sli": "invalid sli {value!r}: use errors or latency",
    "name": "invalid name {value!r}: use letters, digits and _ (not starting with a digit)",
}
_RESERVED_LABELS = {"alertname": "the rule name is the alertname",
                    "severity": "set it with `severity:`"}
_TEMPLATE_NAMES = frozenset({"value", "threshold", "alertname", "rule", "severity",
                             "series_key", "window_start", "window_end", "starts_at"})


# --------------------------------------------------------------------------- runtime
@dataclass(frozen=True, slots=True)
class Rule:
    """A rule ready to evaluate: built from a validated spec."""

    name: str
    severity: Severity
    condition: Condition
    match: LabelMatcher = field(default_factory=lambda: compile_matchers(()))
    for_: float = 0.0
    keep_firing_for: float = 0.0
    repeat_interval: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, Template] = field(default_factory=dict)
    source: str = ""  # file:line of the rule

    def matches(self, series_labels: Mapping[str, str]) -> bool:
        """Whether the rule applies to a series with these labels."""
        return self.match.matches(series_labels)

    def alert_labels(self, series_labels: Mapping[str, str]) -> dict[str, str]:
        """Series labels, then the rule's labels, then ``alertname`` and ``severity``."""
        return {**series_labels, **self.labels, "alertname": self.name,
                "severity": self.severity}

    def render(self, context: Mapping[str, object]) -> dict[str, str]:
        """The annotations rendered with ``context`` (see the module doc for names)."""
        return {k: t.render(context) for k, t in self.annotations.items()}


class RuleFile(NamedTuple):
    """A file the rules came from, and the sha256 of the bytes that were read (what
    ``sha256sum`` prints for it then), for the audit trail."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules of one or more files, with notification grouping and inhibition."""

    rules: tuple[Rule, ...] = ()
    group_by: tuple[str, ...] = ("alertname",)
    inhibit_rules: tuple[InhibitRule, ...] = ()
    files: tuple[RuleFile, ...] = ()

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule | None:
        """The rule called ``name``, or ``None``."""
        return next((r for r in self.rules if r.name == name), None)

    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    @classmethod
    def from_spec(cls, spec: RuleFileSpec, file: str = "<spec>") -> RuleSet:
        """Build from a spec made in code; validated like a file (without positions)."""
        loader = _Loader()
        loader.add(Located(file, msgspec.to_builtins(spec)))
        return loader.result()


class RuleError(ValueError):
    """Rules that cannot be loaded; ``problems`` says where and why, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


# --------------------------------------------------------------------------- loading
def rule_files(path: str | Path) -> list[Path]:
    """The rule files a path names: the file, or a directory's ``*.yml`` / ``*.yaml``
    (sorted), rule tests (``*.tests.yml``) excluded."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir()
                      if f.is_file() and f.suffix in (".yml", ".yaml")
                      and not f.name.endswith((".tests.yml", ".tests.yaml")))
    return [p]


def _paths(paths: str | Path | Iterable[str | Path]) -> list[str | Path]:
    return [paths] if isinstance(paths, str | Path) else list(paths)


def check(paths: str | Path | Iterable[str | Path]) -> list[Problem]:
    """Every problem in the rule files at ``paths`` (files or directories); empty if fine."""
    loader = _Loader()
    for path in _paths(paths):
        loader.add_path(path)
    return sorted(loader.problems, key=lambda p: (p.file, p.line or 0, p.column or 0))


def load_rules(paths: str | Path | Iterable[str | Path]) -> RuleSet:
    """The :class:`RuleSet` of the rule files at ``paths``; raises :class:`RuleError`."""
    loader = _Loader()
    for path in _paths(paths):
        loader.add_path(path)
    return loader.result()


def parse_rules(text: str, file: str = "<string>") -> RuleSet:
    """The :class:`RuleSet` of one rule file's text; raises :class:`RuleError`."""
    loader = _Loader()
    loader.add_text(text, file)
    return loader.result()


class _Loader:
    """Accumulates rules and problems over files."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.rules: list[Rule] = []
        self.inhibit: list[InhibitRule] = []
        self.group_by: tuple[str, ...] | None = None
        self.group_by_from = ""
        self.files: list[RuleFile] = []
        self.names: dict[str, str] = {}

    def result(self) -> RuleSet:
        if self.problems:
            raise RuleError(sorted(self.problems,
                                   key=lambda p: (p.file, p.line or 0, p.column or 0)))
        return RuleSet(tuple(self.rules), self.group_by or ("alertname",),
                       tuple(self.inhibit), tuple(self.files))

    def add_path(self, path: str | Path) -> None:
        p = Path(path)
        if not p.exists():
            self.problems.append(Problem(str(path), None, None, "no such file or directory"))
            return
        files = rule_files(p)
        if not files:
            self.problems.append(Problem(str(path), None, None,
                                         "no rule files (*.yml, *.yaml) in this directory"))
        for f in files:
            try:
                raw = f.read_bytes()
                text = raw.decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self.problems.append(Problem(str(f), None, None, f"cannot read: {exc}"))
                continue
            self.add_text(text, str(f), hashlib.sha256(raw).hexdigest())

    def add_text(self, text: str, file: str, sha256: str = "") -> None:
        try:
            located = load_yaml(text, file)
        except YamlProblem as exc:
            self.problems.append(exc.problem)
            return
        self.add(located, sha256 or hashlib.sha256(text.encode()).hexdigest())

    # one file
    def add(self, located: Located, sha256: str = "") -> None:
        self.files.append(RuleFile(located.file, sha256))
        data = located.data
        if data is None:
            self.problems.append(Problem(located.file, None, None,
                                         "empty rule file: expected a mapping with `rules:`"))
            return
        shape, problem = convert(located, data, (), FileShape, VOCABULARY)
        if problem:
            self.problems.append(problem)
            return
        if not shape.rules and not shape.inhibit_rules and shape.group_by is None:
            self.problems.append(located.at((), "no rules in this file"))
        for i, raw in enumerate(shape.rules):
            spec = self._rule_spec(located, i, raw)
            if spec is None:
                continue
            if (rule := _RuleBuilder(located, ("rules", i), spec, self).build()) is not None:
                self.rules.append(rule)
        for i, raw in enumerate(shape.inhibit_rules):
            spec, problem = convert(located, raw, ("inhibit_rules", i), InhibitRuleSpec,
                                    VOCABULARY)
            if problem:
                self.problems.append(problem)
                continue
            self._inhibit(located, ("inhibit_rules", i), spec)
        if shape.group_by is not None:
            self._group_by(located, tuple(shape.group_by))

    def _rule_spec(self, located: Located, i: int, raw: Any) -> RuleSpec | None:
        """Decode one rule. Unknown keys are reported and dropped so that the rest of the
        rule is still checked; any other problem ends the rule's checks."""
        if not isinstance(raw, dict):
            self.problems.append(located.at(("rules", i), f"rules[{i}]: a rule is a mapping"))
            return None
        name = raw.get("name") if isinstance(raw.get("name"), str) else None
        raw = {"type": "threshold", **raw}
        failed = False
        for _ in range(len(raw)):
            spec, problem = convert(located, raw, ("rules", i), RuleSpec, VOCABULARY, _HINTS)
            if problem is None and failed:  # check the rest, but build nothing
                _RuleBuilder(located, ("rules", i), spec, self, keep=False).build()
                return None
            if problem is None:
                return spec
            failed = True
            message = problem.message
            if name is not None:
                for p in (f"rules[{i}].", f"rules[{i}]: "):
                    message = message.removeprefix(p)
                message = f"rule `{name}`: {message}"
            self.problems.append(Problem(problem.file, problem.line, problem.column, message))
            unknown = re.match(r"unknown key `([^`]*)`(?: \(did you mean `([^`]*)`)?",
                               problem.message)
            if unknown is None or unknown.group(1) not in raw:
                return None
            # go on checking as if the suggestion had been written (the rule stays rejected)
            typo, meant = unknown.groups()
            value = raw.pop(typo)
            if meant is not None and meant not in raw:
                raw[meant] = value
                located.alias(("rules", i, typo), ("rules", i, meant))
        return None

    def _inhibit(self, located: Located, path: tuple[str | int, ...],
                 spec: InhibitRuleSpec) -> None:
        try:
            source = compile_matchers(matchers_from_maps(spec.source_match,
                                                         spec.source_match_re))
            target = compile_matchers(matchers_from_maps(spec.target_match,
                                                         spec.target_match_re))
        except ValueError as exc:
            self.problems.append(located.at(path, f"inhibit rule: {exc}"))
            return
        if not spec.target_match and not spec.target_match_re:
            self.problems.append(located.at(path, "inhibit rule: target_match or "
                                                  "target_match_re is required"))
            return
        self.inhibit.append(InhibitRule(source, target, tuple(spec.equal)))

    def _group_by(self, located: Located, names: tuple[str, ...]) -> None:
        for i, name in enumerate(names):
            if name != "..." and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.problems.append(located.at(("group_by", i),
                                                f"group_by: invalid label name {name!r}"))
        if self.group_by is not None and self.group_by != names:
            self.problems.append(located.at(("group_by",), "group_by differs from the one in "
                                            f"{self.group_by_from}; set it in one file"))
            return
        self.group_by, self.group_by_from = names, located.file


class _RuleBuilder:
    """Semantic checks of one rule spec and the runtime :class:`Rule` built from it."""

    def __init__(self, located: Located, path: tuple[str | int, ...], spec: RuleSpec,
                 loader: _Loader, *, keep: bool = True) -> None:
        self.located, self.path, self.spec, self.loader = located, path, spec, loader
        self.keep = keep  # False: check only, build nothing
        self.count = len(loader.problems)

    def problem(self, sub: tuple[str | int, ...], message: str, *, key: bool = False,
                offset: int | None = None) -> None:
        self.loader.problems.append(self.located.at(
            (*self.path, *sub), f"rule `{self.spec.name}`: {message}", key=key, offset=offset))

    def duration(self, sub: tuple[str | int, ...], value: str | float | None,
                 what: str) -> float | None:
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(sub, f"{what}: {exc}")
            return None

    def expr(self, sub: tuple[str | int, ...], text: str, kind: Kind, what: str
             ) -> Expr | None:
        try:
            e = parse(text, kind=kind)
        except ExprError as exc:
            self.problem(sub, f"{what}: {exc.message}", offset=exc.column)
            return None
        for name in sorted(e.names()):
            if not is_known(name):
                m = re.search(rf"(?<![\w.`]){re.escape(name)}(?![\w.])", text)
                close = suggest(name)
                hint = f" (did you mean `{close}`?)" if close else ""
                self.problem(sub, f"{what}: unknown variable `{name}`{hint}",
                             offset=m.start() + 1 if m else None)
        return e

    def template_names(self, names: frozenset[str], details: frozenset[str]) -> list[str]:
        bad = []
        for name in sorted(names):
            head, _, rest = name.partition(".")
            ok = (
                name in _TEMPLATE_NAMES
                or (head == "labels" and rest != "")
                or (head == "metrics" and is_known(rest))
                or (head == "details" and rest in details)
            )
            if not ok:
                bad.append(name)
        return bad

    def build(self) -> Rule | None:
        spec = self.spec
        name_path = (*self.path, "name")
        if spec.name in self.loader.names:
            self.problem(("name",), f"duplicate rule name (first defined at "
                                    f"{self.loader.names[spec.name]})")
        else:
            node = self.located.nodes.get(name_path)
            where = self.located.file + (f":{node.start_mark.line + 1}" if node else "")
            self.loader.names[spec.name] = where
        for_ = self.duration(("for",), spec.for_, "for")
        keep = self.duration(("keep_firing_for",), spec.keep_firing_for, "keep_firing_for")
        repeat = self.duration(("repeat_interval",), spec.repeat_interval, "repeat_interval")
        if repeat is not None and repeat <= 0:
            self.problem(("repeat_interval",), "repeat_interval must be > 0 (omit it to "
                                               "notify once)")
        for label, why in _RESERVED_LABELS.items():
            if label in spec.labels:
                self.problem(("labels", label), f"label `{label}` is reserved: {why}", key=True)
        match: LabelMatcher | None = None
        for label, pattern in spec.match_re.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                self.problem(("match_re", label), f"invalid regular expression {pattern!r} "
                                                  f"for label {label!r}: {exc}")
        if len(self.loader.problems) == self.count:
            match = compile_matchers(matchers_from_maps(spec.match, spec.match_re))
        condition = self.condition()
        annotations: dict[str, Template] = {}
        details = condition.detail_names if condition is not None else frozenset()
        for key, text in spec.annotations.items():
            try:
                template = parse_template(text)
            except TemplateError as exc:
                self.problem(("annotations", key), f"annotation `{key}`: {exc.message}",
                             offset=exc.column)
                continue
            for bad in self.template_names(template.names(), details):
                m = text.find(bad)
                self.problem(("annotations", key),
                             f"annotation `{key}`: unknown template name `{bad}`",
                             offset=m + 1 if m >= 0 else None)
            annotations[key] = template
        if len(self.loader.problems) > self.count or not self.keep:
            return None
        assert condition is not None and match is not None
        node = self.located.nodes.get(self.path)
        source = self.located.file + (f":{node.start_mark.line + 1}" if node else "")
        return Rule(spec.name, spec.severity, condition, match, for_ or 0.0, keep or 0.0,
                    repeat, dict(spec.labels), annotations, source)

    def condition(self) -> Condition | None:
        spec = self.spec
        if isinstance(spec, ThresholdRuleSpec):
            cond = self.expr(("condition",), spec.condition, "bool", "condition")
            value = None
            if spec.value is not None:
                value = self.expr(("value",), spec.value, "number", "value")
                if value is None:
                    return None
            return ThresholdCondition(cond, value) if cond is not None else None
        if isinstance(spec, ErrorRateBoundRuleSpec):
            errors = self.expr(("errors",), spec.errors, "number", "errors")
            total = self.expr(("total",), spec.total, "number", "total")
            over = self.duration(("over",), spec.over, "over")
            if over is not None and over <= 0:
                self.problem(("over",), "over must be > 0 (omit it to use one window)")
            if errors is None or total is None:
                return None
            return ErrorRateBoundCondition(spec.threshold, z=spec.z, errors=errors, total=total,
                                           over=over or None, min_requests=spec.min_requests)
        if isinstance(spec, VersionComparisonRuleSpec):
            return VersionComparisonCondition(spec.metrics, level=spec.level,
                                              min_samples=spec.min_samples,
                                              margins=spec.margins)
        windows: list[BurnWindow] = []
        for i, w in enumerate(spec.windows):
            long = self.duration(("windows", i, "long"), w.long, "long window")
            short = self.duration(("windows", i, "short"), w.short, "short window")
            if long is None or short is None:
                continue
            if not 0 < short < long:
                self.problem(("windows", i), "windows: need 0 < short < long")
                continue
            windows.append(BurnWindow(long, short, w.burn_rate))
        if len(windows) != len(spec.windows):
            return None
        return BurnRateCondition(spec.objective, windows, sli=spec.sli,
                                 min_requests=spec.min_requests)
