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

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["FUNCTIONS", "MAX_DEPTH", "MAX_LENGTH", "Expr", "ExprError", "Kind", "parse"]

MAX_LENGTH = 2000  # characters of one expression
MAX_DEPTH = 64  # depth of the syntax tree (bounds recursion when evaluating)
_MAX_NESTING = 32  # parentheses, ``not``, unary minus and calls inside one another

Kind = Literal["bool", "number"]
Value = float | bool | None


class ExprError(ValueError):
    """A syntax or type error in an expression, with the 1-based ``column`` it is at."""

    def __init__(self, message: str, column: int, text: str = "") -> None:
        super().__init__(f"{message} at col {column}")
        self.message = message
        self.column = column
        self.text = text

    def caret(self) -> str:
        """The expression with a ``^`` under the offending column."""
        return f"{self.text}\n{' ' * (self.column - 1)}^"


# --------------------------------------------------------------------------- tokens
@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "name", "op", "end"
    text: str
    col: int  # 1-based
    value: float = 0.0


_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_QUOTED = re.compile(r"`([^`\s]+)`")
_OPS = (">=", "<=", "==", "!=", ">", "<", "+", "-", "*", "/", "(", ")", ",")
_HINTS = {
    "&&": "use 'and' instead of '&&'",
    "||": "use 'or' instead of '||'",
    "=": "use '==' to compare",
    "!": "use 'not' instead of '!'",
    "'": "strings are not supported",
    '"': "strings are not supported",
    "[": "indexing is not supported",
    ".": "attribute access is not supported",
}
_KEYWORDS = frozenset({"and", "or", "not"})


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        col = i + 1
        if m := _NUMBER.match(text, i):
            end = m.end()
            if end < n and (text[end].isalpha() or text[end] == "_"):
                raise ExprError(f"invalid number {text[i:end + 1]!r}", col, text)
            tokens.append(_Token("num", m.group(), col, float(m.group())))
            i = end
            continue
        if m := _NAME.match(text, i):
            name = m.group()
            end = m.end()
            if end < n and text[end] == ".":
                raise ExprError("attribute access is not supported", end + 1, text)
            if any(part.startswith("__") for part in name.split(".")):
                raise ExprError(f"names may not start with '__': {name!r}", col, text)
            tokens.append(_Token("op" if name in _KEYWORDS else "name", name, col))
            i = end
            continue
        if ch == "`":
            if not (m := _QUOTED.match(text, i)):
                raise ExprError("unterminated or empty `quoted name`", col, text)
            tokens.append(_Token("name", m.group(1), col))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append(_Token("op", op, col))
                i += len(op)
                break
        else:
            two = text[i:i + 2]
            hint = _HINTS.get(two) or _HINTS.get(ch) or f"unexpected character {ch!r}"
            raise ExprError(hint, col, text)
    tokens.append(_Token("end", "", n + 1))
    return tokens


# --------------------------------------------------------------------------- AST
# Each node compiles once, at parse time, into a closure over its children's closures
# (plain Python functions: no ``eval``), so evaluating an expression is one call per node
# and a comparison of a variable with a number is a single call.
Fn = Callable[[Mapping[str, object]], Value]


