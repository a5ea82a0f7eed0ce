"""Two model versions side by side (canary, A/B): a difference, its interval, a verdict.

``difference`` is always candidate minus baseline. The verdict reads the interval, so it
respects the sample size: a difference is only called ``worse`` or ``better`` when the
whole interval lies beyond ``margin`` on that side, and not at all (``insufficient_data``)
while either version has fewer than ``min_n`` observations.

Proportions (error rate, accuracy, thumbs-down rate) use Newcombe's hybrid score interval
(method 10 of Newcombe 1998, built from the two Wilson intervals); means (latency,
satisfaction) use Welch's t interval. No scipy here: the normal quantile comes from
:class:`statistics.NormalDist`, the t quantile from :func:`_t_quantile`.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

import msgspec

__all__ = ["COMPARED_METRICS", "Difference", "Verdict", "compare_means", "compare_rates"]

# The metrics two versions are compared on, and how: a rate (k of n) or a mean, and
# whether higher is worse. Rules (``version_comparison``) and ``inferwatch quality
# compare`` both read this table.
COMPARED_METRICS: dict[str, tuple[Literal["rate", "mean"], bool]] = {
    "error_rate": ("rate", True),
    "latency_ms": ("mean", True),
    "accuracy": ("rate", False),
    "satisfaction": ("mean", False),
    "thumbs_down_rate": ("rate", True),
}

Verdict = Literal["worse", "better", "no_difference", "insufficient_data"]


class Difference(msgspec.Struct, frozen=True):
    """The comparison of one metric between a baseline and a candidate version.

    ``None`` where a value is undefined (no observations, or too few for an interval).

    >>> d = compare_rates("error_rate", 10, 1000, 40, 1000, higher_is_worse=True)
    >>> d.verdict, round(d.difference, 3), round(d.low, 3), round(d.high, 3)
    ('worse', 0.03, 0.017, 0.045)
    """

    metric: str
    baseline: float | None
    candidate: float | None
    difference: float | None  # candidate - baseline
    low: float | None
    high: float | None
    n_baseline: int
    n_candidate: int
    verdict: Verdict


def compare_rates(metric: str, k_base: int, n_base: int, k_cand: int, n_cand: int, *,
                  higher_is_worse: bool, level: float = 0.95, min_n: int = 100,
                  margin: float = 0.0) -> Difference:
    """Compare two proportions, ``k`` of ``n`` each, with Newcombe's hybrid score interval.

    >>> d = compare_rates("accuracy", 48, 80, 56, 70, higher_is_worse=False)
    >>> round(d.difference, 4), round(d.low, 4), round(d.high, 4), d.verdict
    (0.2, 0.0524, 0.3339, 'insufficient_data')
    """
    _check_options(level, margin)
    for k, n in ((k_base, n_base), (k_cand, n_cand)):
        if not 0 <= k <= n:
            raise ValueError(f"{metric}: need 0 <= k <= n, got {k} of {n}")
    base = k_base / n_base if n_base else None
    cand = k_cand / n_cand if n_cand else None
    difference = low = high = None
    if base is not None and cand is not None:
        z = _z(level)
        base_low, base_high = _wilson(k_base, n_base, z)
        cand_low, cand_high = _wilson(k_cand, n_cand, z)
        difference = cand - base
        low = difference - math.hypot(cand - cand_low, base_high - base)
        high = difference + math.hypot(cand_high - cand, base - base_low)
    enough = n_base >= min_n and n_cand >= min_n
    return Difference(metric, base, cand, difference, low, high, int(n_base), int(n_cand),
                      _verdict(low, high, enough, higher_is_worse, margin))


def compare_means(metric: str, mean_base: float | None, var_base: float | None, n_base: int,
                  mean_cand: float | None, var_cand: float | None, n_cand: int, *,
                  higher_is_worse: bool, level: float = 0.95, min_n: int = 30,
                  margin: float = 0.0) -> Difference:
    """Compare two means with Welch's t interval (Welch–Satterthwaite degrees of freedom).

    ``var_*`` are sample variances (divisor ``n - 1``). A mean of no observations, or a
    variance of fewer than two, is ignored whatever its value (``None``, NaN).

    >>> d = compare_means("latency_ms", 120.0, 400.0, 500, 126.0, 900.0, 500,
    ...                   higher_is_worse=True)
    >>> d.verdict, round(d.low, 2), round(d.high, 2)
    ('worse', 2.84, 9.16)
    """
    _check_options(level, margin)
    base = _mean(metric, mean_base, n_base)
    cand = _mean(metric, mean_cand, n_cand)
    difference = low = high = None
    if base is not None and cand is not None:
        difference = cand - base
        vb = _variance(metric, var_base, n_base)
        vc = _variance(metric, var_cand, n_cand)
        if vb is not None and vc is not None:
            sb, sc = vb / n_base, vc / n_cand  # squared standard errors
            se = math.sqrt(sb + sc)
            half = 0.0
            if se > 0.0:
                df = (sb + sc) ** 2 / (sb * sb / (n_base - 1) + sc * sc / (n_cand - 1))
                half = _t_quantile(0.5 + level / 2.0, df) * se
            low, high = difference - half, difference + half
    enough = n_base >= min_n and n_cand >= min_n
    return Difference(metric, base, cand, difference, low, high, int(n_base), int(n_cand),
                      _verdict(low, high, enough, higher_is_worse, margin))


def _verdict(low: float | None, high: float | None, enough: bool, higher_is_worse: bool,
             margin: float) -> Verdict:
    """Worse or better only when the whole interval is beyond ``margin`` on that side."""
    if not enough or low is None or high is None:
        return "insufficient_data"
    up, down = low > margin, high < -margin  # surely higher, surely lower
    if up or down:
        return "worse" if up == higher_is_worse else "better"
    return "no_difference"


def _check_options(level: float, margin: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not margin >= 0.0:
        raise ValueError(f"margin must not be negative, got {margin}")


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _wilson(k: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval of the proportion ``k / n`` (``n > 0``)."""
    p, z2 = k / n, z * z
    centre = (k + z2 / 2.0) / (n + z2)
    half = z * math.sqrt(n * p * (1.0 - p) + z2 / 4.0) / (n + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(metric: str, mean: float | None, n: int) -> float | None:
    if n < 0:
        raise ValueError(f"{metric}: negative count {n}")
    if n == 0 or mean is None:
        return None
    if not math.isfinite(mean):
        raise ValueError(f"{metric}: mean of {n} observations is {mean}")
    return float(mean)


def _variance(metric: str, var: float | None, n: int) -> float | None:
    if n < 2 or var is None:
        return None
    if not math.isfinite(var) or var < 0.0:
        raise ValueError(f"{metric}: sample variance of {n} observations is {var}")
    return float(var)


# --------------------------------------------------------------------------- t quantile
def _t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom.

    A Cornish-Fisher start (Abramowitz & Stegun 26.7.5), refined by bracketed Newton steps
    on the exact tail, ``I_x(df/2, 1/2) / 2`` with ``x = df / (df + t²)`` (the regularized
    incomplete beta, by continued fraction); above 10⁵ degrees of freedom the expansion
    alone is good to about 1e-12. Agrees with ``scipy.stats.t.ppf`` to 1e-8 (the tests).

    >>> round(_t_quantile(0.975, 10), 6), round(_t_quantile(0.025, 1), 6)
    (2.228139, -12.706205)
    """
    if not 0.0 < p < 1.0 or not df > 0.0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:  # the tail probability itself, never 1 - (1 - p)
        return -_t_upper_quantile(p, df)
    return _t_upper_quantile(1.0 - p, df)


def _t_upper_quantile(q: float, df: float) -> float:
    """The ``t > 0`` with ``P(T > t) = q`` for ``0 < q < 1/2``."""
    if df == 1.0:
        return 1.0 / math.tan(math.pi * q)
    if df == 2.0:
        return (1.0 - 2.0 * q) / math.sqrt(2.0 * q * (1.0 - q))
    z = -NormalDist().inv_cdf(q)
    z2 = z * z
    t = z + (z * (z2 + 1.0) / 4.0
             + z * ((5.0 * z2 + 16.0) * z2 + 3.0) / (96.0 * df)
             + z * (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) / (384.0 * df * df)
             + z * ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0)
             / (92160.0 * df ** 3)) / df
    if df > 1e5:
        return t
    # Newton on log P(T > t) against log t: nearly linear in either tail (a power law
    # for small df, close to a parabola for large), so a few steps from the start suffice.
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    low, high = 0.0, math.inf  # bracket of the root
    t = max(t, 1e-8)
    for _ in range(100):
        tail = _t_upper(t, df)
        if tail == q:
            return t
        if tail > q:
            low = t
        else:
            high = t
        slope = t * math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))
        step = math.nan  # -d log P(T > t) / d log t is slope / tail
        if tail > 0.0 and slope > 0.0:
            step = t * math.exp(max(-50.0, min(50.0, math.log(tail / q) * tail / slope)))
        if not low < step < high:  # Newton left the bracket: bisect it (or widen it)
            step = (16.0 * low if math.isinf(high) else high / 16.0 if low == 0.0
                    else math.sqrt(low * high))
        if abs(step - t) <= 1e-15 * t:
            return step
        t = step
    return t


def _t_upper(t: float, df: float) -> float:
    """P(T > t) for ``t >= 0``."""
    t2 = t * t
    return 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def _beta_regularized(a: float, b: float, x: float, y: float) -> float:
    """``I_x(a, b)`` with ``y = 1 - x`` given exactly (continued fraction, Lentz)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, y) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h
