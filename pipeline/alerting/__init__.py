"""Alerting: rules over window metrics and scores, alert lifecycles, silences, inhibition,
grouping and notifiers. Pure: no Kafka, no faust; the only I/O is reading rule files (and
the optional async webhook sender in :mod:`pipeline.alerting.notify.sender`).

Spec, then runtime: YAML rule files decode into typed spec Structs that reject unknown
keys (:mod:`~pipeline.alerting.rules`), which build the :class:`Rule` objects an
:class:`Evaluator` runs window by window, producing :class:`~schemas.alert.AlertEvent`\\ s.
"""

from pipeline.alerting.evaluator import Evaluator
from pipeline.alerting.expr import Expr, ExprError, parse
from pipeline.alerting.grouping import AlertGroup, group
from pipeline.alerting.lifecycle import Lifecycle, Transition, fingerprint
from pipeline.alerting.maths import burn_rate, wilson_lower_bound
from pipeline.alerting.rules import Problem, Rule, RuleError, RuleSet, check, load_rules
from pipeline.alerting.ruletest import RuleTestResult, run_rule_tests
from pipeline.alerting.silences import Silences, new_silence

__all__ = [
    "AlertGroup",
    "Evaluator",
    "Expr",
    "ExprError",
    "Lifecycle",
    "Problem",
    "Rule",
    "RuleError",
    "RuleSet",
    "RuleTestResult",
    "Silences",
    "Transition",
    "burn_rate",
    "check",
    "fingerprint",
    "group",
    "load_rules",
    "new_silence",
    "parse",
    "run_rule_tests",
    "wilson_lower_bound",
]