def _number(value: object) -> float | None:
    """A variable's value as a number, or ``None`` (missing, not a number, NaN)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) else value


class _Node:
    __slots__ = ("col", "kind")

    def function(self) -> Fn:  # pragma: no cover - abstract
        raise NotImplementedError

    def names(self) -> set[str]:
        return set()


class _Num(_Node):
    __slots__ = ("value",)

    def __init__(self, value: float, col: int) -> None:
        self.value, self.col, self.kind = value, col, "number"

    def function(self) -> Fn:
        value = self.value
        return lambda env: value


class _Var(_Node):
    __slots__ = ("name",)

    def __init__(self, name: str, col: int) -> None:
        self.name, self.col, self.kind = name, col, "number"

    def function(self) -> Fn:
        name = self.name

        def var(env: Mapping[str, object]) -> Value:
            try:
                value = env[name]
            except KeyError:
                return None
            if value.__class__ is float:  # the usual case, checked cheaply
                return None if value != value else value  # type: ignore[return-value]
            return _number(value)

        return var

    def names(self) -> set[str]:
        return {self.name}


class _Neg(_Node):
    __slots__ = ("operand",)

    def __init__(self, operand: _Node, col: int) -> None:
        self.operand, self.col, self.kind = operand, col, "number"

    def function(self) -> Fn:
        operand = self.operand.function()

        def neg(env: Mapping[str, object]) -> Value:
            v = operand(env)
            return None if v is None else -v

        return neg

    def names(self) -> set[str]:
        return self.operand.names()


def _div(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


_ARITH: dict[str, Callable[[float, float], float | None]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _div,
}
_INVERSE = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class _Binary(_Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: _Node, right: _Node, col: int) -> None:
        self.op, self.left, self.right, self.col = op, left, right, col
        self.kind = "bool" if op in _COMPARE else "number"

    def function(self) -> Fn:
        constant = self.right.value if isinstance(self.right, _Num) else None
        if self.op in _COMPARE:
            compare = _COMPARE[self.op]
            if isinstance(self.left, _Var) and constant is not None:
                return _compare_var(self.left.name, compare, constant)
            if constant is not None:
                left = self.left
                if (isinstance(left, _Binary) and left.op in _ARITH and left.op != "/"
                        and isinstance(left.left, _Var) and isinstance(left.right, _Num)):
                    return _compare_arithmetic_var(left.left.name, _ARITH[left.op],
                                                   left.right.value, compare, constant)
                return _compare_constant(left.function(), compare, constant)
            left, right = self.left.function(), self.right.function()

            def comparison(env: Mapping[str, object]) -> Value:
                a = left(env)
                if a is None:
                    return None
                b = right(env)
                return None if b is None else compare(a, b)  # type: ignore[arg-type]

            return comparison
        arith = _ARITH[self.op]
        if constant is not None and self.op != "/":  # x * 2, x + 1: never divides by 0
            if isinstance(self.left, _Var):
                return _compare_arithmetic_var(self.left.name, arith, constant, None, 0.0)
            return _arithmetic_constant(self.left.function(), arith, constant)
        left, right = self.left.function(), self.right.function()

        def arithmetic(env: Mapping[str, object]) -> Value:
            a = left(env)
            if a is None:
                return None
            b = right(env)
            if b is None:
                return None
            out = arith(a, b)  # type: ignore[arg-type]
            return None if out is None or out != out else out  # NaN: unknown

        return arithmetic

    def names(self) -> set[str]:
        return self.left.names() | self.right.names()


def _compare_constant(left: Fn, compare: Callable[[float, float], bool], threshold: float
                      ) -> Fn:
    def comparison(env: Mapping[str, object]) -> Value:
        a = left(env)
        return None if a is None else compare(a, threshold)  # type: ignore[arg-type]

    return comparison


def _arithmetic_constant(left: Fn, arith: Callable[[float, float], float | None],
                         constant: float) -> Fn:
    def arithmetic(env: Mapping[str, object]) -> Value:
        a = left(env)
        if a is None:
            return None
        out = arith(a, constant)  # type: ignore[arg-type]
        return None if out != out else out  # NaN (inf - inf): unknown

    return arithmetic


def _compare_arithmetic_var(name: str, arith: Callable[[float, float], float | None],
                            constant: float, compare: Callable[[float, float], bool] | None,
                            threshold: float) -> Fn:
    """``name <+-*> number``, compared with a number unless ``compare`` is None."""

    def arithmetic(env: Mapping[str, object]) -> Value:
        try:
            value = env[name]
        except KeyError:
            return None
        if value.__class__ is not float:
            value = _number(value)
            if value is None:
                return None
        elif value != value:  # NaN
            return None
        out = arith(value, constant)  # type: ignore[arg-type]
        if out != out:  # NaN (inf - inf): unknown
            return None
        return out if compare is None else compare(out, threshold)  # type: ignore[arg-type]

    return arithmetic


def _compare_var(name: str, compare: Callable[[float, float], bool], threshold: float) -> Fn:
    """``name <op> number``, the commonest condition, in one call."""

    def comparison(env: Mapping[str, object]) -> Value:
        try:
            value = env[name]
        except KeyError:
            return None
        if value.__class__ is not float:
            value = _number(value)
            if value is None:
                return None
        elif value != value:  # NaN
            return None
        return compare(value, threshold)  # type: ignore[arg-type]

    return comparison


class _Logic(_Node):
    """``and`` / ``or`` in three-valued (Kleene) logic, short-circuiting."""

    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: _Node, right: _Node, col: int) -> None:
        self.op, self.left, self.right, self.col, self.kind = op, left, right, col, "bool"

    def function(self) -> Fn:
        simple = [_simple_comparison(n) for n in (self.left, self.right)]
        if simple[0] is not None and simple[1] is not None:
            return _logic_of_comparisons(self.op == "or", simple[0], simple[1])
        left, right = self.left.function(), self.right.function()
        if self.op == "and":
            def both(env: Mapping[str, object]) -> Value:
                a = left(env)
                if a is False:
                    return False
                b = right(env)
                if b is False:
                    return False
                return None if a is None or b is None else True

            return both

        def either(env: Mapping[str, object]) -> Value:
            a = left(env)
            if a is True:
                return True
            b = right(env)
            if b is True:
                return True
            return None if a is None or b is None else False

        return either

    def names(self) -> set[str]:
        return self.left.names() | self.right.names()


def _simple_comparison(node: _Node) -> tuple[str, Callable[[float, float], bool], float] | None:
    """(name, compare, number) of ``name <op> number`` (``not`` of one, inverted)."""
    if isinstance(node, _Not) and isinstance(node.operand, _Binary) \
            and node.operand.op in _INVERSE:
        node = _Binary(_INVERSE[node.operand.op], node.operand.left, node.operand.right,
                       node.col)
    if (isinstance(node, _Binary) and node.op in _COMPARE and isinstance(node.left, _Var)
            and isinstance(node.right, _Num)):
        return node.left.name, _COMPARE[node.op], node.right.value
    return None


def _logic_of_comparisons(decisive: bool,
                          first: tuple[str, Callable[[float, float], bool], float],
                          second: tuple[str, Callable[[float, float], bool], float]) -> Fn:
    """``a <op> x and b <op> y`` (``or``: ``decisive`` True), in one call."""
    name_a, compare_a, threshold_a = first
    name_b, compare_b, threshold_b = second

    def logic(env: Mapping[str, object]) -> Value:
        try:
            value = env[name_a]
        except KeyError:
            value = None
        if value.__class__ is not float:
            value = _number(value)
        elif value != value:
            value = None
        a = None if value is None else compare_a(value, threshold_a)  # type: ignore[arg-type]
        if a is decisive:
            return decisive
        try:
            value = env[name_b]
        except KeyError:
            value = None
        if value.__class__ is not float:
            value = _number(value)
        elif value != value:
            value = None
        b = None if value is None else compare_b(value, threshold_b)  # type: ignore[arg-type]
        if b is decisive:
            return decisive
        return None if a is None or b is None else not decisive

    return logic


class _Not(_Node):
    __slots__ = ("operand",)

    def __init__(self, operand: _Node, col: int) -> None:
        self.operand, self.col, self.kind = operand, col, "bool"

    def function(self) -> Fn:
        node = self.operand
        if isinstance(node, _Binary) and node.op in _INVERSE:
            # operands are never NaN (unknown instead), so not (a < b) is a >= b
            return _Binary(_INVERSE[node.op], node.left, node.right, node.col).function()
        operand = node.function()

        def negation(env: Mapping[str, object]) -> Value:
            v = operand(env)
            return None if v is None else not v

        return negation

    def names(self) -> set[str]:
        return self.operand.names()


def _fn_abs(*xs: float) -> float:
    return abs(xs[0])


FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., float]]] = {
    # name: (min args, max args or None, implementation on floats)
    "abs": (1, 1, _fn_abs),
    "min": (2, None, min),
    "max": (2, None, max),
}


class _Call(_Node):
    __slots__ = ("args", "fn")

    def __init__(self, fn: str, args: list[_Node], col: int) -> None:
        self.fn, self.args, self.col, self.kind = fn, args, col, "number"

    def function(self) -> Fn:
        args = [a.function() for a in self.args]
        fn = FUNCTIONS[self.fn][2]
        if len(args) == 2 and isinstance(self.args[0], _Var) and isinstance(self.args[1], _Num):
            name, constant = self.args[0].name, self.args[1].value  # max(x, 0)

            def call_var(env: Mapping[str, object]) -> Value:
                try:
                    value = env[name]
                except KeyError:
                    return None
                if value.__class__ is not float:
                    value = _number(value)
                    if value is None:
                        return None
                elif value != value:  # NaN
                    return None
                return fn(value, constant)

            return call_var
        if len(args) == 2:  # min(a, b), max(a, b)
            first, second = args

            def call2(env: Mapping[str, object]) -> Value:
                a = first(env)
                if a is None:
                    return None
                b = second(env)
                return None if b is None else fn(a, b)

            return call2

        def call(env: Mapping[str, object]) -> Value:
            values = [a(env) for a in args]
            if None in values:
                return None
            return fn(*values)

        return call

    def names(self) -> set[str]:
        return set().union(*(a.names() for a in self.args))


# --------------------------------------------------------------------------- parser
_CMP_OPS = frozenset(_COMPARE)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    # helpers
    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def error(self, message: str, col: int | None = None) -> ExprError:
        return ExprError(message, self.tok.col if col is None else col, self.text)

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at(self, *texts: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in texts

    def expect(self, text: str) -> _Token:
        if not self.at(text):
            got = "the end" if self.tok.kind == "end" else repr(self.tok.text)
            raise self.error(f"expected {text!r}, got {got}")
        return self.take()

    def need(self, node: _Node, kind: Kind, what: str) -> _Node:
        if node.kind != kind:
            want = "true/false (a comparison)" if kind == "bool" else "a number"
            got = "a comparison" if node.kind == "bool" else "a number"
            raise self.error(f"{what} needs {want}, got {got}", node.col)
        return node

    def nest(self) -> None:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise self.error(f"expression nested deeper than {_MAX_NESTING}")

    # grammar
    def parse(self) -> _Node:
        if not self.text.strip():
            raise ExprError("empty expression", 1, self.text)
        node = self.or_()
        if self.tok.kind != "end":
            if self.at(*_CMP_OPS):
                raise self.error("chained comparisons are not supported; join them with 'and'")
            raise self.error(f"unexpected {self.tok.text!r}")
        return node

    def or_(self) -> _Node:
        node = self.and_()
        while self.at("or"):
            tok = self.take()
            self.need(node, "bool", "'or'")
            right = self.need(self.and_(), "bool", "'or'")
            node = _Logic("or", node, right, tok.col)
        return node

    def and_(self) -> _Node:
        node = self.not_()
        while self.at("and"):
            tok = self.take()
            self.need(node, "bool", "'and'")
            right = self.need(self.not_(), "bool", "'and'")
            node = _Logic("and", node, right, tok.col)
        return node

    def not_(self) -> _Node:
        if self.at("not"):
            tok = self.take()
            self.nest()
            operand = self.need(self.not_(), "bool", "'not'")
            self.depth -= 1
            return _Not(operand, tok.col)
        return self.compare()

    def compare(self) -> _Node:
        node = self.sum_()
        if self.at(*_CMP_OPS):
            tok = self.take()
            self.need(node, "number", repr(tok.text))
            right = self.need(self.sum_(), "number", repr(tok.text))
            node = _Binary(tok.text, node, right, tok.col)
        return node

    def sum_(self) -> _Node:
        node = self.term()
        while self.at("+", "-"):
            tok = self.take()
            self.need(node, "number", repr(tok.text))
            node = _Binary(tok.text, node, self.need(self.term(), "number", repr(tok.text)),
                           tok.col)
        return node

    def term(self) -> _Node:
        node = self.unary()
        while self.at("*", "/"):
            tok = self.take()
            self.need(node, "number", repr(tok.text))
            node = _Binary(tok.text, node, self.need(self.unary(), "number", repr(tok.text)),
                           tok.col)
        return node

    def unary(self) -> _Node:
        if self.at("-"):
            tok = self.take()
            self.nest()
            operand = self.need(self.unary(), "number", "'-'")
            self.depth -= 1
            return _Neg(operand, tok.col)
        return self.primary()

    def primary(self) -> _Node:
        tok = self.tok
        if tok.kind == "num":
            self.take()
            return _Num(tok.value, tok.col)
        if tok.kind == "name":
            self.take()
            if self.at("("):
                return self.call(tok)
            return _Var(tok.text, tok.col)
        if self.at("("):
            self.take()
            self.nest()
            node = self.or_()
            self.depth -= 1
            self.expect(")")
            return node
        got = "the end" if tok.kind == "end" else repr(tok.text)
        raise self.error(f"expected a number, a name or '(', got {got}")

    def call(self, name: _Token) -> _Node:
        if name.text not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise self.error(f"unknown function {name.text!r} (allowed: {allowed})", name.col)
        self.expect("(")
        self.nest()
        args = [self.need(self.or_(), "number", f"{name.text}()")]
        while self.at(","):
            self.take()
            args.append(self.need(self.or_(), "number", f"{name.text}()"))
        self.depth -= 1
        self.expect(")")
        lo, hi, _ = FUNCTIONS[name.text]
        if len(args) < lo or (hi is not None and len(args) > hi):
            count = str(lo) if lo == hi else f"at least {lo}"
            raise self.error(f"{name.text}() takes {count} argument(s), got {len(args)}",
                             name.col)
        return _Call(name.text, args, name.col)


# --------------------------------------------------------------------------- public
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
