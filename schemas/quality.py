"""The quality window contract: on ``inferwatch.metrics`` (header ``inferwatch-contract:
QualityWindow``), stored in ClickHouse table ``quality_windows``.

One window per (series, basis, window start). ``basis`` says which clock placed an
outcome in the window: ``inference_time`` (the model's quality at that time; it fills in
as labels arrive, each fill-in a higher ``version``, like a late correction) or
``feedback_time`` (what the labels received in that window say; never corrected, the
basis alert rules read for realised quality). Fields with no data are ``None``.

>>> import msgspec
>>> w = QualityWindow(series_key="model=m", labels={"model": "m"}, basis="inference_time",
...                   window_start=0.0, window_end=60.0, inferences=10, labelled=4,
...                   accuracy=0.75)
>>> msgspec.json.decode(msgspec.json.encode(w), type=QualityWindow) == w
True
"""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.bounds import Count, EpochSeconds, Version

__all__ = ["QUALITY_CONTRACT", "VERSION_CONTRACT", "ClassScores", "QualityWindow", "VersionSummary"]

QUALITY_CONTRACT = b"QualityWindow"  # the value of schemas.metrics.CONTRACT_HEADER
Basis = Literal["inference_time", "feedback_time"]


class ClassScores(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Precision, recall and F1 of one class (scikit-learn's definitions; 0 when a
    denominator is 0), and its support (labelled outcomes whose label is the class)."""

    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    support: Count = 0


class QualityWindow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Model quality of one series over one window, from feedback joined to inferences."""

    schema_version: int = 1
    series_key: str
    labels: dict[str, str] = {}
    basis: Basis
    window_start: EpochSeconds
    window_end: EpochSeconds
    version: Version = 1

    # coverage
    inferences: Count = 0  # inferences in the window (inference_time basis only)
    feedback: Count = 0  # outcomes counted: labels, satisfaction and business values
    labelled: Count = 0  # outcomes with a ground-truth label
    label_coverage: float | None = None  # labelled / inferences
    label_delay_p50_s: float | None = None
    label_delay_p90_s: float | None = None
    label_delay_p99_s: float | None = None

    # classification (labels compared with predictions as strings)
    accuracy: float | None = None
    precision_macro: float | None = None
    recall_macro: float | None = None
    f1_macro: float | None = None
    classes: dict[str, ClassScores] = {}
    confusion: dict[str, dict[str, Count]] = {}  # actual label -> predicted -> count
    ece: float | None = None  # expected calibration error of the confidence

    # regression (numeric predictions and labels)
    mae: float | None = None
    rmse: float | None = None

    # satisfaction and business value
    satisfaction_mean: float | None = None
    satisfaction_count: Count = 0
    thumbs_down_rate: float | None = None  # share of satisfaction below the threshold
    business_value_sum: float = 0.0
    business_value_count: Count = 0
    business_value_per_request: float | None = None  # sum / inferences

    # accuracy estimated from confidences before labels arrive (CBPE-style)
    estimated_accuracy: float | None = None
    estimated_accuracy_low: float | None = None  # 95 % interval
    estimated_accuracy_high: float | None = None


VERSION_CONTRACT = b"VersionSummary"  # the value of schemas.metrics.CONTRACT_HEADER


class VersionSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What one series (a model version) did over one period, as sums, so periods add up:
    the input of version comparison rules (``type: version_comparison``). Published on
    ``inferwatch.metrics`` keyed by the series' labels without ``model_version``, so every
    version of a model meets at one alerting worker."""

    schema_version: int = 1
    series_key: str
    labels: dict[str, str] = {}
    period_start: EpochSeconds
    period_end: EpochSeconds
    inferences: Count = 0
    errors: Count = 0
    latency_n: Count = 0
    latency_sum: float = 0.0
    latency_sumsq: float = 0.0
    labelled: Count = 0  # classification labels
    correct: Count = 0
    satisfaction_n: Count = 0
    satisfaction_sum: float = 0.0
    satisfaction_sumsq: float = 0.0
    thumbs_down: Count = 0
