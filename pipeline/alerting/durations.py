"""Durations as rules write them: ``30s``, ``5m``, ``1h30m``, ``2d``, or a number of seconds.

>>> parse_duration("1h30m"), parse_duration(90), format_duration(5400.0)
(5400.0, 90.0, '1h30m')
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(value: str | float) -> float:
    """Seconds in ``value``: a string of ``<number><unit>`` parts (units ms, s, m, h, d, w)
    or a non-negative number of seconds. Raises ``ValueError`` saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if text == "0":
            return 0.0
        if not _WHOLE.fullmatch(text):
            raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest ``1h30m``-style text for ``seconds`` (``0s`` for zero).

    >>> format_duration(0), format_duration(0.25), format_duration(86400 + 60)
    ('0s', '250ms', '1d1m')
    """
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    out = []
    for unit in ("w", "d", "h", "m", "s", "ms"):
        size = round(_UNITS[unit] * 1000)
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)
