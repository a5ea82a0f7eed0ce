"""Label matchers (``model=gpt-chat``, ``region=~eu-.*``), shared by rules, silences and
inhibition. Regular expressions are anchored at both ends; a missing label is ``""``.

>>> m = compile_matchers([parse_matcher("model=gpt-chat"), parse_matcher('region=~"eu-.*"')])
>>> m.matches({"model": "gpt-chat", "region": "eu-west"}), m.matches({"model": "gpt-chat"})
(True, False)
>>> parse_matcher("model ~ x")
Traceback (most recent call last):
...
ValueError: invalid matcher 'model ~ x': write name=value, name!=value, name=~regex or name!~regex
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.alert import Matcher

__all__ = ["LabelMatcher", "compile_matchers", "matchers_from_maps", "parse_matcher"]

_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")


def parse_matcher(text: str) -> Matcher:
    """``name op value`` with op one of ``=``, ``!=``, ``=~``, ``!~``; the value may be
    double-quoted. Raises ``ValueError`` (also for an invalid regular expression)."""
    m = _MATCHER.fullmatch(text)
    if not m:
        raise ValueError(f"invalid matcher {text!r}: write name=value, name!=value, "
                         "name=~regex or name!~regex")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"')
    matcher = Matcher(name=name, op=op, value=value)  # type: ignore[arg-type]
    compile_matchers([matcher])  # validate the regex now
    return matcher


def matchers_from_maps(
    match: Mapping[str, str] | None = None, match_re: Mapping[str, str] | None = None
) -> list[Matcher]:
    """Matchers from the ``match`` (equality) and ``match_re`` (regex) maps of a rule."""
    out = [Matcher(name=k, op="=", value=v) for k, v in sorted((match or {}).items())]
    out += [Matcher(name=k, op="=~", value=v) for k, v in sorted((match_re or {}).items())]
    return out


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    """Compiled matchers: :meth:`matches` is true when every one matches."""

    matchers: tuple[Matcher, ...]
    _tests: tuple[tuple[str, bool, re.Pattern[str] | str], ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        for name, negate, test in self._tests:
            value = labels.get(name, "")
            hit = test.fullmatch(value) is not None if isinstance(test, re.Pattern) else \
                value == test
            if hit == negate:
                return False
        return True

    def matches_empty(self) -> bool:
        """Whether labels with none of the names match (a silence must not match all)."""
        return self.matches({})


def compile_matchers(matchers: Iterable[Matcher]) -> LabelMatcher:
    """Compile ``matchers``; raises ``ValueError`` naming a bad regular expression."""
    ms = tuple(matchers)
    tests: list[tuple[str, bool, re.Pattern[str] | str]] = []
    for m in ms:
        if m.op in ("=~", "!~"):
            try:
                pattern: re.Pattern[str] | str = re.compile(m.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {m.value!r} for label "
                                 f"{m.name!r}: {exc}") from None
        else:
            pattern = m.value
        tests.append((m.name, m.op.startswith("!"), pattern))
    return LabelMatcher(ms, tuple(tests))
