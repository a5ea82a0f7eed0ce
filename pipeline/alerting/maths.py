"""Statistics behind the error-rate and burn-rate rules. Pure functions on numbers.

Wilson score interval (Wilson 1927): for ``k`` errors in ``n`` requests, ``p = k/n``,

    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)

Its lower end is the error rate we are confident the series has at least: with few
requests it stays low, so one error in three requests does not look like a 33 % error rate.

Burn rate (Google SRE workbook, "Alerting on SLOs"): the error ratio over a window divided
by the error budget ``1 - objective``. A burn rate of 1 spends exactly the budget over the
SLO period; 14.4 spends 2 % of a 30-day budget in one hour. Multi-window, multi-burn-rate:
alert when, for some (long, short, factor), both the long and the short window burn faster
than ``factor`` — the long window for significance, the short one so that the alert
resolves soon after the burn stops.

>>> round(wilson_lower_bound(1, 3), 4)
0.0615
>>> burn_rate(bad=5, total=100, objective=0.99)
5.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "BurnVerdict",
    "BurnWindow",
    "burn_rate",
    "error_ratio",
    "evaluate_burn",
    "wilson_interval",
    "wilson_lower_bound",
]


def wilson_interval(errors: float, total: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of the error rate ``errors / total`` at ``z``.

    ``z = 1.96`` is a 95 % two-sided interval (its lower end a 97.5 % one-sided bound).
    With no requests the rate is unconstrained: ``(0.0, 1.0)``.

    >>> lo, hi = wilson_interval(20, 100)
    >>> round(lo, 4), round(hi, 4)
    (0.1334, 0.2888)
    """
    if not (total >= 0 and 0 <= errors <= total and z >= 0):
        raise ValueError(f"need 0 <= errors <= total and z >= 0; got {errors}, {total}, {z}")
    if total == 0:
        return 0.0, 1.0
    p = errors / total
    z2 = z * z
    denominator = 1.0 + z2 / total
    centre = p + z2 / (2.0 * total)
    margin = z * math.sqrt(p * (1.0 - p) / total + z2 / (4.0 * total * total))
    return max(0.0, (centre - margin) / denominator), min(1.0, (centre + margin) / denominator)


def wilson_lower_bound(errors: float, total: float, z: float = 1.96) -> float:
    """Lower end of :func:`wilson_interval`: 0.0 when there are no requests.

    >>> wilson_lower_bound(0, 1000), round(wilson_lower_bound(500, 1000), 4)
    (0.0, 0.4691)
    """
    return wilson_interval(errors, total, z)[0]


def error_ratio(bad: float, total: float) -> float | None:
    """``bad / total``, or ``None`` when there was no traffic."""
    return None if total <= 0 else bad / total


def burn_rate(bad: float, total: float, objective: float) -> float | None:
    """How fast the error budget ``1 - objective`` burns: error ratio / budget.

    ``None`` when there was no traffic.
    """
    if not 0.0 < objective < 1.0:
        raise ValueError(f"objective must be in (0, 1), got {objective}")
    ratio = error_ratio(bad, total)
    # round the budget so 1 - 0.99 is 0.01, not 0.010000000000000009
    return None if ratio is None else ratio / round(1.0 - objective, 12)


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """One (long window, short window, burn-rate factor) alerting condition, in seconds."""

    long: float
    short: float
    factor: float


@dataclass(frozen=True, slots=True)
class BurnVerdict:
    """Result of :func:`evaluate_burn`.

    ``window`` is the firing condition with the highest factor, or the first condition
    when none fires; ``long_rate`` / ``short_rate`` are its burn rates (``None``: no
    traffic). ``holds`` is ``None`` when no condition had traffic in both windows; too
    little traffic (under ``min_total``) is ``False``.
    """

    holds: bool | None
    window: BurnWindow
    long_rate: float | None
    short_rate: float | None

    @property
    def value(self) -> float | None:
        """The burn rate that was compared: the lesser of long and short."""
        if self.long_rate is None or self.short_rate is None:
            return None
        return min(self.long_rate, self.short_rate)


def evaluate_burn(
    windows: Sequence[BurnWindow],
    objective: float,
    counts: Mapping[float, tuple[float, float]],
    *,
    min_total: float = 0.0,
) -> BurnVerdict:
    """Multi-window, multi-burn-rate verdict from ``counts``: lookback seconds → (bad, total).

    A condition holds when ``burn(long) > factor`` and ``burn(short) > factor``; a long
    window with fewer than ``min_total`` requests is not evaluated (too little evidence).

    >>> ws = [BurnWindow(3600, 300, 14.4), BurnWindow(21600, 1800, 6.0)]
    >>> counts = {3600: (160, 1000), 300: (20, 100), 21600: (170, 6000), 1800: (60, 600)}
    >>> v = evaluate_burn(ws, 0.99, counts)
    >>> v.holds, v.window.factor, v.long_rate, v.short_rate
    (True, 14.4, 16.0, 20.0)
    """
    if not windows:
        raise ValueError("need at least one burn window")
    first: BurnVerdict | None = None
    best: BurnVerdict | None = None
    any_known = False
    for w in windows:
        bad_l, total_l = counts.get(w.long, (0.0, 0.0))
        bad_s, total_s = counts.get(w.short, (0.0, 0.0))
        long_rate = burn_rate(bad_l, total_l, objective)
        short_rate = burn_rate(bad_s, total_s, objective)
        known = long_rate is not None and short_rate is not None
        any_known = any_known or known
        fires = bool(known and total_l >= min_total
                     and long_rate > w.factor and short_rate > w.factor)  # type: ignore[operator]
        verdict = BurnVerdict(fires, w, long_rate, short_rate)
        if first is None:
            first = verdict
        if fires and (best is None or w.factor > best.window.factor):
            best = verdict
    if best is not None:
        return best
    assert first is not None
    return BurnVerdict(False if any_known else None, first.window, first.long_rate,
                       first.short_rate)
