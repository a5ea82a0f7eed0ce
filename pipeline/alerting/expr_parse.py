"""Tokenizer and recursive-descent parser of alert expressions: text to a tree of
:mod:`pipeline.alerting.expr_nodes`, or an :class:`ExprError` at the first mistake's column."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.alerting.expr_nodes import (
    _COMPARE,
    FUNCTIONS,
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

__all__ = ["ExprError"]

_MAX_NESTING = 32  # parentheses, ``not``, unary minus and calls inside one another


class ExprError(ValueError):
    """A syntax or type error in an expression, with the 1-based ``column`` it is at."""

    # where users import it from, and what tracebacks and the docs show
    __module__ = "pipeline.alerting.expr"

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
