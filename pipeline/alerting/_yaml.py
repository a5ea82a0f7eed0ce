"""YAML with positions: PyYAML's composer builds the node tree, we build plain data from it
and remember where every value and key was, so validation errors name file, line and
column. Also: msgspec validation errors translated to those positions."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import yaml

__all__ = ["Located", "Problem", "YamlProblem", "convert", "load_yaml", "position_in"]

Path = tuple[str | int, ...]
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong in a file; ``line`` and ``column`` are 1-based (``None``: whole file).

    >>> str(Problem("rules.yml", 7, 5, "unknown key `sevrity` (did you mean `severity`?)"))
    'rules.yml:7:5: unknown key `sevrity` (did you mean `severity`?)'
    """

    file: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class YamlProblem(ValueError):
    """The YAML text itself is unusable (syntax error, duplicate key …)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(slots=True)
class Located:
    """Plain data of a YAML document plus the nodes of every value and mapping key."""

    file: str
    data: Any
    nodes: dict[Path, yaml.Node] = field(default_factory=dict)
    keys: dict[Path, yaml.Node] = field(default_factory=dict)

    def alias(self, old: Path, new: Path) -> None:
        """Positions under ``old`` also answer for ``new`` (a key read as another)."""
        for table in (self.nodes, self.keys):
            for p in [p for p in table if p[:len(old)] == old]:
                table.setdefault(new + p[len(old):], table[p])

    def at(self, path: Path, message: str, *, key: bool = False,
           offset: int | None = None) -> Problem:
        """A problem at the value (or with ``key``, the key) at ``path``; the nearest
        enclosing node when that path does not exist. ``offset`` is a 1-based column inside
        a string value (an expression or template), mapped into the file when possible."""
        node = None
        if key:
            node = self.keys.get(path)
        p = path
        while node is None and p:
            node = self.nodes.get(p)
            if node is None:
                p = p[:-1]
        if node is None:
            node = self.nodes.get(())
        if node is None:
            return Problem(self.file, None, None, message)
        line, col = position_in(node, offset)
        if offset is not None and (line, col) == (node.start_mark.line + 1,
                                                  node.start_mark.column + 1):
            message = f"{message} (col {offset} of the text)" if offset > 1 else message
        return Problem(self.file, line, col, message)


def position_in(node: yaml.Node, offset: int | None = None) -> tuple[int, int]:
    """1-based (line, column) of ``node``, moved ``offset - 1`` characters into a one-line
    plain or quoted scalar (block and multi-line scalars: the node's start)."""
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if offset is None or not isinstance(node, yaml.ScalarNode):
        return line, col
    one_line = node.start_mark.line == node.end_mark.line
    if one_line and node.style in (None, ""):
        return line, col + offset - 1
    if one_line and node.style in ("'", '"'):
        return line, col + offset  # skip the opening quote
    return line, col


def load_yaml(text: str, file: str) -> Located:
    """Compose ``text`` and build plain data (safe tags only) with positions.

    Raises :class:`YamlProblem` for syntax errors, duplicate keys and non-scalar keys.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            col = mark.column + 1 if mark else None
            reason = exc.problem or exc.context or "invalid YAML"
            raise YamlProblem(Problem(file, line, col, f"invalid YAML: {reason}")) from None
        located = Located(file, None)
        if root is not None:
            located.data = _build(loader, root, (), located, 0)
        return located
    finally:
        loader.dispose()


def _problem(file: str, node: yaml.Node, message: str) -> YamlProblem:
    line, col = position_in(node)
    return YamlProblem(Problem(file, line, col, message))


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path, out: Located,
           depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise _problem(out.file, node, f"nested deeper than {_MAX_DEPTH} levels")
    out.nodes[path] = node
    try:
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)  # resolves ``<<: *anchor`` merges
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _problem(out.file, key_node, "mapping keys must be plain values")
                key = loader.construct_object(key_node, deep=True)
                if key in result:
                    raise _problem(out.file, key_node, f"duplicate key `{key}`")
                out.keys[(*path, key)] = key_node
                result[key] = _build(loader, value_node, (*path, key), out, depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [_build(loader, item, (*path, i), out, depth + 1)
                    for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise _problem(out.file, node, f"invalid YAML value: {exc.problem}") from None


# --------------------------------------------------------------------------- msgspec errors
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_GOT = re.compile(r"got `(\w+)`")
_JSON_TYPES = {"int": int, "float": float, "bool": bool, "null": type(None), "array": list,
               "object": dict, "str": str}


def _parse_path(text: str) -> tuple[Path, bool]:
    """msgspec's ``.a[0].b`` → ``("a", 0, "b")``; ``[...]`` (a dict value) → flag."""
    path: list[str | int] = []
    dict_value = False
    for m in _SEGMENT.finditer(text):
        if m.group(1) is not None:
            path.append(m.group(1))
        elif m.group(2) is not None:
            path.append(int(m.group(2)))
        else:
            dict_value = True
            break
    return tuple(path), dict_value


def _name(path: Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the document"


def convert(located: Located, value: Any, path: Path, type_: Any,
            vocabulary: Iterable[str] = (), hints: dict[str, str] | None = None
            ) -> tuple[Any, Problem | None]:
    """``msgspec.convert(value, type_)``; on failure the problem at its position.

    ``vocabulary`` feeds "did you mean" for unknown keys; ``hints`` maps a field name to
    the message used when that field's value is invalid (``{value}`` is replaced by the
    value's repr).
    """
    try:
        return msgspec.convert(value, type=type_, strict=True), None
    except msgspec.ValidationError as exc:
        m = _AT.match(str(exc))
        assert m is not None
        msg, rel = m.group("msg"), m.group("path") or ""
        sub, dict_value = _parse_path(rel)
        full = path + sub
        if unknown := re.match(r"Object contains unknown field `([^`]*)`", msg):
            key = unknown.group(1)
            close = difflib.get_close_matches(key, list(vocabulary), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            return None, located.at((*full, key), f"unknown key `{key}`{hint}", key=True)
        if missing := re.match(r"Object missing required field `([^`]*)`", msg):
            where = _name(full)
            return None, located.at(full, f"{where}: missing required key `{missing.group(1)}`")
        if dict_value:
            got = _GOT.search(msg)
            want = _JSON_TYPES.get(got.group(1)) if got else None
            container = _get(value, sub)
            if isinstance(container, dict):
                for k, v in container.items():
                    if (want is not None and type(v) is want) or not isinstance(k, str):
                        full = (*full, k)
                        break
        last = next((p for p in reversed(full) if isinstance(p, str)), "")
        if hints and last in hints and not dict_value:
            text = f"{_name(full)}: {hints[last].format(value=_get(value, sub))}"
        else:
            text = f"{_name(full)}: {msg[0].lower()}{msg[1:]}"
            if re.search(r"Expected `str`, got `(int|float|bool)`", msg):
                text += " (quote the value in YAML)"
        return None, located.at(full, text)


def _get(data: Any, path: Path) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data
