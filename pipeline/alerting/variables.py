"""The variables a rule condition can read, and how one window's metrics become them.

Names come from a window's :class:`~schemas.metrics.WindowMetrics` (every numeric field,
e.g. ``requests``, ``error_rate``, ``latency_p99_ms``, ``slo_compliance``) or
:class:`~schemas.quality.QualityWindow` (``accuracy``, ``labelled``…), from its
count maps (``errors_by_type.<type>``, ``feature_usage.<attribute>.<value>``: absent
counts are 0) and from the series' scores (``anomaly_score``, ``anomaly.<metric>`` robust
z-scores, ``change_point.<metric>`` = 1 when a detector fired, ``drift.<statistic>.<name>``
such as ``drift.js.feature.prompt_length`` or ``drift.psi.latency_ms``; statistics are
``psi``, ``js``, ``hellinger``, ``wasserstein``, ``ks`` and ``chi2_p``). Percentile
fields also answer to the spelling ``p99_latency_ms`` (= ``latency_p99_ms``), ``p50_ttft_ms``
and so on. A field that had no data in the window (``None``) is missing: conditions on it
are unknown and do not hold.

>>> env = window_vars({"series_key": "model=m", "requests": 10, "latency_p99_ms": 2500.0,
...                    "errors_by_type": {"timeout": 2}},
...                   {"drift": {"js": {"feature": {"prompt_length": 0.3}}}})
>>> env["p99_latency_ms"], env["errors_by_type.timeout"], env["errors_by_type.oom"]
(2500.0, 2.0, 0.0)
>>> env["drift.js.feature.prompt_length"]
0.3
>>> is_known("drift.js.feature.prompt_length"), is_known("p99_latncy_ms")
(True, False)
>>> suggest("p99_latncy_ms")
'p99_latency_ms'
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from schemas.metrics import WindowMetrics
from schemas.quality import QualityWindow

__all__ = [
    "ALIASES",
    "COUNT_PREFIXES",
    "METRIC_NAMES",
    "QUALITY_NAMES",
    "SCORE_NAMES",
    "SCORE_PREFIXES",
    "is_known",
    "suggest",
    "window_vars",
]


def _numeric_fields(struct: type = WindowMetrics) -> frozenset[str]:
    info = msgspec.inspect.type_info(struct)
    numeric = (msgspec.inspect.IntType, msgspec.inspect.FloatType)
    out = set()
    for f in info.fields:  # type: ignore[attr-defined]
        t = f.type
        options = t.types if isinstance(t, msgspec.inspect.UnionType) else (t,)
        if any(isinstance(o, numeric) for o in options):
            out.add(f.name)
    return frozenset(out - {"schema_version"})


METRIC_NAMES: frozenset[str] = _numeric_fields()
# a quality window's (``accuracy``, ``labelled``, ``estimated_accuracy_high``…): rules read
# them on the series' quality windows (labels + ``quality=<basis>``, see docs/quality.md)
QUALITY_NAMES: frozenset[str] = _numeric_fields(QualityWindow) - METRIC_NAMES
# ``p99_latency_ms`` for ``latency_p99_ms`` and the like: both spellings are common.
ALIASES: dict[str, str] = {
    f"{m.group(2)}_{m.group(1)}_ms": name
    for name in sorted(METRIC_NAMES)
    if (m := re.fullmatch(r"(latency|ttft|queue_wait|tpot)_(p\d+|max)_ms", name))
}
COUNT_PREFIXES: tuple[str, ...] = ("errors_by_type.", "feature_usage.")
SCORE_PREFIXES: tuple[str, ...] = ("drift.", "anomaly.", "change_point.")
SCORE_NAMES: frozenset[str] = frozenset({"anomaly_score"})


def is_known(name: str) -> bool:
    """Whether ``name`` can ever have a value: a metric, an alias, a count or a score."""
    return (
        name in METRIC_NAMES
        or name in QUALITY_NAMES
        or name in ALIASES
        or name in SCORE_NAMES
        or any(name.startswith(p) and len(name) > len(p) for p in COUNT_PREFIXES)
        or any(name.startswith(p) and len(name) > len(p) for p in SCORE_PREFIXES)
    )


def suggest(name: str) -> str | None:
    """The closest known plain name, for "did you mean" messages."""
    close = difflib.get_close_matches(
        name, [*METRIC_NAMES, *QUALITY_NAMES, *ALIASES, *SCORE_NAMES], n=1)
    return close[0] if close else None


class _Vars(dict):
    """Variables of one window; absent counts read as 0, anything else absent is missing."""

    __slots__ = ()

    def __missing__(self, key: str) -> float:
        if key.startswith(COUNT_PREFIXES):
            return 0.0
        raise KeyError(key)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif (number := _number(value)) is not None:
        out[prefix] = number


def window_vars(
    metrics: WindowMetrics | Mapping[str, Any], scores: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """The flat variable mapping of one window: metrics, counts, aliases and scores.

    ``scores`` may be flat (``{"drift.js.feature.prompt_length": 0.3}``) or nested; its
    names win over metric names on a clash.
    """
    if isinstance(metrics, WindowMetrics | QualityWindow):
        metrics = msgspec.structs.asdict(metrics)
    env = _Vars()
    for name, value in metrics.items():
        if name in METRIC_NAMES or name in QUALITY_NAMES:
            if (number := _number(value)) is not None:
                env[name] = number
        elif name in ("errors_by_type", "feature_usage") and isinstance(value, Mapping):
            _flatten(name, value, env)
    for alias, name in ALIASES.items():
        if name in env:
            env[alias] = env[name]
    if scores:
        _flatten("", scores, env)
    return env
