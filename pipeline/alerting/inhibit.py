"""Inhibition: a firing alert matching an inhibit rule's source mutes alerts matching its
target that have equal values for the rule's ``equal`` labels (Alertmanager semantics: a
label missing on both sides counts as equal; an alert never inhibits itself).

Typical: a firing ``critical`` alert mutes the ``warning`` alerts of the same model.

>>> from pipeline.alerting.matchers import compile_matchers, parse_matcher
>>> rule = InhibitRule(source=compile_matchers([parse_matcher("severity=critical")]),
...                    target=compile_matchers([parse_matcher("severity=warning")]),
...                    equal=("model",))
>>> firing = {"f1": {"alertname": "Down", "severity": "critical", "model": "m"}}
>>> inhibited_by({"alertname": "Slow", "severity": "warning", "model": "m"}, "f2",
...              [rule], firing)
['f1']
>>> inhibited_by({"alertname": "Slow", "severity": "warning", "model": "other"}, "f3",
...              [rule], firing)
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.alerting.matchers import LabelMatcher

__all__ = ["InhibitRule", "inhibited_by"]


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """Source and target matchers on alert labels, and the labels that must be equal."""

    source: LabelMatcher
    target: LabelMatcher
    equal: tuple[str, ...] = ()

    def mutes(self, source: Mapping[str, str], target: Mapping[str, str]) -> bool:
        """Whether a firing alert with labels ``source`` mutes one with labels ``target``."""
        return (
            self.target.matches(target)
            and self.source.matches(source)
            and all(source.get(n, "") == target.get(n, "") for n in self.equal)
        )


def inhibited_by(
    labels: Mapping[str, str],
    fingerprint: str,
    rules: Iterable[InhibitRule],
    firing: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """Fingerprints of the ``firing`` alerts (fingerprint → labels) that mute this alert."""
    out: list[str] = []
    for rule in rules:
        if not rule.target.matches(labels):
            continue
        out.extend(fp for fp, source in firing.items()
                   if fp != fingerprint and fp not in out and rule.mutes(source, labels))
    return sorted(out)
