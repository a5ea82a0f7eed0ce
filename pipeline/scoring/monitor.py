"""Per-series scoring of closed windows: drift, change points and the anomaly score.

A :class:`SeriesMonitor` is fed each closed window of one series once (its first
emission; corrections do not feed detectors twice) with the window's metrics and drift
histograms, and answers a :class:`schemas.scores.WindowScores`:

- drift of every monitored distribution against the reference in force: the series'
  pinned baseline, or the merge of its previous ``trailing_windows`` windows (only once
  that many are held, so a new series raises no drift from three windows of history);
- change points: one detector per window metric of :data:`CHANGE_METRICS`;
- the anomaly score of the window's robust metrics (:func:`anomaly_vector`), ``None``
  during the warm-up. A window is scored before it is learned.

``checkpoint()`` / ``restore()`` carry the whole state (trailing windows, detectors,
scorer) as bytes for the changelog; stage 2 writes them every few windows, not per event.
Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from pipeline.config import DriftSettings
from pipeline.scoring.anomaly import HalfSpaceTreesScorer, MedianMADScorer
from pipeline.scoring.anomaly.base import AnomalyScorer
from pipeline.scoring.detectors import ADWINDetector, PageHinkleyDetector
from pipeline.scoring.detectors.base import ChangeDetector
from pipeline.scoring.drift.evaluate import evaluate
from pipeline.scoring.drift.reference import Reference, TrailingReference
from pipeline.scoring.drift.registry import STATISTICS
from pipeline.scoring.drift.thresholds import (
    ANOMALY_MIN_REQUESTS,
    ANOMALY_MIN_SCALE,
    ANOMALY_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    is_drift,
    threshold,
)
from pipeline.windows.drift_profile import DriftProfile, MonitorSpec
from schemas.metrics import WindowMetrics
from schemas.scores import DriftScore, WindowScores

__all__ = ["CHANGE_METRICS", "SHORT_NAMES", "SeriesMonitor", "anomaly_vector", "monitor_spec",
           "window_vector"]

CHECKPOINT_FORMAT = 1
# Registry name -> the short name used in scores, SQL and alert rules (drift.js.<name>);
# each statistic class carries its own
SHORT_NAMES: Mapping[str, str] = {s.name: s.short_name for s in STATISTICS}
# The per-window series watched for change points (issue 4: p99 latency, error rate,
# mean confidence, output tokens, cost per request)
CHANGE_METRICS = ("latency_p99_ms", "error_rate", "confidence_mean",
                  "output_tokens_mean", "cost_per_request_usd")
DRIFT_VOTES = 2  # statistics that must agree before a distribution is called drifted
# Smallest spread the anomaly scorer assumes per metric: a series without a single error
# in its history must not call one failed request in 300 a 10^6-sigma event.
# Log-scale metrics: a window median moving by less than ~5 % is never an anomaly, however
# calm the history (a 1 %-accurate sketch quantile moves in 2 % steps).
MIN_SCALE: Mapping[str, float] = {
    "confidence_mean": 0.01, **ANOMALY_MIN_SCALE,
    **dict.fromkeys(("log_ttft_p50_ms", "log_tpot_p50_ms", "log_latency_p50_ms",
                     "log_output_tokens_mean", "log_cost_per_request_usd"), 0.05),
}


def monitor_spec(settings: DriftSettings, relative_accuracy: float,
                 operational: bool | None = None) -> MonitorSpec:
    """The distributions ``settings`` monitor; ``operational`` overrides the setting
    (stage 1 passes False: those come from the window's own sketches)."""
    return MonitorSpec(
        numeric_features=tuple(settings.numeric_features),
        categorical_features=tuple(settings.categorical_features),
        prediction=settings.prediction, confidence=settings.confidence,
        operational=settings.operational if operational is None else operational,
        relative_accuracy=relative_accuracy,
    )


def window_vector(metrics: WindowMetrics, profile: DriftProfile) -> dict[str, float | None]:
    """The per-window series the change detectors watch (:data:`CHANGE_METRICS`).

    Volume (requests per second) is left out on purpose: daily traffic cycles are not
    changes, and a quiet series already shows as fewer windows.
    """
    confidence = profile.get("confidence")
    requests = metrics.requests
    return {
        "latency_p99_ms": metrics.latency_p99_ms,
        "error_rate": metrics.error_rate if requests else None,
        "confidence_mean": (confidence.sum / confidence.count  # type: ignore[union-attr]
                            if confidence is not None and confidence.count else None),
        "output_tokens_mean": metrics.output_tokens_sum / requests if requests else None,
        "cost_per_request_usd": metrics.cost_per_request_usd,
    }


def drifted_names(drift: list[DriftScore], votes: int = DRIFT_VOTES) -> list[str]:
    """Names on which at least ``votes`` statistics crossed their thresholds in one window.

    Each statistic is calibrated to about 0.5 false alarms per 1,000 windows, but a window
    tests every statistic of every monitored name; requiring two to agree keeps a series'
    false alarms rare while a real shift moves several of them at once. (Heavy-tailed
    serving distributions make Wasserstein-1 noisier than calibrated, so the monitor also
    asks for a second window: see :meth:`SeriesMonitor.observe`.)
    """
    counts: dict[str, int] = {}
    for d in drift:
        if d.drifted:
            counts[d.name] = counts.get(d.name, 0) + 1
    return sorted(name for name, n in counts.items() if n >= votes)


def anomaly_vector(metrics: WindowMetrics, profile: DriftProfile) -> dict[str, float | None]:
    """The metrics the anomaly score looks at: medians, rates and means, no tail percentiles.

    A window's p99 is one slow request, and a generative model's median latency jumps
    between the modes of its output-length mix; so generative series are watched through
    their median time to first token and per output token, the others through their
    median latency (benchmarks/drift_eval.py measured the false alarms of the p99s).
    Durations, tokens and cost enter as logarithms: effects on them are multiplicative,
    and a sketch's quantile moves in steps of a constant ratio, which
    :data:`MIN_SCALE` then covers with one floor for every series.
    """
    vector = window_vector(metrics, profile)
    generative = metrics.tpot_p50_ms is not None or metrics.ttft_p50_ms is not None
    logs = {
        "ttft_p50_ms": metrics.ttft_p50_ms,
        "tpot_p50_ms": metrics.tpot_p50_ms,
        "latency_p50_ms": None if generative else metrics.latency_p50_ms,
        "output_tokens_mean": vector["output_tokens_mean"],
        "cost_per_request_usd": vector["cost_per_request_usd"],
    }
    out: dict[str, float | None] = {f"log_{k}": _log(v) for k, v in logs.items()}
    out["error_rate"] = vector["error_rate"]
    out["confidence_mean"] = vector["confidence_mean"]
    return out


def _log(value: float | None) -> float | None:
    return None if value is None or not value > 0 else math.log(value)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _detector(kind: str) -> ChangeDetector:
    return ADWINDetector() if kind == "adwin" else PageHinkleyDetector()


def _scorer(kind: str, warm_up: int) -> AnomalyScorer:
    if kind == "half_space_trees":  # its reference window must fit in the warm-up
        return HalfSpaceTreesScorer(warm_up=warm_up, window_size=min(20, warm_up))
    return MedianMADScorer(warm_up=warm_up, min_scale=MIN_SCALE)


def thresholds(overrides: Mapping[str, float]) -> dict[str, float]:
    """Registry-named thresholds: the defaults, then ``overrides`` by registry or short name.

    An unknown name is a configuration error, not a silently ignored key.
    """
    registry = {short: name for name, short in SHORT_NAMES.items()}
    out = dict(DEFAULT_THRESHOLDS)
    for name, value in overrides.items():
        key = registry.get(name, name)
        if key not in out:
            known = sorted({*SHORT_NAMES, *SHORT_NAMES.values()})
            raise ValueError(f"drift.thresholds: unknown statistic {name!r}; use one of {known}")
        out[key] = float(value)
    return out


class SeriesMonitor:
    """Drift reference, change detectors and anomaly scorer of one series."""

    __slots__ = ("anomaly_threshold", "detectors", "flagged", "last_start", "scorer", "settings",
                 "since_checkpoint", "thresholds", "trailing", "windows")

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self.thresholds = thresholds(settings.thresholds)
        self.trailing = TrailingReference(settings.trailing_windows)
        self.detectors = {m: _detector(settings.detector) for m in CHANGE_METRICS}
        self.scorer = _scorer(settings.anomaly, settings.warm_up_windows)
        self.anomaly_threshold = (settings.anomaly_threshold
                                  if settings.anomaly_threshold is not None
                                  else ANOMALY_THRESHOLDS[self.scorer.name])
        self.windows = 0  # windows observed
        self.since_checkpoint = 0  # windows observed since the last checkpoint
        self.last_start = -math.inf  # newest window in the trailing reference
        self.flagged: set[str] = set()  # names the previous window's statistics agreed on

    def reference(self, pinned: Reference | None) -> Reference | None:
        """The reference in force: pinned (when configured and present) or trailing."""
        mode = self.settings.reference
        if pinned is not None and mode in ("auto", "pinned"):
            return pinned
        if mode == "pinned" or not self.trailing.full:
            return None
        return self.trailing.reference()

    def observe(self, metrics: WindowMetrics, profile: DriftProfile,
                pinned: Reference | None = None) -> WindowScores:
        """Score one closed window, then learn it."""
        reference = self.reference(pinned)
        drift: list[DriftScore] = []
        if reference is not None and metrics.requests:
            for value in evaluate(reference, profile):
                counts = {"current_count": value.current_count,
                          "reference_count": value.reference_count}
                drift.append(DriftScore(
                    name=value.name, kind=value.kind, statistic=SHORT_NAMES[value.statistic],
                    value=value.value,
                    threshold=_finite(threshold(value.statistic, thresholds=self.thresholds,
                                                **counts)),
                    drifted=is_drift(value.statistic, value.value, self.thresholds, **counts),
                    reference_count=value.reference_count, current_count=value.current_count,
                ))
        # a distribution is drifted when its statistics agree in two windows running: one
        # window's chance agreement (a heavy tail, a burst) is not a drift
        flagged = drifted_names(drift)
        drifted = sorted(self.flagged.intersection(flagged))
        if metrics.requests:
            self.flagged = set(flagged)
        vector = window_vector(metrics, profile)
        changes = [m for m, d in self.detectors.items() if d.update(vector[m])]
        score, contributions = None, {}
        if metrics.requests >= ANOMALY_MIN_REQUESTS:  # fewer: too noisy to score or learn
            features = anomaly_vector(metrics, profile)
            score = self.scorer.score_one(features)
            if score is not None and isinstance(self.scorer, MedianMADScorer):
                contributions = self.scorer.zscores(features)
            self.scorer.learn_one(features)
        if metrics.requests and metrics.window_start > self.last_start:
            self.trailing.add(profile, metrics.window_start, metrics.window_end)
            self.last_start = metrics.window_start  # an older window is scored, not learned
        self.windows += 1
        self.since_checkpoint += 1
        kind = "none" if reference is None else ("trailing" if reference.source == "trailing"
                                                 else "pinned")
        return WindowScores(
            series_key=metrics.series_key, labels=dict(metrics.labels),
            window_start=metrics.window_start, window_end=metrics.window_end,
            requests=metrics.requests, reference=kind,
            reference_version=reference.version if reference is not None else 0,
            drift=drift, drifted=drifted,
            change_points=changes, anomaly_score=score,
            anomaly_threshold=self.anomaly_threshold,
            anomalous=score is not None and score >= self.anomaly_threshold,
            anomaly_warm_up=score is None,
            anomaly_contributions={k: round(v, 3) for k, v in contributions.items()},
        )

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> bytes:
        """The whole state as bytes (trailing windows, detectors, scorer)."""
        self.since_checkpoint = 0
        return msgspec.msgpack.encode({
            "v": CHECKPOINT_FORMAT, "n": self.windows, "ls": self.last_start,
            "f": sorted(self.flagged),
            "t": self.trailing.to_builtins(),
            "d": {m: d.checkpoint() for m, d in self.detectors.items()},
            "s": self.scorer.checkpoint(),
        })

    @classmethod
    def restore(cls, settings: DriftSettings, data: bytes) -> SeriesMonitor:
        """A monitor from :meth:`checkpoint`; state of another configuration is not loaded
        (a changed detector or window count starts afresh rather than fail)."""
        out = cls(settings)
        state: dict[str, Any] = msgspec.msgpack.decode(data)
        if state.get("v") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported SeriesMonitor checkpoint {state.get('v')!r}")
        out.windows = int(state["n"])
        out.last_start = float(state.get("ls", -math.inf))
        out.flagged = set(state.get("f", ()))
        trailing = TrailingReference.from_builtins(state["t"])
        if trailing.n_windows == settings.trailing_windows:
            out.trailing = trailing
        # state of a differently configured detector or scorer starts that one afresh
        for metric, raw in state["d"].items():
            if metric in out.detectors:
                try:
                    out.detectors[metric].restore(raw)
                except ValueError:
                    out.detectors[metric] = _detector(settings.detector)
        try:
            out.scorer.restore(state["s"])
        except ValueError:
            out.scorer = _scorer(settings.anomaly, settings.warm_up_windows)
        return out
