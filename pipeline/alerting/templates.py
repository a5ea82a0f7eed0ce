"""Tiny, safe annotation templates: ``{{ name }}`` and ``{{ name:format }}``, nothing else.

``name`` is a dotted path into the render context (``value``, ``threshold``,
``labels.model``, ``metrics.requests``, ``details.lower_bound`` …); ``format`` is a Python
format spec for numbers (``.1f``, ``.2%``). There are no expressions, loops, filters or
attribute lookups: rendering is dictionary lookups and :func:`format`. A name with no value
renders as ``<no value>``, like Prometheus.

>>> t = parse_template("p99 of {{ labels.model }} is {{ value }} ms (> {{ threshold:.0f }})")
>>> sorted(t.names())
['labels.model', 'threshold', 'value']
>>> t.render({"labels": {"model": "gpt-chat"}, "value": 2512.5, "threshold": 2000.0})
'p99 of gpt-chat is 2512 ms (> 2000)'
>>> parse_template("rate {{ value:.1% }}").render({"value": 0.0512})
'rate 5.1%'
>>> parse_template("{{ value }").names()
Traceback (most recent call last):
...
pipeline.alerting.templates.TemplateError: unclosed '{{' (expected '}}') at col 1
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["NO_VALUE", "Template", "TemplateError", "format_value", "parse_template"]

NO_VALUE = "<no value>"
_FIELD = re.compile(
    r"\{\{\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*)\s*"
    r"(?::\s*(?P<spec>[^}\s]*)\s*)?\}\}"
)
_SPEC = re.compile(r"[<>=^]?[+\- ]?#?0?\d*[,_]?(?:\.\d+)?[eEfFgG%]?")


class TemplateError(ValueError):
    """A malformed template, with the 1-based ``column`` of the problem."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} at col {column}")
        self.message = message
        self.column = column


def format_value(value: object, spec: str = "") -> str:
    """Text of one value: numbers compactly (``2500``, ``0.05123``), or per ``spec``.

    >>> format_value(2500.0), format_value(0.051234), format_value(14.4), format_value(None)
    ('2500', '0.05123', '14.4', '<no value>')
    """
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        x = float(value)
        if spec:
            return format(x, spec)
        if not math.isfinite(x):
            return str(x)
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.1f}" if abs(x) >= 1e4 else f"{x:.4g}"
    return str(value)


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and fields, alternating."""

    text: str
    parts: tuple[str | tuple[str, str], ...]  # literal, or (name, format spec)

    def names(self) -> frozenset[str]:
        """Every name the template reads."""
        return frozenset(p[0] for p in self.parts if isinstance(p, tuple))

    def render(self, context: Mapping[str, object]) -> str:
        """The text with every field replaced by its value in ``context``."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                name, spec = part
                value = _lookup(context, name)
                try:
                    out.append(format_value(value, spec))
                except (TypeError, ValueError):  # a number spec on a string
                    out.append(format_value(value))
        return "".join(out)


def _lookup(context: Mapping[str, object], name: str) -> object:
    """``labels.model`` → ``context["labels"]["model"]``; ``metrics.drift.js.x`` →
    ``context["metrics"]["drift.js.x"]`` (a mapping's keys may contain dots)."""
    head, _, rest = name.partition(".")
    value = context.get(head)
    if not rest:
        return value
    while isinstance(value, Mapping):
        if rest in value:
            return value[rest]
        head, _, rest = rest.partition(".")
        if not rest:
            return value.get(head)
        value = value.get(head)
    return None


def parse_template(text: str) -> Template:
    """Parse ``text``; raises :class:`TemplateError` for a malformed ``{{ … }}``."""
    parts: list[str | tuple[str, str]] = []
    pos = 0
    while (start := text.find("{{", pos)) >= 0:
        if start > pos:
            parts.append(text[pos:start])
        end = text.find("}}", start)
        if end < 0:
            raise TemplateError("unclosed '{{' (expected '}}')", start + 1)
        m = _FIELD.fullmatch(text, start, end + 2)
        if not m:
            inner = text[start + 2:end].strip()
            raise TemplateError(
                f"invalid field {{{{ {inner} }}}}: write {{{{ name }}}} or {{{{ name:.2f }}}}",
                start + 1,
            )
        spec = m.group("spec") or ""
        if spec and not _SPEC.fullmatch(spec):
            raise TemplateError(f"invalid number format {spec!r}", start + 1)
        parts.append((m.group("name"), spec))
        pos = end + 2
    if pos < len(text):
        parts.append(text[pos:])
    return Template(text, tuple(parts))
