"""A small, safe expression language for alert conditions. No ``eval``, ``exec`` or ``compile``.

Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum ((">" | ">=" | "<" | "<=" | "==" | "!=") sum)?
    sum     := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := "-" unary | primary
    primary := NUMBER | NAME | FUNC "(" expr ("," expr)* ")" | "(" expr ")"

A NAME is one identifier, dots included: ``drift.js.feature.prompt_length`` is a single
variable looked up in the mapping the expression is evaluated against, never an attribute
access. A name that is not a plain identifier (``feature_usage.app-flag.on``) is written in
backquotes. The only functions are ``abs``, ``min`` and ``max``. There are no strings, no
indexing, no attribute access and no user-defined calls, so an expression can do nothing
but arithmetic and comparisons on numbers.

Types are checked when parsing: comparisons take numbers and give true/false; ``and``,
``or`` and ``not`` take true/false; arithmetic takes numbers.

Missing data: a variable that is absent from the mapping or ``None`` (e.g. no latency in
the window), a division by zero and NaN make the expression *unknown* (``None``).
Unknown propagates through arithmetic and comparisons; ``and`` / ``or`` use three-valued
logic (``false and unknown`` is false, ``true or unknown`` is true); ``not unknown`` is
unknown. A condition that is unknown does not hold. Check time catches misspelt names:
:meth:`Expr.names` lists the variables so ``rules check`` can validate them.

This module is the language's public face; the tokenizer and parser are in
:mod:`pipeline.alerting.expr_parse`, the tree and the closures it compiles to in
:mod:`pipeline.alerting.expr_nodes`.

>>> e = parse("error_rate > 0.05 and requests >= 50")
>>> e.evaluate({"error_rate": 0.2, "requests": 80})
True
>>> e.evaluate({"error_rate": 0.2, "requests": 10})
False
>>> print(e.evaluate({"requests": 80}))  # error_rate unknown
None
>>> sorted(e.names())
['error_rate', 'requests']
>>> parse("drift.js.feature.prompt_length > 0.2").evaluate({"drift.js.feature.prompt_length": 0.3})
True
>>> parse("p99_latency_ms >> 2000")
Traceback (most recent call last):
...
pipeline.alerting.expr.ExprError: expected a number, a name or '(', got '>' at col 17
"""

from __future__ import annotations

from pipeline.alerting.expr_nodes import (
    _COMPARE,
    FUNCTIONS,
    Fn,
    Kind,
    _Binary,
    _Call,
    _Logic,
    _Neg,
    _Node,
    _Not,
    _Num,
    _Var,
)
from pipeline.alerting.expr_nodes import Value as Value  # re-exported, as before the split
from pipeline.alerting.expr_parse import _NAME, ExprError, _Parser

__all__ = ["FUNCTIONS", "MAX_DEPTH", "MAX_LENGTH", "Expr", "ExprError", "Kind", "parse"]

MAX_LENGTH = 2000  # characters of one expression
MAX_DEPTH = 64  # depth of the syntax tree (bounds recursion when evaluating)


class Expr:
    """A parsed expression: ``evaluate(mapping)`` gives its value, or ``None`` when
    unknown (see the module doc).

    >>> e = parse("max(latency_p99_ms, ttft_p99_ms) / 1000 >= 2")
    >>> e.kind, e.evaluate({"latency_p99_ms": 2500, "ttft_p99_ms": 300})
    ('bool', True)
    >>> lhs, rhs = e.first_comparison()
    >>> lhs.evaluate({"latency_p99_ms": 2500, "ttft_p99_ms": 300}), rhs.text
    (2.5, '2')
    """

    __slots__ = ("_root", "evaluate", "text")

    def __init__(self, text: str, root: _Node) -> None:
        self.text = text
        self._root = root
        self.evaluate: Fn = root.function()  # a plain function: one call per evaluation

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    @property
    def kind(self) -> Kind:
        """``"bool"`` for a condition, ``"number"`` for a value."""
        return self._root.kind  # type: ignore[return-value]

    def names(self) -> frozenset[str]:
        """Every variable the expression reads."""
        return frozenset(self._root.names())

    def first_comparison(self) -> tuple[Expr, Expr] | None:
        """Left and right side of the leftmost comparison: what an alert reports as its
        value and threshold (``error_rate > 0.05 and …`` → ``error_rate``, ``0.05``)."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Binary) and node.op in _COMPARE:
                return self._sub(node.left), self._sub(node.right)
            if isinstance(node, _Logic):
                stack.extend((node.right, node.left))
            elif isinstance(node, _Not):
                stack.append(node.operand)
        return None

    def _sub(self, node: _Node) -> Expr:
        return Expr(_render(node), node)


def _render(node: _Node) -> str:
    """Canonical text of a sub-expression (for reports; fully parenthesised)."""
    if isinstance(node, _Num):
        return f"{node.value:g}"
    if isinstance(node, _Var):
        return node.name if _NAME.fullmatch(node.name) else f"`{node.name}`"
    if isinstance(node, _Neg):
        return f"-{_render(node.operand)}"
    if isinstance(node, _Not):
        return f"not {_render(node.operand)}"
    if isinstance(node, _Call):
        return f"{node.fn}({', '.join(_render(a) for a in node.args)})"
    if isinstance(node, _Binary | _Logic):
        left, right = _render(node.left), _render(node.right)
        if isinstance(node.left, _Binary | _Logic):
            left = f"({left})"
        if isinstance(node.right, _Binary | _Logic):
            right = f"({right})"
        return f"{left} {node.op} {right}"
    raise TypeError(node)  # pragma: no cover


def _children(node: _Node) -> tuple[_Node, ...]:
    if isinstance(node, _Binary | _Logic):
        return (node.left, node.right)
    if isinstance(node, _Neg | _Not):
        return (node.operand,)
    if isinstance(node, _Call):
        return tuple(node.args)
    return ()


def _depth(root: _Node) -> int:
    """Depth of the tree, computed without recursion."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in _children(node))
    return deepest


def parse(text: str, *, kind: Kind | None = None) -> Expr:
    """Parse ``text``; with ``kind``, also require a condition (``"bool"``) or a value.

    Raises :class:`ExprError` with the column and what is wrong.

    >>> parse("requests", kind="bool")
    Traceback (most recent call last):
    ...
    pipeline.alerting.expr.ExprError: expected a condition (a comparison), got a number at col 1
    """
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH, text)
    root = _Parser(text).parse()
    if _depth(root) > MAX_DEPTH:
        raise ExprError(f"expression deeper than {MAX_DEPTH} operators", root.col, text)
    if kind is not None and root.kind != kind:
        want = "a condition (a comparison)" if kind == "bool" else "a number"
        got = "a number" if root.kind == "number" else "a condition"
        raise ExprError(f"expected {want}, got {got}", root.col, text)
    return Expr(text, root)
