"""The rule file's YAML shape as typed spec Structs: unknown keys rejected, bounds on
every field. :mod:`pipeline.alerting.rules` converts files to these, then builds rules."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from pipeline.alerting.conditions.version_comparison import METRICS as COMPARED
from schemas.alert import Severity

__all__ = [
    "VOCABULARY",
    "BurnRateRuleSpec",
    "BurnWindowSpec",
    "ComparedMetric",
    "ErrorRateBoundRuleSpec",
    "FileShape",
    "InhibitRuleSpec",
    "RuleFileSpec",
    "RuleSpec",
    "ThresholdRuleSpec",
    "VersionComparisonRuleSpec",
]

LabelName = Annotated[str, msgspec.Meta(pattern="^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
RuleName = Annotated[str, msgspec.Meta(pattern="^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
Duration = str | float  # "5m", "1h30m" or seconds; parsed when the rule is built
Labels = dict[LabelName, Annotated[str, msgspec.Meta(max_length=1024)]]
Ratio = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
ComparedMetric = Literal["error_rate", "latency_ms", "accuracy", "satisfaction",
                         "thumbs_down_rate"]


class _Spec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class _RuleSpecBase(_Spec, tag_field="type"):
    name: RuleName
    severity: Severity
    match: Labels = {}
    match_re: Labels = {}
    for_: Duration = msgspec.field(default=0.0, name="for")
    keep_firing_for: Duration = 0.0
    repeat_interval: Duration | None = None
    labels: Labels = {}
    annotations: dict[LabelName, Annotated[str, msgspec.Meta(max_length=4096)]] = {}


class ThresholdRuleSpec(_RuleSpecBase, tag="threshold", kw_only=True):
    """``condition`` on one window; ``value`` is what the alert reports."""

    condition: str
    value: str | None = None


class ErrorRateBoundRuleSpec(_RuleSpecBase, tag="error_rate_bound", kw_only=True):
    """Wilson lower bound of ``errors / total`` above ``threshold``."""

    threshold: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)]
    z: Annotated[float, msgspec.Meta(gt=0.0, le=10.0)] = 1.96
    over: Duration | None = None
    min_requests: Annotated[int, msgspec.Meta(ge=0)] = 0
    errors: str = "errors"
    total: str = "requests"


class BurnWindowSpec(_Spec, kw_only=True):
    """One multi-window condition: both windows burn faster than ``burn_rate``."""

    long: Duration
    short: Duration
    burn_rate: Annotated[float, msgspec.Meta(gt=0.0)]


_SRE_WINDOWS = [
    BurnWindowSpec(long="1h", short="5m", burn_rate=14.4),
    BurnWindowSpec(long="6h", short="30m", burn_rate=6.0),
]


class BurnRateRuleSpec(_RuleSpecBase, tag="burn_rate", kw_only=True):
    """Multi-window, multi-burn-rate alert on an SLO of ``objective``."""

    objective: Ratio
    sli: Literal["errors", "latency"] = "errors"
    windows: Annotated[list[BurnWindowSpec], msgspec.Meta(min_length=1, max_length=8)] = \
        msgspec.field(default_factory=lambda: list(_SRE_WINDOWS))
    min_requests: Annotated[int, msgspec.Meta(ge=0)] = 0


class VersionComparisonRuleSpec(_RuleSpecBase, tag="version_comparison", kw_only=True):
    """A candidate model version worse than the baseline beside it (docs/quality.md)."""

    metrics: Annotated[list[ComparedMetric], msgspec.Meta(min_length=1)] = \
        msgspec.field(default_factory=lambda: list(COMPARED))
    level: Ratio = 0.95
    min_samples: Annotated[int, msgspec.Meta(ge=1)] = 200
    margins: dict[ComparedMetric, Annotated[float, msgspec.Meta(ge=0.0)]] = {}


RuleSpec = (ThresholdRuleSpec | ErrorRateBoundRuleSpec | BurnRateRuleSpec
            | VersionComparisonRuleSpec)


class InhibitRuleSpec(_Spec, kw_only=True):
    """Alerts matching ``target_*`` are muted while one matching ``source_*`` fires with
    the same values of the ``equal`` labels."""

    source_match: Labels = {}
    source_match_re: Labels = {}
    target_match: Labels = {}
    target_match_re: Labels = {}
    equal: list[LabelName] = []


class RuleFileSpec(_Spec, kw_only=True):
    """One rule file."""

    rules: list[RuleSpec] = []
    group_by: list[str] | None = None
    inhibit_rules: list[InhibitRuleSpec] = []


class FileShape(_Spec, kw_only=True):
    """A file's top level only: its rules checked one by one after."""

    rules: list[Any] = []
    group_by: list[str] | None = None
    inhibit_rules: list[Any] = []


def _vocabulary() -> frozenset[str]:
    names: set[str] = {"type"}
    for t in (FileShape, ThresholdRuleSpec, ErrorRateBoundRuleSpec, BurnRateRuleSpec,
              VersionComparisonRuleSpec, BurnWindowSpec, InhibitRuleSpec):
        names.update(t.__struct_encode_fields__)
    return frozenset(names)


VOCABULARY = _vocabulary()
