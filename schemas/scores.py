"""The scores contract: drift, change points and anomaly per series and closed window.

One ``WindowScores`` per (series, window) goes to ``inferwatch.scores`` keyed by series
key, in JSON, with the ``inferwatch-contract: WindowScores`` header. Each drift value
names the reference it was measured against (``pinned`` baseline version, or the
``trailing`` windows), so a score can always be traced to what it compared.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.bounds import Count, EpochSeconds

__all__ = ["SCORES_SCHEMA_VERSION", "DriftScore", "WindowScores"]

SCORES_SCHEMA_VERSION = 1


class DriftScore(msgspec.Struct, kw_only=True, frozen=True):
    """One statistic of one monitored distribution against the reference.

    ``value`` is ``None`` when there was too little data to say (never "no drift").
    ``drifted`` compares with ``threshold`` in the statistic's direction (for the
    chi-square p-value, lower is drift).
    """

    name: str  # monitored distribution: feature.<name>, prediction, confidence, latency_ms, …
    kind: Literal["numeric", "categorical"]
    statistic: str  # psi, js, hellinger, wasserstein, ks, chi2_p
    value: float | None
    threshold: float | None  # None when a side is empty (no threshold can apply)
    drifted: bool
    reference_count: Count
    current_count: Count


class WindowScores(msgspec.Struct, kw_only=True, frozen=True):
    """Drift, change-point and anomaly scores of one series in one closed window."""

    schema_version: int = SCORES_SCHEMA_VERSION
    series_key: str
    labels: dict[str, str] = {}
    window_start: EpochSeconds
    window_end: EpochSeconds
    requests: Count = 0
    # what drift was measured against: "pinned" (a baseline version), "trailing" (the
    # previous windows of the series), or "none" (no reference yet)
    reference: Literal["pinned", "trailing", "none"] = "none"
    reference_version: Count = 0  # baseline version when pinned, windows added when trailing
    drift: list[DriftScore] = []
    drifted: list[str] = []  # names with at least one drifted statistic
    change_points: list[str] = []  # window metrics whose detector fired in this window
    anomaly_score: float | None = None  # in [0, 1]; None during the warm-up
    anomaly_threshold: float = 0.5  # the threshold in force for this series
    anomalous: bool = False  # anomaly_score >= anomaly_threshold
    anomaly_warm_up: bool = True
    anomaly_contributions: dict[str, float] = {}  # metric -> robust z-score (MAD scorer)

    def variables(self) -> dict[str, float]:
        """Flat alert-rule variables: ``drift.<statistic>.<name>``, ``anomaly_score``,
        ``change_point.<metric>`` (1.0 when the detector fired)."""
        out = {f"drift.{d.statistic}.{d.name}": d.value for d in self.drift
               if d.value is not None}
        if self.anomaly_score is not None:
            out["anomaly_score"] = self.anomaly_score
        out.update({f"anomaly.{k}": v for k, v in self.anomaly_contributions.items()})
        out.update({f"change_point.{m}": 1.0 for m in self.change_points})
        return out
