"""The ``inferwatch`` console script: the CLI when the worker extra is installed, and one
line saying how to get it when it is not.

``pip install inferwatch`` is the producer SDK alone (aiokafka and msgspec); every command
needs ``inferwatch[worker]``. Without it, importing the CLI (or a command's own imports)
fails on the first missing third-party module, and instead of that traceback the user reads
what to install, with exit status 2 (a usage error, as click uses).

>>> print(worker_missing(ModuleNotFoundError("No module named 'click'", name="click")))
inferwatch: the worker commands need the worker extra (no module named 'click'): pip ...
>>> worker_missing(ModuleNotFoundError("No module named 'pipeline.nope'", name="pipeline.nope"))
"""

from __future__ import annotations

import sys

__all__ = ["main", "worker_missing"]

_OURS = frozenset({"pipeline", "schemas"})  # a missing module of ours is a bug, not an extra


def worker_missing(exc: ModuleNotFoundError) -> str | None:
    """The one-line hint for a missing third-party module, None for a missing one of ours."""
    name = exc.name or ""
    if not name or name.partition(".")[0] in _OURS:
        return None
    return (
        f"inferwatch: the worker commands need the worker extra (no module named {name!r}): "
        "pip install 'inferwatch[worker]'"
    )


def main() -> None:
    """Run the CLI (``pipeline.cli:main``); exit 2 with a hint if the worker extra is missing."""
    try:
        from pipeline.cli import main as cli_main

        cli_main()
    except ModuleNotFoundError as exc:
        hint = worker_missing(exc)
        if hint is None:
            raise
        print(hint, file=sys.stderr)
        sys.exit(2)
