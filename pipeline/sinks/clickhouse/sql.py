"""ClickHouse SQL text from values: string literals and identifiers, quoted one way for
every statement the project builds (the views, the backup, the read-only engine's
settings, Parquet columns).

>>> print(literal("it's a \\\\ test"))
'it\\'s a \\\\ test'
>>> print(identifier("select"), identifier("my `table`"))
`select` `my \\`table\\``
"""

from __future__ import annotations

__all__ = ["identifier", "literal"]


def literal(value: str) -> str:
    """A string literal of ``value`` (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def identifier(name: str) -> str:
    """``name`` as a backquoted identifier: safe for keywords and any character."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
